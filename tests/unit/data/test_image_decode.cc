// JPEG/PNG decoding: exact pixels for lossless PNGs of every colour type,
// JPEG within a tolerance (gray, RGB, CMYK), DCT-scaled dimensions, and the
// errors for corrupt, truncated and unknown files.
#include "runtime/core/errors.h"
#include "runtime/data/image_decode.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <csetjmp>
#include <cstdlib>
#include <fstream>

namespace pipet {
namespace {

using testing::error_message;

// A deterministic test pattern: smooth gradients plus a checker, so JPEG
// keeps it well and every pixel differs from its neighbours.
std::vector<uint8_t> pattern(int width, int height, int channels) {
  std::vector<uint8_t> out(static_cast<size_t>(width * height * channels));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c)
        out[static_cast<size_t>((y * width + x) * channels + c)] =
            static_cast<uint8_t>((x * 255 / std::max(1, width - 1) * (c + 1) + y * 3 * (2 - c % 2) +
                                  ((x / 4 + y / 4) % 2) * 16 + c * 40) % 256);
  return out;
}

// Writes a PNG of any colour type / bit depth with libpng (rows as given).
struct PngSpec {
  int width = 0;
  int height = 0;
  int color_type = PNG_COLOR_TYPE_RGB;
  int bit_depth = 8;
  std::vector<uint8_t> rows;          // packed rows, big-endian 16-bit samples
  std::vector<png_color> palette;
};

void png_sink(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}
void png_no_flush(png_structp) {}

bool write_png_rows(png_structp png, png_infop info, const PngSpec* spec, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_IHDR(png, info, spec->width, spec->height, spec->bit_depth, spec->color_type,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!spec->palette.empty())
    png_set_PLTE(png, info, spec->palette.data(), static_cast<int>(spec->palette.size()));
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

std::vector<uint8_t> write_png(const PngSpec& spec) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::vector<uint8_t> out;
  png_set_write_fn(png, &out, png_sink, png_no_flush);
  const size_t stride = spec.rows.size() / static_cast<size_t>(spec.height);
  std::vector<png_bytep> rows;
  for (int y = 0; y < spec.height; ++y)
    rows.push_back(const_cast<png_bytep>(spec.rows.data() + y * stride));
  const bool ok = write_png_rows(png, info, &spec, rows.data());
  png_destroy_write_struct(&png, &info);
  EXPECT_TRUE(ok);
  return out;
}

RgbImage decode(const std::vector<uint8_t>& bytes, double min_scale = 1.0,
                const std::string& name = "test.img") {
  RgbImage image;
  decode_image(bytes.data(), bytes.size(), name, min_scale, image);
  return image;
}

double mean_abs_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  double sum = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) sum += std::abs(int(a[i]) - int(b[i]));
  return sum / static_cast<double>(std::max<size_t>(1, a.size()));
}

