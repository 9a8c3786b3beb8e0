#include "runtime/data/augment.h"

#include "runtime/data/synthetic.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace pipet {
namespace {

// A 3x4x5 image whose every byte is distinct and non-zero: 20*c + 5*y + x + 1.
torch::Tensor hand_made_image() {
  return (torch::arange(60, torch::kInt64).reshape({3, 4, 5}) + 1).to(torch::kUInt8);
}

ImageTransform small_transform() {
  ImageTransform t;
  t.channels = 3;
  t.height = 4;
  t.width = 5;
  t.output_size = 4;  // unused by render_view
  t.mean = {0.0, 0.0, 0.0};
  t.std = {1.0, 1.0, 1.0};
  return t;
}

torch::Tensor render(const ImageTransform& t, const torch::Tensor& image, const SampleView& v) {
  torch::Tensor out = torch::empty({t.channels, t.height, t.width}, torch::kFloat32);
  render_view(t, image.data_ptr<uint8_t>(), v, out.data_ptr<float>());
  return out;
}

// torchvision's RandomCrop(padding=p) then RandomHorizontalFlip, with torch ops.
torch::Tensor reference_view(const torch::Tensor& image, int64_t pad, const SampleView& v) {
  torch::Tensor padded = torch::constant_pad_nd(image.to(torch::kFloat32), {pad, pad, pad, pad}, 0);
  const int64_t top = v.offset_y + pad, left = v.offset_x + pad;
  torch::Tensor crop = padded.slice(1, top, top + image.size(1)).slice(2, left, left + image.size(2));
  if (v.flip) crop = crop.flip({2});
  return crop / 255.0;
}

TEST(Augment, IdentityViewOnlyScalesPixels) {
  const torch::Tensor image = hand_made_image();
  const torch::Tensor out = render(small_transform(), image, SampleView{});
  EXPECT_TRUE(torch::allclose(out, image.to(torch::kFloat32) / 255.0));
  EXPECT_FLOAT_EQ(out[1][2][3].item<float>(), (20 + 2 * 5 + 3 + 1) / 255.0f);
}

TEST(Augment, FlipMirrorsEachRow) {
  const torch::Tensor image = hand_made_image();
  const torch::Tensor out = render(small_transform(), image, SampleView{0, 0, true});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t x = 0; x < 5; ++x)
        EXPECT_FLOAT_EQ(out[c][y][x].item<float>(), image[c][y][4 - x].item<uint8_t>() / 255.0f);
}

