// JPEG and PNG decoding to packed RGB8, for the image-folder dataset.
//
// JPEG goes through libjpeg-turbo's TurboJPEG API. When the caller says how
// much smaller the image may come out (`min_scale`), the decoder picks the
// smallest of TurboJPEG's DCT scaling factors that is still >= min_scale:
// a 1/2-scale decode runs the reduced inverse DCT and touches a quarter of
// the pixels, which is both faster and a proper box-filtered downscale.
// Only the factors 1/1, 1/2, 1/4 and 1/8 are used: libjpeg-turbo has SIMD
// kernels for those, while the other M/8 factors run plain C IDCTs that are
// no faster, often slower, than a full-size SIMD decode (measured:
// docs/benchmarks.md, "Image decoding").
// Grayscale JPEGs are expanded to RGB by the library; CMYK/YCCK JPEGs are
// decoded to CMYK and converted with the Adobe (inverted) convention that
// Photoshop writes, R = C * K / 255 (no colour management).
//
// PNG goes through libpng: 1/2/4/8/16-bit, gray, gray+alpha, RGB, RGBA and
// palette images all become RGB8 (16-bit samples are rounded to 8 bits,
// alpha is dropped without compositing, as PIL's convert("RGB") does).
// PNGs ignore min_scale (always full size).
//
// The format is recognised by the file's magic bytes, not its extension
// (ImageNet's training set has a PNG named .JPEG). Corrupt or truncated data
// raises DataError naming the file and carrying the decoder's own message.
// JPEG warnings are errors too (a truncated JPEG decodes "successfully" as
// grey rows with a warning), except libjpeg's "extraneous bytes before
// marker" warning, which a handful of valid ImageNet files trigger and which
// loses no pixels.
//
// Decoder handles are per thread (TurboJPEG handles are not thread-safe) and
// owned by RAII wrappers; every function here is safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pipet {

enum class ImageFormat { kUnknown, kJpeg, kPng };

// The format named by the first bytes of a file (kUnknown when neither).
ImageFormat sniff_image_format(const uint8_t* data, size_t size);

struct ImageInfo {
  ImageFormat format = ImageFormat::kUnknown;
  int width = 0;
  int height = 0;
};

// Packed RGB8, rows top to bottom: pixel (y, x) channel c is
// pixels[(y * width + x) * 3 + c].
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// A DCT scaling factor num/denom.
struct ScaleFactor {
  int num = 1;
  int denom = 1;
  double value() const { return static_cast<double>(num) / denom; }
  bool operator==(const ScaleFactor& o) const { return num == o.num && denom == o.denom; }
};

// The factors the JPEG decoder chooses from, largest first: those of
// tjGetScalingFactors() that are 1/1, 1/2, 1/4 or 1/8.
const std::vector<ScaleFactor>& jpeg_scale_factors();

// The smallest factor of jpeg_scale_factors() that is >= min_scale (1/1 when
// min_scale >= 1 or nothing smaller qualifies).
ScaleFactor choose_jpeg_scale(double min_scale);

// A dimension after scaling: ceil(size * num / denom), as libjpeg computes it.
int scaled_dimension(int size, const ScaleFactor& factor);

// Reads the header only. `name` (usually the path) appears in errors.
ImageInfo read_image_info(const uint8_t* data, size_t size, const std::string& name);

// Decodes into `out` (its buffer is reused). A JPEG comes out scaled by
// choose_jpeg_scale(min_scale); pass 1 for full size. Returns the factor used
// (1/1 for PNG). Throws DataError naming `name`.
ScaleFactor decode_image(const uint8_t* data, size_t size, const std::string& name,
                         double min_scale, RgbImage& out);

// Reads a whole file into `out` (its buffer is reused). Throws DataError
// naming the path and the system error.
void read_file_bytes(const std::string& path, std::vector<uint8_t>& out);

// Pixel layouts an encoder takes.
enum class JpegPixels { kGray, kRgb, kCmyk };

// Encodes packed pixels (1, 3 or 4 bytes per pixel by `kind`) as a baseline
// JPEG at `quality` (1..100); colour images use 4:2:0 chroma subsampling,
// CMYK becomes an Adobe YCCK JPEG. For test fixtures and the benchmark.
// Throws an internal Error on failure.
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, JpegPixels kind,
                                 int quality);

// Encodes packed RGB8 as an 8-bit RGB PNG (lossless).
std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height);

}  // namespace pipet