TEST(ImageDecode, PngColourTypesBecomeExactRgb8) {
  const int w = 7, h = 5;
  const std::vector<uint8_t> rgb = pattern(w, h, 3);

  // RGB8 through our own encoder: lossless, so exact.
  {
    const std::vector<uint8_t> bytes = encode_png(rgb.data(), w, h);
    EXPECT_EQ(sniff_image_format(bytes.data(), bytes.size()), ImageFormat::kPng);
    const ImageInfo info = read_image_info(bytes.data(), bytes.size(), "rgb.png");
    EXPECT_EQ(info.format, ImageFormat::kPng);
    EXPECT_EQ(info.width, w);
    EXPECT_EQ(info.height, h);
    const RgbImage image = decode(bytes);
    EXPECT_EQ(image.width, w);
    EXPECT_EQ(image.height, h);
    EXPECT_EQ(image.pixels, rgb);
  }
  // RGBA: alpha dropped, colour kept.
  {
    PngSpec spec{w, h, PNG_COLOR_TYPE_RGB_ALPHA, 8, {}, {}};
    for (size_t p = 0; p < rgb.size() / 3; ++p) {
      spec.rows.insert(spec.rows.end(), {rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2]});
      spec.rows.push_back(static_cast<uint8_t>(p * 7));
    }
    EXPECT_EQ(decode(write_png(spec)).pixels, rgb);
  }
  // RGB 16-bit: v * 257 scales back to exactly v.
  {
    PngSpec spec{w, h, PNG_COLOR_TYPE_RGB, 16, {}, {}};
    for (uint8_t v : rgb) spec.rows.insert(spec.rows.end(), {v, v});  // big-endian v*257
    EXPECT_EQ(decode(write_png(spec)).pixels, rgb);
  }
  // Gray 8-bit and gray+alpha: R = G = B = gray.
  std::vector<uint8_t> gray(static_cast<size_t>(w * h));
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 37 % 256);
  std::vector<uint8_t> gray_rgb;
  for (uint8_t g : gray) gray_rgb.insert(gray_rgb.end(), {g, g, g});
  {
    PngSpec spec{w, h, PNG_COLOR_TYPE_GRAY, 8, gray, {}};
    EXPECT_EQ(decode(write_png(spec)).pixels, gray_rgb);
  }
  {
    PngSpec spec{w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {}, {}};
    for (uint8_t g : gray) spec.rows.insert(spec.rows.end(), {g, uint8_t(255 - g)});
    EXPECT_EQ(decode(write_png(spec)).pixels, gray_rgb);
  }
  // 1-bit gray: 0 -> 0, 1 -> 255. Rows of 8 pixels = one byte each.
  {
    PngSpec spec{8, 2, PNG_COLOR_TYPE_GRAY, 1, {0xA5, 0x0F}, {}};
    const RgbImage image = decode(write_png(spec));
    ASSERT_EQ(image.pixels.size(), 8u * 2 * 3);
    const int bits[16] = {1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1};
    for (int i = 0; i < 16; ++i)
      for (int c = 0; c < 3; ++c) EXPECT_EQ(image.pixels[i * 3 + c], bits[i] ? 255 : 0) << i;
  }
  // Palette (4-bit indices): each pixel becomes its palette entry.
  {
    PngSpec spec{4, 1, PNG_COLOR_TYPE_PALETTE, 4, {0x01, 0x23}, {}};
    spec.palette = {{10, 20, 30}, {40, 50, 60}, {70, 80, 90}, {200, 210, 220}};
    const RgbImage image = decode(write_png(spec));
    EXPECT_EQ(image.pixels, (std::vector<uint8_t>{10, 20, 30, 40, 50, 60, 70, 80, 90, 200, 210, 220}));
  }
}

TEST(ImageDecode, JpegGrayRgbAndCmykDecodeCloseToTheSource) {
  const int w = 64, h = 48;
  std::vector<uint8_t> rgb;  // smooth, so 4:2:0 chroma loses little
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      rgb.insert(rgb.end(), {uint8_t(x * 4), uint8_t(y * 5), uint8_t((x + y) * 2)});
  const std::vector<uint8_t> bytes = encode_jpeg(rgb.data(), w, h, JpegPixels::kRgb, 98);
  EXPECT_EQ(sniff_image_format(bytes.data(), bytes.size()), ImageFormat::kJpeg);
  const ImageInfo info = read_image_info(bytes.data(), bytes.size(), "a.jpg");
  EXPECT_EQ(info.format, ImageFormat::kJpeg);
  EXPECT_EQ(info.width, w);
  EXPECT_EQ(info.height, h);
  const RgbImage image = decode(bytes);
  ASSERT_EQ(image.width, w);
  ASSERT_EQ(image.height, h);
  // Quality 98: a small average error; a wrong channel order or row
  // stride would be off by tens.
  EXPECT_LT(mean_abs_diff(image.pixels, rgb), 1.5);

  // Grayscale JPEG: three equal channels close to the gray source.
  std::vector<uint8_t> gray(static_cast<size_t>(w * h));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) gray[static_cast<size_t>(y * w + x)] = static_cast<uint8_t>(x * 3 + y);
  const RgbImage gray_image = decode(encode_jpeg(gray.data(), w, h, JpegPixels::kGray, 98));
  ASSERT_EQ(gray_image.pixels.size(), gray.size() * 3);
  std::vector<uint8_t> gray_rgb;
  for (uint8_t g : gray) gray_rgb.insert(gray_rgb.end(), {g, g, g});
  for (size_t p = 0; p < gray.size(); ++p) {
    EXPECT_EQ(gray_image.pixels[3 * p], gray_image.pixels[3 * p + 1]);
    EXPECT_EQ(gray_image.pixels[3 * p], gray_image.pixels[3 * p + 2]);
  }
  EXPECT_LT(mean_abs_diff(gray_image.pixels, gray_rgb), 2.0);

  // CMYK (Adobe, inverted): a flat colour, R = C*K/255 etc.
  const uint8_t cmyk_pixel[4] = {200, 100, 250, 180};
  std::vector<uint8_t> cmyk;
  for (int i = 0; i < 16 * 16; ++i) cmyk.insert(cmyk.end(), cmyk_pixel, cmyk_pixel + 4);
  const RgbImage cmyk_image = decode(encode_jpeg(cmyk.data(), 16, 16, JpegPixels::kCmyk, 100));
  ASSERT_EQ(cmyk_image.pixels.size(), 16u * 16 * 3);
  const int expected[3] = {200 * 180 / 255, 100 * 180 / 255, 250 * 180 / 255};  // 141, 70, 176
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(cmyk_image.pixels[40 * 3 + c], expected[c], 3) << c;
}

