#include "runtime/data/augment.h"

#include "runtime/core/errors.h"
#include "runtime/core/random.h"

#include <array>

namespace pipet {

void check_transform(const ImageTransform& t) {
  PIPET_CHECK(t.channels >= 1 && t.height >= 1 && t.width >= 1, "image geometry");
  PIPET_CHECK(t.output_size >= 1, "output size " + std::to_string(t.output_size));
  PIPET_CHECK(t.crop_padding >= 0, "crop padding " + std::to_string(t.crop_padding));
  PIPET_CHECK(static_cast<int64_t>(t.mean.size()) == t.channels &&
                  static_cast<int64_t>(t.std.size()) == t.channels,
              "mean/std need one value per channel");
  for (double s : t.std) PIPET_CHECK(s > 0, "std must be positive");
}

SampleView draw_view(const ImageTransform& t, int64_t epoch, int64_t index) {
  SampleView view;
  if (!t.augment) return view;
  Rng rng(sample_key(t.seed, StreamTag::kAugment, epoch, index));
  // Always draw the same three values so one setting does not shift another's stream.
  const int64_t dy = rng.uniform_int(-t.crop_padding, t.crop_padding);
  const int64_t dx = rng.uniform_int(-t.crop_padding, t.crop_padding);
  const bool flip = rng.chance(1, 2);
  view.offset_y = dy;
  view.offset_x = dx;
  view.flip = t.hflip && flip;
  return view;
}

namespace {

// Per-channel table: stored byte value -> normalised float.
using ChannelTable = std::array<float, 256>;

std::vector<ChannelTable> normalisation_tables(const ImageTransform& t) {
  std::vector<ChannelTable> tables(static_cast<size_t>(t.channels));
  for (int64_t c = 0; c < t.channels; ++c) {
    const double mean = t.mean[static_cast<size_t>(c)];
    const double std = t.std[static_cast<size_t>(c)];
    for (int v = 0; v < 256; ++v)
      tables[static_cast<size_t>(c)][static_cast<size_t>(v)] =
          static_cast<float>((v / 255.0 - mean) / std);
  }
  return tables;
}

void render_with_tables(const ImageTransform& t, const std::vector<ChannelTable>& tables,
                        const uint8_t* src, const SampleView& view, float* dst) {
  const int64_t H = t.height;
  const int64_t W = t.width;
  for (int64_t c = 0; c < t.channels; ++c) {
    const ChannelTable& table = tables[static_cast<size_t>(c)];
    const uint8_t* plane = src + c * H * W;
    float* out = dst + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + view.offset_y;
      float* row = out + y * W;
      if (sy < 0 || sy >= H) {
        for (int64_t x = 0; x < W; ++x) row[x] = table[0];
        continue;
      }
      const uint8_t* src_row = plane + sy * W;
      for (int64_t x = 0; x < W; ++x) {
        // Crop first, then mirror the cropped window (torchvision's order).
        const int64_t sx = (view.flip ? W - 1 - x : x) + view.offset_x;
        row[x] = (sx >= 0 && sx < W) ? table[src_row[sx]] : table[0];
      }
    }
  }
}

}  // namespace

void render_view(const ImageTransform& t, const uint8_t* src, const SampleView& view,
                 float* dst) {
  check_transform(t);
  render_with_tables(t, normalisation_tables(t), src, view, dst);
}

torch::Tensor resize_images(const torch::Tensor& images, int64_t size) {
  PIPET_CHECK(images.dim() == 4, "images must be [B,C,H,W]");
  const int64_t h = images.size(2);
  const int64_t w = images.size(3);
  if (h == size && w == size) return images;
  if (images.size(0) == 0) return torch::empty({0, images.size(1), size, size}, images.options());
  namespace F = torch::nn::functional;
  const bool shrinking = size < h || size < w;
  return F::interpolate(images, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{size, size})
                                    .mode(torch::kBilinear)
                                    .align_corners(false)
                                    .antialias(shrinking));
}

