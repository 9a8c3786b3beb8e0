#include "runtime/data/image_decode.h"

#include "runtime/core/errors.h"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

namespace pipet {

namespace {

// Larger images are refused rather than risking an allocation of many GB
// from a corrupt header: 2^28 pixels is 16384 x 16384, far beyond any photo
// dataset.
constexpr int64_t kMaxPixels = int64_t{1} << 28;

void check_dimensions(int64_t width, int64_t height, const std::string& name) {
  if (width < 1 || height < 1 || width * height > kMaxPixels)
    throw DataError(name + ": image dimensions " + std::to_string(width) + "x" +
                    std::to_string(height) + " are invalid or too large (at most " +
                    std::to_string(kMaxPixels) + " pixels)");
}

// ---- TurboJPEG -------------------------------------------------------------

class TurboJpegHandle {
 public:
  explicit TurboJpegHandle(bool compress)
      : compress_(compress), handle_(compress ? tjInitCompress() : tjInitDecompress()) {
    PIPET_CHECK(handle_ != nullptr,
                std::string("cannot create a TurboJPEG handle: ") + tjGetErrorStr2(nullptr));
  }
  ~TurboJpegHandle() {
    if (handle_ != nullptr) tjDestroy(handle_);
  }
  TurboJpegHandle(const TurboJpegHandle&) = delete;
  TurboJpegHandle& operator=(const TurboJpegHandle&) = delete;
  tjhandle get() const { return handle_; }
  // The last error's message, after which the handle is replaced by a fresh
  // one: TurboJPEG 2.1 leaves a decompressor mid-header after a failed
  // tjDecompressHeader3, and the next, valid, image then fails too.
  std::string take_error() {
    std::string message = tjGetErrorStr2(handle_);
    tjhandle fresh = compress_ ? tjInitCompress() : tjInitDecompress();
    if (fresh != nullptr) {
      tjDestroy(handle_);
      handle_ = fresh;
    }
    return message;
  }

 private:
  bool compress_;
  tjhandle handle_;
};

// One decompressor per thread: TurboJPEG handles must not be shared.
TurboJpegHandle& thread_decompressor() {
  thread_local TurboJpegHandle handle(/*compress=*/false);
  return handle;
}

struct TjFree {
  void operator()(unsigned char* p) const { tjFree(p); }
};

// libjpeg's JWRN_EXTRANEOUS_DATA: garbage between the entropy-coded data and
// a marker; the image itself is intact.
bool harmless_jpeg_warning(const std::string& message) {
  return message.find("extraneous bytes before marker") != std::string::npos;
}

ImageInfo jpeg_info(const uint8_t* data, size_t size, const std::string& name, int* colorspace) {
  TurboJpegHandle& tj = thread_decompressor();
  int width = 0, height = 0, subsampling = 0, space = 0;
  if (tjDecompressHeader3(tj.get(), data, static_cast<unsigned long>(size), &width, &height,
                          &subsampling, &space) != 0)
    throw DataError(name + ": corrupt JPEG header: " + tj.take_error());
  // Garbage after the SOI marker can read as a tables-only stream: no error, no frame.
  if (width < 1 || height < 1)
    throw DataError(name + ": corrupt JPEG: no image frame (SOF marker) before the end of the data");
  check_dimensions(width, height, name);
  if (colorspace != nullptr) *colorspace = space;
  return ImageInfo{ImageFormat::kJpeg, width, height};
}

ScaleFactor decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                        double min_scale, RgbImage& out) {
  int colorspace = 0;
  const ImageInfo info = jpeg_info(data, size, name, &colorspace);
  const ScaleFactor factor = choose_jpeg_scale(min_scale);
  const int width = scaled_dimension(info.width, factor);
  const int height = scaled_dimension(info.height, factor);
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const size_t pixels = static_cast<size_t>(width) * static_cast<size_t>(height);
  out.width = width;
  out.height = height;
  out.pixels.resize(pixels * 3);

  std::vector<uint8_t> cmyk_pixels;
  unsigned char* target = out.pixels.data();
  if (cmyk) {
    cmyk_pixels.resize(pixels * 4);
    target = cmyk_pixels.data();
  }
  TurboJpegHandle& tj = thread_decompressor();
  if (tjDecompress2(tj.get(), data, static_cast<unsigned long>(size), target, width, 0, height,
                    cmyk ? TJPF_CMYK : TJPF_RGB, 0) != 0) {
    const bool warning = tjGetErrorCode(tj.get()) == TJERR_WARNING;
    const std::string message = tj.take_error();
    if (!warning || !harmless_jpeg_warning(message))
      throw DataError(name + ": corrupt or truncated JPEG: " + message);
  }
  if (cmyk) {
    // Adobe CMYK is stored inverted (255 = no ink), so R = C*K/255 etc.
    const uint8_t* src = cmyk_pixels.data();
    uint8_t* dst = out.pixels.data();
    for (size_t i = 0; i < pixels; ++i, src += 4, dst += 3) {
      const unsigned k = src[3];
      for (int c = 0; c < 3; ++c) dst[c] = static_cast<uint8_t>((src[c] * k + 127) / 255);
    }
  }
  return factor;
}

// ---- libpng ----------------------------------------------------------------
//
// libpng reports errors by longjmp. The functions that call setjmp hold only
// trivially destructible locals, so a longjmp out of libpng skips no C++
// destructor; every owning object lives in their callers.

struct PngErrorState {
  char message[256] = "unknown libpng error";
};

void png_error_callback(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngErrorState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof(state->message), "%s", message);
  png_longjmp(png, 1);
}