TEST(Augment, CropShiftsWithZeroPadding) {
  const torch::Tensor image = hand_made_image();
  const torch::Tensor out = render(small_transform(), image, SampleView{1, -2, false});
  // Output (y, x) reads input (y+1, x-2); row 3 and columns 0..1 fall in the padding.
  EXPECT_FLOAT_EQ(out[0][0][2].item<float>(), image[0][1][0].item<uint8_t>() / 255.0f);
  EXPECT_FLOAT_EQ(out[2][2][4].item<float>(), image[2][3][2].item<uint8_t>() / 255.0f);
  EXPECT_FLOAT_EQ(out[0][0][1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(out[1][3][3].item<float>(), 0.0f);
}

TEST(Augment, EveryViewMatchesTorchvisionOrder) {
  const torch::Tensor image = hand_made_image();
  ImageTransform t = small_transform();
  t.crop_padding = 2;
  for (int64_t dy = -2; dy <= 2; ++dy)
    for (int64_t dx = -2; dx <= 2; ++dx)
      for (bool flip : {false, true}) {
        const SampleView v{dy, dx, flip};
        EXPECT_TRUE(torch::allclose(render(t, image, v), reference_view(image, 2, v)))
            << dy << "," << dx << "," << flip;
      }
}

TEST(Augment, NormalisesPerChannelAndPaddingIsZeroBeforeNormalising) {
  const torch::Tensor image = hand_made_image();
  ImageTransform t = small_transform();
  t.mean = {0.1, 0.2, 0.3};
  t.std = {0.5, 0.25, 2.0};
  const torch::Tensor out = render(t, image, SampleView{-1, 0, false});
  // Row 0 is padding: (0 - mean) / std.
  EXPECT_NEAR(out[0][0][0].item<float>(), -0.2, 1e-6);
  EXPECT_NEAR(out[1][0][4].item<float>(), -0.8, 1e-6);
  EXPECT_NEAR(out[2][0][2].item<float>(), -0.15, 1e-6);
  // Row 1 reads input row 0.
  const double v = image[1][0][3].item<uint8_t>();
  EXPECT_NEAR(out[1][1][3].item<float>(), (v / 255.0 - 0.2) / 0.25, 1e-5);
}

TEST(Augment, ViewsAreDrawnWithinPaddingAndFlipHalfTheTime) {
  ImageTransform t = small_transform();
  t.augment = true;
  t.crop_padding = 3;
  t.hflip = true;
  t.seed = 99;
  std::set<int64_t> offsets;
  int flips = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const SampleView v = draw_view(t, 0, i);
    ASSERT_GE(v.offset_y, -3);
    ASSERT_LE(v.offset_y, 3);
    ASSERT_GE(v.offset_x, -3);
    ASSERT_LE(v.offset_x, 3);
    offsets.insert(v.offset_x);
    flips += v.flip;
  }
  EXPECT_EQ(offsets.size(), 7u);
  EXPECT_NEAR(flips, 1000, 120);
  // Same (seed, epoch, index): same view; another epoch: another view for most samples.
  int changed = 0;
  for (int64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(draw_view(t, 4, i), draw_view(t, 4, i));
    changed += !(draw_view(t, 4, i) == draw_view(t, 5, i));
  }
  EXPECT_GT(changed, 80);

  t.hflip = false;
  for (int64_t i = 0; i < 200; ++i) EXPECT_FALSE(draw_view(t, 0, i).flip);
  t.augment = false;
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(draw_view(t, 1, i), SampleView{});
}

ImageTransform synthetic_transform(bool augment, int64_t output_size) {
  ImageTransform t;
  t.output_size = output_size;
  t.augment = augment;
  t.crop_padding = augment ? 4 : 0;
  t.hflip = augment;
  t.mean = {0.5, 0.5, 0.5};
  t.std = {0.5, 0.5, 0.5};
  t.seed = 17;
  return t;
}

TEST(Augment, SampleViewDoesNotDependOnBatchCompositionOrOrder) {
  SyntheticImageDataset data(4, 64, 17, Split::kTrain, synthetic_transform(true, 32));
  const Batch a = data.get_batch({5, 9, 2}, 3);
  const Batch b = data.get_batch({2, 7, 5, 1, 9, 33}, 3);
  EXPECT_TRUE(torch::equal(a.pixel_values[0], b.pixel_values[2]));  // sample 5
  EXPECT_TRUE(torch::equal(a.pixel_values[1], b.pixel_values[4]));  // sample 9
  EXPECT_TRUE(torch::equal(a.pixel_values[2], b.pixel_values[0]));  // sample 2
  EXPECT_TRUE(torch::equal(a.sample_ids, torch::tensor({5, 9, 2}, torch::kInt64)));
  // Another epoch gives another view of the same samples.
  const Batch c = data.get_batch({5, 9, 2}, 4);
  EXPECT_FALSE(torch::equal(a.pixel_values, c.pixel_values));
  // And the batch equals rendering each sample on its own with its drawn view.
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t index = a.sample_ids[i].item<int64_t>();
    torch::Tensor raw = data.raw_image(index);
    torch::Tensor expected = torch::empty({3, 32, 32}, torch::kFloat32);
    render_view(data.transform(), raw.data_ptr<uint8_t>(), draw_view(data.transform(), 3, index),
                expected.data_ptr<float>());
    EXPECT_TRUE(torch::equal(a.pixel_values[i], expected));
  }
}

TEST(Augment, EvalBatchIsTheNormalisedRawImage) {
  SyntheticImageDataset data(4, 16, 17, Split::kEval, synthetic_transform(false, 32));
  const Batch batch = data.get_batch({3, 0}, 7);
  const torch::Tensor expected =
      (data.raw_image(3).to(torch::kFloat32) / 255.0 - 0.5) / 0.5;
  EXPECT_TRUE(torch::allclose(batch.pixel_values[0], expected, 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(batch.pixel_values, data.get_batch({3, 0}, 8).pixel_values));
}

TEST(Augment, ResizesTheBatchToTheModelImageSize) {
  for (int64_t size : {48, 16}) {
    SyntheticImageDataset data(4, 16, 17, Split::kTrain, synthetic_transform(true, size));
    const Batch batch = data.get_batch({0, 1, 2}, 0);
    EXPECT_EQ(batch.pixel_values.sizes(), (std::vector<int64_t>{3, 3, size, size}));
    EXPECT_EQ(batch.pixel_values.scalar_type(), torch::kFloat32);
  }
  // Bilinear resize keeps a constant image constant and averages neighbours.
  const torch::Tensor constant = torch::full({1, 3, 32, 32}, 0.25f);
  EXPECT_TRUE(torch::allclose(resize_images(constant, 224), torch::full({1, 3, 224, 224}, 0.25f)));
  const torch::Tensor ramp = torch::arange(4, torch::kFloat32).reshape({1, 1, 1, 4}).expand({1, 1, 4, 4}).contiguous();
  // Shrinking is antialiased (a triangle filter over 4 inputs): PyTorch gives
  // [5/7, 16/7] where plain bilinear would give [0.5, 2.5].
  const torch::Tensor half = resize_images(ramp, 2);
  EXPECT_TRUE(torch::allclose(half[0][0][0], torch::tensor({5.0f / 7, 16.0f / 7}), 1e-5, 1e-5));
  EXPECT_TRUE(resize_images(ramp, 4).is_same(ramp));
}

}  // namespace
}  // namespace pipet