torch::Tensor assemble_images(const ImageTransform& t, const std::vector<int64_t>& indices,
                              int64_t epoch, const PixelSource& source) {
  check_transform(t);
  const auto batch = static_cast<int64_t>(indices.size());
  const int64_t sample_bytes = t.channels * t.height * t.width;
  torch::Tensor out = torch::empty({batch, t.channels, t.height, t.width}, torch::kFloat32);
  float* base = out.data_ptr<float>();
  const std::vector<ChannelTable> tables = normalisation_tables(t);
  // A few samples per task: each is ~3k pixels, too little to split further.
  at::parallel_for(0, batch, 4, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> scratch(static_cast<size_t>(sample_bytes));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t index = indices[static_cast<size_t>(i)];
      const uint8_t* pixels = source(index, scratch.data());
      render_with_tables(t, tables, pixels, draw_view(t, epoch, index),
                         base + i * sample_bytes);
    }
  });
  return resize_images(out, t.output_size);
}

// ---- Crops of decoded images of any size ----

CropBox draw_resized_crop(uint64_t seed, int64_t epoch, int64_t index, int64_t width,
                          int64_t height, double scale_min, bool hflip) {
  PIPET_CHECK(width >= 1 && height >= 1, "crop of an empty image");
  PIPET_CHECK(scale_min > 0 && scale_min <= 1, "crop scale " + std::to_string(scale_min));
  Rng rng(sample_key(seed, StreamTag::kAugment, epoch, index));
  CropBox box;
  box.clamp_to_box = true;
  box.flip = rng.chance(1, 2) && hflip;
  const double area = static_cast<double>(width) * static_cast<double>(height);
  const double log_ratio_min = std::log(3.0 / 4.0);
  const double log_ratio_max = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * (scale_min + (1.0 - scale_min) * rng.uniform_double());
    const double ratio =
        std::exp(log_ratio_min + (log_ratio_max - log_ratio_min) * rng.uniform_double());
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * ratio)));
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / ratio)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      box.y = static_cast<double>(rng.uniform_int(0, height - h));
      box.x = static_cast<double>(rng.uniform_int(0, width - w));
      box.width = static_cast<double>(w);
      box.height = static_cast<double>(h);
      return box;
    }
  }
  // Fallback: the largest centred box whose aspect ratio is within range.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width;
  int64_t h = height;
  if (in_ratio < 3.0 / 4.0) {
    h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / (3.0 / 4.0)));
  } else if (in_ratio > 4.0 / 3.0) {
    w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * (4.0 / 3.0)));
  }
  box.y = static_cast<double>((height - h) / 2);
  box.x = static_cast<double>((width - w) / 2);
  box.width = static_cast<double>(w);
  box.height = static_cast<double>(h);
  return box;
}

CropBox center_crop_box(int64_t width, int64_t height, int64_t size, double crop_fraction) {
  PIPET_CHECK(width >= 1 && height >= 1 && size >= 1, "centre crop geometry");
  PIPET_CHECK(crop_fraction > 0 && crop_fraction <= 1, "crop fraction");
  // Resize: the shorter side becomes `resize`, the longer keeps the aspect
  // ratio, truncated (torchvision's int(resize * long / short)).
  const auto resize = static_cast<int64_t>(std::floor(static_cast<double>(size) / crop_fraction + 1e-9));
  int64_t resized_w = resize;
  int64_t resized_h = resize;
  if (width < height) {
    resized_h = resize * height / width;
  } else if (height < width) {
    resized_w = resize * width / height;
  }
  // CenterCrop: round((resized - size) / 2), half to even as Python's round.
  auto centre_offset = [size](int64_t resized) {
    return std::nearbyint(static_cast<double>(resized - size) / 2.0);
  };
  const double scale_x = static_cast<double>(width) / static_cast<double>(resized_w);
  const double scale_y = static_cast<double>(height) / static_cast<double>(resized_h);
  CropBox box;
  box.x = centre_offset(resized_w) * scale_x;
  box.y = centre_offset(resized_h) * scale_y;
  box.width = static_cast<double>(size) * scale_x;
  box.height = static_cast<double>(size) * scale_y;
  return box;
}