void png_warning_callback(png_structp, png_const_charp) {}  // ancillary-chunk trouble only

struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t offset;
};

void png_read_callback(png_structp png, png_bytep out, png_size_t length) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (length > source->size - source->offset) png_error(png, "unexpected end of file (truncated)");
  std::memcpy(out, source->data + source->offset, length);
  source->offset += length;
}

class PngReadStruct {
 public:
  explicit PngReadStruct(PngErrorState* errors)
      : png_(png_create_read_struct(PNG_LIBPNG_VER_STRING, errors, png_error_callback,
                                    png_warning_callback)) {
    PIPET_CHECK(png_ != nullptr, "png_create_read_struct failed");
    info_ = png_create_info_struct(png_);
    if (info_ == nullptr) {
      png_destroy_read_struct(&png_, nullptr, nullptr);
      PIPET_CHECK(false, "png_create_info_struct failed");
    }
  }
  ~PngReadStruct() { png_destroy_read_struct(&png_, &info_, nullptr); }
  PngReadStruct(const PngReadStruct&) = delete;
  PngReadStruct& operator=(const PngReadStruct&) = delete;
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_;
  png_infop info_ = nullptr;
};

// Reads the header and, when `normalise`, asks libpng to deliver RGB8 rows.
// False after a libpng error.
bool png_read_header(png_structp png, png_infop info, bool normalise, png_uint_32* width,
                     png_uint_32* height, size_t* row_bytes) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  int bit_depth = 0, color_type = 0;
  png_get_IHDR(png, info, width, height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
  if (!normalise) return true;
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_scale_16(png);
  if ((color_type & PNG_COLOR_MASK_ALPHA) != 0) png_set_strip_alpha(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *row_bytes = png_get_rowbytes(png, info);
  return true;
}

bool png_read_pixels(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  return true;
}

ImageInfo png_info(const uint8_t* data, size_t size, const std::string& name) {
  PngErrorState errors;
  PngReadStruct reader(&errors);
  PngSource source{data, size, 0};
  png_set_read_fn(reader.png(), &source, png_read_callback);
  png_uint_32 width = 0, height = 0;
  size_t row_bytes = 0;
  if (!png_read_header(reader.png(), reader.info(), false, &width, &height, &row_bytes))
    throw DataError(name + ": corrupt PNG header: " + errors.message);
  check_dimensions(width, height, name);
  return ImageInfo{ImageFormat::kPng, static_cast<int>(width), static_cast<int>(height)};
}

void decode_png(const uint8_t* data, size_t size, const std::string& name, RgbImage& out) {
  PngErrorState errors;
  PngReadStruct reader(&errors);
  PngSource source{data, size, 0};
  png_set_read_fn(reader.png(), &source, png_read_callback);
  png_uint_32 width = 0, height = 0;
  size_t row_bytes = 0;
  if (!png_read_header(reader.png(), reader.info(), true, &width, &height, &row_bytes))
    throw DataError(name + ": corrupt PNG header: " + errors.message);
  check_dimensions(width, height, name);
  PIPET_CHECK(row_bytes == static_cast<size_t>(width) * 3,
              "libpng rows of " + std::to_string(row_bytes) + " bytes for width " +
                  std::to_string(width) + " after RGB8 normalisation");
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.pixels.resize(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = out.pixels.data() + y * row_bytes;
  if (!png_read_pixels(reader.png(), rows.data()))
    throw DataError(name + ": corrupt or truncated PNG: " + errors.message);
}

// ---- PNG encoding ----------------------------------------------------------

class PngWriteStruct {
 public:
  explicit PngWriteStruct(PngErrorState* errors)
      : png_(png_create_write_struct(PNG_LIBPNG_VER_STRING, errors, png_error_callback,
                                     png_warning_callback)) {
    PIPET_CHECK(png_ != nullptr, "png_create_write_struct failed");
    info_ = png_create_info_struct(png_);
    if (info_ == nullptr) {
      png_destroy_write_struct(&png_, nullptr);
      PIPET_CHECK(false, "png_create_info_struct failed");
    }
  }
  ~PngWriteStruct() { png_destroy_write_struct(&png_, &info_); }
  PngWriteStruct(const PngWriteStruct&) = delete;
  PngWriteStruct& operator=(const PngWriteStruct&) = delete;
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_;
  png_infop info_ = nullptr;
};

void png_write_callback(png_structp png, png_bytep data, png_size_t length) {
  auto* sink = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  try {
    sink->insert(sink->end(), data, data + length);
  } catch (const std::exception&) {
    png_error(png, "out of memory while encoding");  // never unwind through libpng
  }
}

void png_flush_callback(png_structp) {}

bool png_write_rgb(png_structp png, png_infop info, png_uint_32 width, png_uint_32 height,
                   png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

// A file descriptor closed on scope exit.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  static constexpr uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::kJpeg;
  if (size >= 8 && std::memcmp(data, kPngMagic, 8) == 0) return ImageFormat::kPng;
  return ImageFormat::kUnknown;
}

const std::vector<ScaleFactor>& jpeg_scale_factors() {
  static const std::vector<ScaleFactor> factors = [] {
    int count = 0;
    const tjscalingfactor* all = tjGetScalingFactors(&count);
    std::vector<ScaleFactor> chosen;
    for (int i = 0; all != nullptr && i < count; ++i) {
      const int num = all[i].num;
      const int denom = all[i].denom;
      // The SIMD-accelerated reductions (see the header); libjpeg-turbo
      // lists some of them in unreduced form (2/4 etc.), so compare values.
      if ((num * 8) % denom != 0) continue;
      const int eighths = num * 8 / denom;
      if (eighths == 8 || eighths == 4 || eighths == 2 || eighths == 1)
        chosen.push_back(ScaleFactor{num, denom});
    }
    if (chosen.empty()) chosen.push_back(ScaleFactor{1, 1});
    std::sort(chosen.begin(), chosen.end(),
              [](const ScaleFactor& a, const ScaleFactor& b) { return a.value() > b.value(); });
    return chosen;
  }();
  return factors;
}

ScaleFactor choose_jpeg_scale(double min_scale) {
  ScaleFactor best{1, 1};
  for (const ScaleFactor& f : jpeg_scale_factors())
    if (f.value() >= min_scale && f.value() <= 1.0 && f.value() < best.value()) best = f;
  return best;
}

int scaled_dimension(int size, const ScaleFactor& factor) {
  return static_cast<int>((static_cast<int64_t>(size) * factor.num + factor.denom - 1) /
                          factor.denom);
}

ImageInfo read_image_info(const uint8_t* data, size_t size, const std::string& name) {
  switch (sniff_image_format(data, size)) {
    case ImageFormat::kJpeg:
      return jpeg_info(data, size, name, nullptr);
    case ImageFormat::kPng:
      return png_info(data, size, name);
    case ImageFormat::kUnknown:
      break;
  }
  throw DataError(name + ": not a JPEG or PNG file (" +
                  (size == 0 ? std::string("empty file") : "unrecognised first bytes") + ")");
}

ScaleFactor decode_image(const uint8_t* data, size_t size, const std::string& name,
                         double min_scale, RgbImage& out) {
  switch (sniff_image_format(data, size)) {
    case ImageFormat::kJpeg:
      return decode_jpeg(data, size, name, min_scale, out);
    case ImageFormat::kPng:
      decode_png(data, size, name, out);
      return ScaleFactor{1, 1};
    case ImageFormat::kUnknown:
      break;
  }
  throw DataError(name + ": not a JPEG or PNG file (" +
                  (size == 0 ? std::string("empty file") : "unrecognised first bytes") + ")");
}

void read_file_bytes(const std::string& path, std::vector<uint8_t>& out) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw DataError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw DataError(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw DataError(path + ": not a regular file");
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw DataError(path + ": read failed: " + std::strerror(errno));
    }
    if (n == 0) break;  // shrank while we read it
    done += static_cast<size_t>(n);
  }
  out.resize(done);
}