TEST(ImageDecode, DctScalingPicksTheSmallestSufficientFactor) {
  const std::vector<ScaleFactor> expected = {{1, 1}, {1, 2}, {1, 4}, {1, 8}};
  ASSERT_EQ(jpeg_scale_factors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_DOUBLE_EQ(jpeg_scale_factors()[i].value(), expected[i].value());
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(1.0).value(), 1.0);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(2.0).value(), 1.0);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(0.51).value(), 1.0);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(0.5).value(), 0.5);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(0.3).value(), 0.5);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(0.25).value(), 0.25);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(0.2).value(), 0.25);
  EXPECT_DOUBLE_EQ(choose_jpeg_scale(0.01).value(), 0.125);
  EXPECT_EQ(scaled_dimension(375, {1, 2}), 188);  // ceil, as libjpeg
  EXPECT_EQ(scaled_dimension(375, {1, 8}), 47);
  EXPECT_EQ(scaled_dimension(500, {1, 4}), 125);

  // ImageNet-sized: 500x375 decoded at 1/2 and 1/8.
  const int w = 500, h = 375;
  const std::vector<uint8_t> rgb = pattern(w, h, 3);
  const std::vector<uint8_t> bytes = encode_jpeg(rgb.data(), w, h, JpegPixels::kRgb, 90);
  RgbImage half;
  const ScaleFactor used = decode_image(bytes.data(), bytes.size(), "big.jpg", 0.45, half);
  EXPECT_DOUBLE_EQ(used.value(), 0.5);
  EXPECT_EQ(half.width, 250);
  EXPECT_EQ(half.height, 188);
  EXPECT_EQ(half.pixels.size(), 250u * 188 * 3);
  RgbImage eighth;
  decode_image(bytes.data(), bytes.size(), "big.jpg", 0.1, eighth);
  EXPECT_EQ(eighth.width, 63);
  EXPECT_EQ(eighth.height, 47);
  // A scaled pixel is about the mean of the 8x8 source block it covers.
  double diff = 0;
  int count = 0;
  for (int by = 0; by < 46; by += 5)
    for (int bx = 0; bx < 62; bx += 5)
      for (int c = 0; c < 3; ++c) {
        double sum = 0;
        for (int y = 0; y < 8; ++y)
          for (int x = 0; x < 8; ++x) sum += rgb[static_cast<size_t>(((by * 8 + y) * w + bx * 8 + x) * 3 + c)];
        diff += std::abs(sum / 64 - eighth.pixels[static_cast<size_t>((by * 63 + bx) * 3 + c)]);
        ++count;
      }
  EXPECT_LT(diff / count, 8.0);
  // PNG ignores the minimum scale.
  const std::vector<uint8_t> png = encode_png(rgb.data(), w, h);
  RgbImage full;
  EXPECT_DOUBLE_EQ(decode_image(png.data(), png.size(), "big.png", 0.1, full).value(), 1.0);
  EXPECT_EQ(full.width, w);
}

