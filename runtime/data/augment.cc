#include "runtime/data/augment.h"

#include "runtime/core/errors.h"
#include "runtime/data/random.h"

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

}  // namespace pipet