std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, JpegPixels kind,
                                 int quality) {
  PIPET_CHECK(width >= 1 && height >= 1 && quality >= 1 && quality <= 100,
              "encode_jpeg arguments");
  thread_local TurboJpegHandle compressor(/*compress=*/true);
  int format = TJPF_RGB;
  int subsampling = TJSAMP_420;
  if (kind == JpegPixels::kGray) {
    format = TJPF_GRAY;
    subsampling = TJSAMP_GRAY;
  } else if (kind == JpegPixels::kCmyk) {
    format = TJPF_CMYK;
  }
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(compressor.get(), pixels, width, 0, height, format, &buffer, &size,
                             subsampling, quality, 0);
  std::unique_ptr<unsigned char, TjFree> owned(buffer);
  PIPET_CHECK(rc == 0, "tjCompress2: " + compressor.take_error());
  return std::vector<uint8_t>(owned.get(), owned.get() + size);
}

std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height) {
  PIPET_CHECK(width >= 1 && height >= 1, "encode_png arguments");
  PngErrorState errors;
  PngWriteStruct writer(&errors);
  std::vector<uint8_t> encoded;
  png_set_write_fn(writer.png(), &encoded, png_write_callback, png_flush_callback);
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (int y = 0; y < height; ++y)
    rows[static_cast<size_t>(y)] = const_cast<png_bytep>(rgb + static_cast<size_t>(y) * width * 3);
  PIPET_CHECK(png_write_rgb(writer.png(), writer.info(), static_cast<png_uint_32>(width),
                            static_cast<png_uint_32>(height), rows.data()),
              std::string("libpng: ") + errors.message);
  return encoded;
}

}  // namespace pipet