namespace {

// One output coordinate's two source taps and the weight of the second.
struct Tap {
  int64_t first = 0;
  int64_t second = 0;
  float weight = 0;
};

// torch's area_pixel_compute_source_index (align_corners=false) on the span
// [lo, hi] of source pixels that taps may read.
std::vector<Tap> bilinear_taps(double origin, double extent, int64_t out_size, int64_t lo,
                               int64_t hi) {
  std::vector<Tap> taps(static_cast<size_t>(out_size));
  const double scale = extent / static_cast<double>(out_size);
  const int64_t last = hi - lo;
  for (int64_t o = 0; o < out_size; ++o) {
    double local = origin + (static_cast<double>(o) + 0.5) * scale - 0.5 - static_cast<double>(lo);
    if (local < 0) local = 0;
    const int64_t i0 = std::min(static_cast<int64_t>(local), last);
    Tap& tap = taps[static_cast<size_t>(o)];
    tap.first = lo + i0;
    tap.second = lo + std::min(i0 + 1, last);
    tap.weight = static_cast<float>(std::min(local - static_cast<double>(i0), 1.0));
  }
  return taps;
}

}  // namespace

void resample_crop(const uint8_t* pixels, int64_t width, int64_t height, int64_t channels,
                   const CropBox& box, int64_t out_size, const std::vector<double>& mean,
                   const std::vector<double>& std, float* dst) {
  PIPET_CHECK(width >= 1 && height >= 1 && out_size >= 1, "resample geometry");
  PIPET_CHECK(channels >= 1 && channels <= 4, "resample channels");
  PIPET_CHECK(static_cast<int64_t>(mean.size()) == channels &&
                  static_cast<int64_t>(std.size()) == channels,
              "mean/std need one value per channel");
  PIPET_CHECK(box.width > 0 && box.height > 0, "empty crop box");
  int64_t lo_x = 0, hi_x = width - 1, lo_y = 0, hi_y = height - 1;
  if (box.clamp_to_box) {
    lo_x = std::clamp<int64_t>(static_cast<int64_t>(std::floor(box.x)), 0, width - 1);
    lo_y = std::clamp<int64_t>(static_cast<int64_t>(std::floor(box.y)), 0, height - 1);
    hi_x = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(box.x + box.width)) - 1, lo_x, width - 1);
    hi_y = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(box.y + box.height)) - 1, lo_y, height - 1);
  }
  const std::vector<Tap> xs = bilinear_taps(box.x, box.width, out_size, lo_x, hi_x);
  const std::vector<Tap> ys = bilinear_taps(box.y, box.height, out_size, lo_y, hi_y);
  // (v/255 - mean) / std as one multiply-add.
  float gain[4];
  float bias[4];
  for (int64_t c = 0; c < channels; ++c) {
    gain[c] = static_cast<float>(1.0 / (255.0 * std[static_cast<size_t>(c)]));
    bias[c] = static_cast<float>(-mean[static_cast<size_t>(c)] / std[static_cast<size_t>(c)]);
  }
  const int64_t plane = out_size * out_size;
  const int64_t stride = width * channels;
  for (int64_t oy = 0; oy < out_size; ++oy) {
    const Tap& ty = ys[static_cast<size_t>(oy)];
    const uint8_t* row0 = pixels + ty.first * stride;
    const uint8_t* row1 = pixels + ty.second * stride;
    const float wy = ty.weight;
    for (int64_t ox = 0; ox < out_size; ++ox) {
      const Tap& tx = xs[static_cast<size_t>(ox)];
      const int64_t column = box.flip ? out_size - 1 - ox : ox;
      const uint8_t* p00 = row0 + tx.first * channels;
      const uint8_t* p01 = row0 + tx.second * channels;
      const uint8_t* p10 = row1 + tx.first * channels;
      const uint8_t* p11 = row1 + tx.second * channels;
      const float wx = tx.weight;
      for (int64_t c = 0; c < channels; ++c) {
        const float top = static_cast<float>(p00[c]) + wx * (static_cast<float>(p01[c]) - p00[c]);
        const float bottom = static_cast<float>(p10[c]) + wx * (static_cast<float>(p11[c]) - p10[c]);
        const float value = top + wy * (bottom - top);
        dst[c * plane + oy * out_size + column] = value * gain[c] + bias[c];
      }
    }
  }
}

}  // namespace pipet