TEST(ImageDecode, CorruptTruncatedAndForeignFilesNameTheFile) {
  const int w = 64, h = 48;
  const std::vector<uint8_t> rgb = pattern(w, h, 3);
  const std::vector<uint8_t> jpeg = encode_jpeg(rgb.data(), w, h, JpegPixels::kRgb, 90);
  const std::vector<uint8_t> png = encode_png(rgb.data(), w, h);
  auto decode_error = [](std::vector<uint8_t> bytes, const std::string& name) {
    return error_message<DataError>([&] {
      RgbImage image;
      decode_image(bytes.data(), bytes.size(), name, 1.0, image);
    });
  };

  // JPEG cut in half: libjpeg only warns ("premature end"); we refuse it.
  std::string m = decode_error({jpeg.begin(), jpeg.begin() + jpeg.size() / 2}, "/data/cut.jpg");
  EXPECT_NE(m.find("/data/cut.jpg"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated JPEG"), std::string::npos) << m;
  EXPECT_NE(m.find("Premature end"), std::string::npos) << m;  // libjpeg's own words

  // JPEG magic followed by garbage.
  std::vector<uint8_t> garbage = {0xFF, 0xD8, 0xFF};
  for (int i = 0; i < 200; ++i) garbage.push_back(static_cast<uint8_t>(i * 31));
  m = decode_error(garbage, "/data/garbage.jpg");
  EXPECT_NE(m.find("/data/garbage.jpg"), std::string::npos) << m;
  EXPECT_NE(m.find("JPEG"), std::string::npos) << m;
  // An APP0 segment then filler: libjpeg sees a tables-only stream, no frame.
  std::vector<uint8_t> no_frame = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0};
  no_frame.resize(400, 0x5A);
  m = decode_error(no_frame, "/data/noframe.jpg");
  EXPECT_NE(m.find("/data/noframe.jpg: corrupt JPEG"), std::string::npos) << m;
  // A failed header leaves TurboJPEG 2.1's handle mid-header: the next,
  // valid, image on this thread must still decode.
  EXPECT_EQ(decode(jpeg).width, w);

  // Truncated PNG: inside the pixel data, and inside the header.
  m = decode_error({png.begin(), png.begin() + png.size() * 2 / 3}, "/data/cut.png");
  EXPECT_NE(m.find("/data/cut.png"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  m = decode_error({png.begin(), png.begin() + 20}, "/data/header.png");
  EXPECT_NE(m.find("/data/header.png: corrupt PNG header"), std::string::npos) << m;
  // A flipped byte in the image data fails its CRC.
  std::vector<uint8_t> flipped = png;
  flipped[flipped.size() - 20] ^= 0x55;
  m = decode_error(flipped, "/data/crc.png");
  EXPECT_NE(m.find("/data/crc.png"), std::string::npos) << m;

  m = decode_error({'G', 'I', 'F', '8', '9', 'a'}, "/data/x.gif.jpg");
  EXPECT_NE(m.find("/data/x.gif.jpg: not a JPEG or PNG file"), std::string::npos) << m;
  m = decode_error({}, "/data/empty.jpg");
  EXPECT_NE(m.find("empty file"), std::string::npos) << m;
  m = error_message<DataError>([] {
    read_image_info(nullptr, 0, "/data/none.png");
  });
  EXPECT_NE(m.find("/data/none.png"), std::string::npos) << m;

  // Reading files: the path and the system's reason.
  testing::TempDir dir;
  std::vector<uint8_t> bytes;
  m = error_message<DataError>([&] { read_file_bytes(dir.file("missing.jpg"), bytes); });
  EXPECT_NE(m.find(dir.file("missing.jpg")), std::string::npos) << m;
  EXPECT_NE(m.find("No such file"), std::string::npos) << m;
  m = error_message<DataError>([&] { read_file_bytes(dir.path(), bytes); });
  EXPECT_NE(m.find("not a regular file"), std::string::npos) << m;
  {
    std::ofstream out(dir.file("ok.png"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(png.data()), static_cast<std::streamsize>(png.size()));
  }
  read_file_bytes(dir.file("ok.png"), bytes);
  EXPECT_EQ(bytes, png);
}

}  // namespace
}  // namespace pipet
