// The image-folder dataset: crop geometry and the bilinear resample against
// torch's interpolate, folder scanning and class order, the seeded split,
// decoded batches, and the bad-sample policies.
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/augment.h"
#include "runtime/data/image_decode.h"
#include "runtime/data/image_folder.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <unistd.h>

namespace pipet {
namespace {

namespace fs = std::filesystem;
using testing::error_message;
using testing::TempDir;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  std::vector<uint8_t> out;
  for (int i = 0; i < w * h; ++i) out.insert(out.end(), {r, g, b});
  return out;
}

// Smooth, position-dependent content (so crops and flips are visible).
std::vector<uint8_t> gradient(int w, int h, int seed) {
  std::vector<uint8_t> out;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      out.insert(out.end(), {static_cast<uint8_t>((x * 255 / w + seed * 40) % 256),
                             static_cast<uint8_t>(y * 255 / h),
                             static_cast<uint8_t>((x + y + seed * 7) % 256)});
  return out;
}

// Uint8 HWC -> float [1,C,H,W] in 0..255.
torch::Tensor to_tensor(const std::vector<uint8_t>& hwc, int w, int h) {
  return torch::from_blob(const_cast<uint8_t*>(hwc.data()), {h, w, 3}, torch::kUInt8)
      .permute({2, 0, 1})
      .unsqueeze(0)
      .to(torch::kFloat32);
}

torch::Tensor interpolate(const torch::Tensor& x, int64_t h, int64_t w) {
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{h, w})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

torch::Tensor resample(const std::vector<uint8_t>& hwc, int w, int h, const CropBox& box,
                       int64_t out) {
  torch::Tensor dst = torch::empty({1, 3, out, out});
  resample_crop(hwc.data(), w, h, 3, box, out, {0, 0, 0}, {1.0 / 255, 1.0 / 255, 1.0 / 255},
                dst.data_ptr<float>());
  return dst;
}

TEST(ImageFolderGeometry, CropsMatchTorchvisionAndResampleMatchesInterpolate) {
  // Random-resized crops: inside the image, area and aspect in range,
  // a pure function of (seed, epoch, index).
  int flips = 0;
  for (int64_t index = 0; index < 400; ++index) {
    const CropBox box = draw_resized_crop(7, 3, index, 500, 375, 0.08, true);
    ASSERT_GE(box.x, 0);
    ASSERT_GE(box.y, 0);
    ASSERT_LE(box.x + box.width, 500);
    ASSERT_LE(box.y + box.height, 375);
    EXPECT_EQ(box.x, std::floor(box.x));
    const double area = box.width * box.height / (500.0 * 375.0);
    EXPECT_GE(area, 0.08 * 0.97) << index;
    const double ratio = box.width / box.height;
    EXPECT_GE(ratio, 0.75 * 0.93) << index;
    EXPECT_LE(ratio, 4.0 / 3.0 * 1.07) << index;
    EXPECT_TRUE(box.clamp_to_box);
    flips += box.flip;
    const CropBox again = draw_resized_crop(7, 3, index, 500, 375, 0.08, true);
    EXPECT_EQ(again.x, box.x);
    EXPECT_EQ(again.width, box.width);
    EXPECT_EQ(again.flip, box.flip);
    EXPECT_FALSE(draw_resized_crop(7, 3, index, 500, 375, 0.08, false).flip);
  }
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
  const CropBox e0 = draw_resized_crop(7, 0, 5, 500, 375, 0.08, true);
  const CropBox e1 = draw_resized_crop(7, 1, 5, 500, 375, 0.08, true);
  EXPECT_FALSE(e0.x == e1.x && e0.y == e1.y && e0.width == e1.width);
  // scale_min = 1 and an extreme aspect ratio: every attempt fails, so the
  // fallback is the centred 4:3 box of the full height.
  const CropBox wide = draw_resized_crop(1, 0, 0, 400, 100, 1.0, false);
  EXPECT_EQ(wide.width, 133);
  EXPECT_EQ(wide.height, 100);
  EXPECT_EQ(wide.x, (400 - 133) / 2);
  EXPECT_EQ(wide.y, 0);

  // Resize(256) + CenterCrop(224) of 500x375: resized 341x256, offsets
  // round(58.5) = 58 (half to even) and 16.
  const CropBox centre = center_crop_box(500, 375, 224, 0.875);
  EXPECT_DOUBLE_EQ(centre.x, 58 * 500.0 / 341);
  EXPECT_DOUBLE_EQ(centre.y, 16 * 375.0 / 256);
  EXPECT_DOUBLE_EQ(centre.width, 224 * 500.0 / 341);
  EXPECT_DOUBLE_EQ(centre.height, 224 * 375.0 / 256);
  EXPECT_FALSE(centre.flip);
  const CropBox portrait = center_crop_box(30, 40, 32, 0.875);  // resize 36 -> 36x48
  EXPECT_DOUBLE_EQ(portrait.x, 2 * 30.0 / 36);
  EXPECT_DOUBLE_EQ(portrait.y, 8 * 40.0 / 48);

  // The resample equals torch's bilinear interpolate on the same geometry.
  const int w = 23, h = 17;
  std::vector<uint8_t> image(static_cast<size_t>(w * h * 3));
  for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<uint8_t>((i * 97 + i / 7) % 251);
  const torch::Tensor full = to_tensor(image, w, h);
  // Crop then resize (training): shrink, enlarge, and flipped.
  CropBox crop;
  crop.x = 3;
  crop.y = 2;
  crop.width = 15;
  crop.height = 12;
  crop.clamp_to_box = true;
  const torch::Tensor region = full.index({torch::indexing::Slice(), torch::indexing::Slice(),
                                           torch::indexing::Slice(2, 14), torch::indexing::Slice(3, 18)});
  for (int64_t out : {5, 9, 31}) {
    const torch::Tensor expected = interpolate(region, out, out);
    EXPECT_TRUE(torch::allclose(resample(image, w, h, crop, out), expected, 1e-5, 1e-3)) << out;
    CropBox flipped = crop;
    flipped.flip = true;
    EXPECT_TRUE(torch::allclose(resample(image, w, h, flipped, out), expected.flip({3}), 1e-5, 1e-3));
  }
  // Resize then centre crop (evaluation): shorter side 17 -> 20 (20x27), crop 16.
  const CropBox eval_box = center_crop_box(w, h, 16, 0.8);
  const torch::Tensor resized = interpolate(full, 20, 27);
  const torch::Tensor expected =
      resized.index({torch::indexing::Slice(), torch::indexing::Slice(),
                     torch::indexing::Slice(2, 18), torch::indexing::Slice(6, 22)});  // round(5.5)=6
  EXPECT_TRUE(torch::allclose(resample(image, w, h, eval_box, 16), expected, 1e-5, 1e-3));
  // Normalisation: (v/255 - mean) / std.
  torch::Tensor normalised = torch::empty({1, 3, 16, 16});
  resample_crop(image.data(), w, h, 3, eval_box, 16, {0.5, 0.25, 0.0}, {0.5, 0.25, 2.0},
                normalised.data_ptr<float>());
  const torch::Tensor mean = torch::tensor({0.5, 0.25, 0.0}).view({1, 3, 1, 1});
  const torch::Tensor std = torch::tensor({0.5, 0.25, 2.0}).view({1, 3, 1, 1});
  EXPECT_TRUE(torch::allclose(normalised, (expected / 255 - mean) / std, 1e-5, 1e-5));
}

TEST(ImageFolderScan, ClassOrderFilesIgnoredEntriesAndErrors) {
  TempDir dir;
  const std::vector<uint8_t> png = encode_png(solid(4, 4, 1, 2, 3).data(), 4, 4);
  const std::string root = dir.file("train");
  // Byte-wise order: upper case before lower case.
  write_bytes(root + "/b_dog/2.JPG", png);  // content sniffed, name only filters
  write_bytes(root + "/b_dog/1.png", png);
  write_bytes(root + "/b_dog/nested/0.jpeg", png);
  write_bytes(root + "/a_cat/x.PNG", png);
  write_bytes(root + "/a_cat/notes.txt", {'h', 'i'});
  write_bytes(root + "/a_cat/.hidden.jpg", png);
  write_bytes(root + "/Zebra/z.Jpeg", png);
  write_bytes(root + "/README", {'x'});
  write_bytes(root + "/.git/config", {'x'});
  const ImageFolderIndex index = scan_image_folder(root, "data.dir/train");
  EXPECT_EQ(index.class_names, (std::vector<std::string>{"Zebra", "a_cat", "b_dog"}));
  EXPECT_EQ(index.files, (std::vector<std::string>{root + "/Zebra/z.Jpeg", root + "/a_cat/x.PNG",
                                                   root + "/b_dog/1.png", root + "/b_dog/2.JPG",
                                                   root + "/b_dog/nested/0.jpeg"}));
  EXPECT_EQ(index.labels, (std::vector<int64_t>{0, 1, 2, 2, 2}));
  EXPECT_EQ(index.ignored_files, 4);  // notes.txt, .hidden.jpg, README, .git

  // Evaluation classes are matched by name to the training classes.
  const std::string val = dir.file("val");
  write_bytes(val + "/b_dog/v.png", png);
  write_bytes(val + "/Zebra/v.png", png);
  ImageFolderIndex eval = scan_image_folder(val, "data.dir/val");
  EXPECT_EQ(eval.labels, (std::vector<int64_t>{0, 1}));  // Zebra, b_dog in val's own order
  match_classes(eval, index.class_names);
  EXPECT_EQ(eval.labels, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(eval.class_names, index.class_names);
  write_bytes(val + "/cow/v.png", png);
  ImageFolderIndex extra = scan_image_folder(val, "data.dir/val");
  std::string m = error_message<DataError>([&] { match_classes(extra, index.class_names); });
  EXPECT_NE(m.find(val + "/cow"), std::string::npos) << m;

  // Errors name the folder.
  fs::create_directories(root + "/c_empty");
  write_bytes(root + "/c_empty/readme.txt", {'x'});
  m = error_message<DataError>([&] { scan_image_folder(root, "data.dir/train"); });
  EXPECT_NE(m.find("class folder '" + root + "/c_empty' is empty"), std::string::npos) << m;
  EXPECT_NE(m.find("1 other files"), std::string::npos) << m;
  fs::create_directories(dir.file("flat"));
  write_bytes(dir.file("flat/a.jpg"), png);
  m = error_message<DataError>([&] { scan_image_folder(dir.file("flat"), "data.train_path"); });
  EXPECT_NE(m.find("data.train_path '" + dir.file("flat") + "' has no class folders"),
            std::string::npos) << m;
  m = error_message<DataError>([&] { scan_image_folder(dir.file("nope"), "data.eval_path"); });
  EXPECT_NE(m.find("data.eval_path '" + dir.file("nope") + "' does not exist"), std::string::npos) << m;
  m = error_message<DataError>([&] { scan_image_folder(dir.file("flat/a.jpg"), "data.train_path"); });
  EXPECT_NE(m.find("is not a directory"), std::string::npos) << m;
  if (::geteuid() != 0) {  // root reads everything
    fs::create_directories(dir.file("locked/a"));
    fs::permissions(dir.file("locked"), fs::perms::none);
    m = error_message<DataError>([&] { scan_image_folder(dir.file("locked"), "data.train_path"); });
    EXPECT_NE(m.find("cannot be read"), std::string::npos) << m;
    fs::permissions(dir.file("locked"), fs::perms::owner_all);
  }
}

TEST(ImageFolderScan, SeededStratifiedSplit) {
  ImageFolderIndex all;
  all.root = "/r";
  all.class_names = {"a", "b", "c"};
  const int sizes[3] = {10, 21, 3};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < sizes[c]; ++i) {
      all.files.push_back("/r/" + all.class_names[c] + "/" + std::to_string(100 + i) + ".jpg");
      all.labels.push_back(c);
    }
  const auto [train, eval] = split_image_folder(all, 0.2, 42);
  // round(0.2 n) per class: 2, 4, 1.
  std::map<int64_t, int> held;
  for (int64_t l : eval.labels) ++held[l];
  EXPECT_EQ(held[0], 2);
  EXPECT_EQ(held[1], 4);
  EXPECT_EQ(held[2], 1);
  EXPECT_EQ(train.files.size() + eval.files.size(), all.files.size());
  std::set<std::string> seen(train.files.begin(), train.files.end());
  for (const std::string& f : eval.files) EXPECT_TRUE(seen.insert(f).second) << f;
  EXPECT_EQ(seen.size(), all.files.size());
  EXPECT_TRUE(std::is_sorted(train.files.begin(), train.files.end()));
  for (size_t i = 0; i < eval.files.size(); ++i)  // labels follow their files
    EXPECT_NE(eval.files[i].find("/" + all.class_names[static_cast<size_t>(eval.labels[i])] + "/"),
              std::string::npos);
  // Same seed, same split; another seed, another split.
  EXPECT_EQ(split_image_folder(all, 0.2, 42).second.files, eval.files);
  EXPECT_NE(split_image_folder(all, 0.2, 43).second.files, eval.files);
  // Never empties a class: 0.9 of 3 keeps one for training.
  const auto mostly = split_image_folder(all, 0.9, 1);
  EXPECT_EQ(std::count(mostly.first.labels.begin(), mostly.first.labels.end(), 2), 1);
  std::string m = error_message<ConfigError>([&] {
    ImageFolderIndex small = all;
    small.files.resize(3);
    small.labels.resize(3);
    split_image_folder(small, 0.1, 1);
  });
  EXPECT_NE(m.find("data.eval_split"), std::string::npos) << m;
}

// A two-class folder: class "blue" solid-colour PNGs and "red" gradient JPEGs.
struct Fixture {
  TempDir dir;
  std::string root;
  Fixture() : root(dir.file("data/train")) {
    for (int i = 0; i < 3; ++i) {
      write_bytes(root + "/blue/" + std::to_string(i) + ".png",
                  encode_png(solid(40 + i, 30, 10, 20, 200).data(), 40 + i, 30));
      const std::vector<uint8_t> g = gradient(64, 48, i);
      write_bytes(root + "/red/" + std::to_string(i) + ".jpg",
                  encode_jpeg(g.data(), 64, 48, JpegPixels::kRgb, 95));
    }
  }
  std::shared_ptr<ImageFolderDataset> dataset(bool train, BadSamplePolicy policy, int threads = 2,
                                              int64_t size = 16) const {
    ImageFolderTransform t;
    t.output_size = size;
    t.random_crop = train;
    t.hflip = train;
    t.seed = 5;
    return std::make_shared<ImageFolderDataset>(train ? "train" : "eval",
                                                scan_image_folder(root, "data.train_path"), t,
                                                policy, std::make_shared<DecodePool>(threads));
  }
};

TEST(ImageFolderDataset, BatchesAreDecodedNormalisedAndDeterministic) {
  Fixture f;
  auto eval = f.dataset(false, BadSamplePolicy::kFail);
  EXPECT_EQ(eval->size(), 6);
  EXPECT_EQ(eval->num_classes(), 2);
  EXPECT_EQ(eval->class_names(), (std::vector<std::string>{"blue", "red"}));
  const Batch b = eval->get_batch({0, 4, 2}, 0);
  ASSERT_EQ(b.pixel_values.sizes(), (std::vector<int64_t>{3, 3, 16, 16}));
  EXPECT_EQ(b.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(b.labels[1].item<int64_t>(), 1);
  EXPECT_EQ(b.sample_ids[1].item<int64_t>(), 4);
  // A solid PNG is exact: every pixel is the ImageNet-normalised colour.
  const double mean[3] = {0.485, 0.456, 0.406}, stdv[3] = {0.229, 0.224, 0.225};
  const double colour[3] = {10, 20, 200};
  for (int c = 0; c < 3; ++c) {
    const torch::Tensor plane = b.pixel_values[0][c];
    const double want = (colour[c] / 255 - mean[c]) / stdv[c];
    EXPECT_NEAR(plane.min().item<double>(), want, 1e-5);
    EXPECT_NEAR(plane.max().item<double>(), want, 1e-5);
  }
  // The JPEG sample: centre box of 42.7 px for 16 output px, so the decoder
  // may halve it (DCT scale 1/2, 32x24); the box scales with it.
  {
    std::vector<uint8_t> bytes;
    read_file_bytes(f.root + "/red/1.jpg", bytes);
    RgbImage half;
    decode_image(bytes.data(), bytes.size(), "red/1.jpg", 16 / (16 * 48.0 / 18), half);
    ASSERT_EQ(half.width, 32);
    ASSERT_EQ(half.height, 24);
    CropBox box = center_crop_box(64, 48, 16, 0.875);
    box.x /= 2;
    box.y /= 2;
    box.width /= 2;
    box.height /= 2;
    torch::Tensor expected = torch::empty({3, 16, 16});
    resample_crop(half.pixels.data(), half.width, half.height, 3, box, 16, {0.485, 0.456, 0.406},
                  {0.229, 0.224, 0.225}, expected.data_ptr<float>());
    EXPECT_TRUE(torch::equal(b.pixel_values[1], expected));
    // ... and stays close to resampling the full-size decode.
    RgbImage full;
    decode_image(bytes.data(), bytes.size(), "red/1.jpg", 1.0, full);
    torch::Tensor from_full = torch::empty({3, 16, 16});
    resample_crop(full.pixels.data(), full.width, full.height, 3, center_crop_box(64, 48, 16, 0.875),
                  16, {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}, from_full.data_ptr<float>());
    EXPECT_LT((from_full - expected).abs().mean().item<double>(), 0.1);
  }
  EXPECT_TRUE(torch::equal(eval->get_batch({0, 4, 2}, 3).pixel_values, b.pixel_values));

  // Training views: a function of (seed, epoch, index) only.
  auto train = f.dataset(true, BadSamplePolicy::kFail, 3);
  const torch::Tensor a = train->get_batch({3, 4, 5, 0}, 2).pixel_values;
  const torch::Tensor again = train->get_batch({4, 3}, 2).pixel_values;
  EXPECT_TRUE(torch::equal(a[0], again[1]));
  EXPECT_TRUE(torch::equal(a[1], again[0]));
  auto single_thread = f.dataset(true, BadSamplePolicy::kFail, 1);
  EXPECT_TRUE(torch::equal(single_thread->get_batch({3, 4, 5, 0}, 2).pixel_values, a));
  EXPECT_FALSE(torch::equal(train->get_batch({3, 4, 5}, 3).pixel_values, a.slice(0, 0, 3)));
  std::string m = error_message<DataError>([&] { train->get_batch({1, 6}, 0); });
  EXPECT_NE(m.find("sample index 6"), std::string::npos) << m;

  // Large images are decoded at a DCT scale: 512x512 to 32 px takes 1/8 and
  // stays close to resampling the full decode.
  TempDir big;
  const std::vector<uint8_t> g = gradient(512, 512, 1);
  write_bytes(big.file("train/only/a.jpg"), encode_jpeg(g.data(), 512, 512, JpegPixels::kRgb, 95));
  write_bytes(big.file("train/other/b.png"), encode_png(g.data(), 512, 512));
  ImageFolderTransform t;
  t.output_size = 32;
  ImageFolderDataset scaled("eval", scan_image_folder(big.file("train"), "data.train_path"), t,
                            BadSamplePolicy::kFail, std::make_shared<DecodePool>(1));
  const torch::Tensor both = scaled.get_batch({0, 1}, 0).pixel_values;  // other = PNG, only = JPEG
  // The PNG path decodes at full size: same crop, same colours, modulo
  // aliasing of the 14x shrink vs the JPEG's 1/8-scale box filter.
  EXPECT_LT((both[0] - both[1]).abs().mean().item<double>(), 0.1);
}

TEST(ImageFolderDataset, BadSamplesFailOrAreReplacedDeterministically) {
  Fixture f;
  // Corrupt red/1.jpg: JPEG magic then garbage.
  std::vector<uint8_t> garbage = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F'};
  garbage.resize(300, 0x42);
  write_bytes(f.root + "/red/1.jpg", garbage);
  const std::string bad = f.root + "/red/1.jpg";

  auto fail = f.dataset(true, BadSamplePolicy::kFail);
  EXPECT_NO_THROW(fail->get_batch({0, 3}, 0));
  std::string m = error_message<DataError>([&] { fail->get_batch({0, 4, 5}, 0); });
  EXPECT_NE(m.find(bad), std::string::npos) << m;
  EXPECT_NE(m.find("on_bad_sample=skip"), std::string::npos) << m;

  auto skip = f.dataset(true, BadSamplePolicy::kSkip);
  const Batch b = skip->get_batch({4, 0, 5}, 1);
  EXPECT_EQ(b.labels[0].item<int64_t>(), 1);   // still labelled red
  EXPECT_EQ(b.sample_ids[0].item<int64_t>(), 4);
  EXPECT_EQ(skip->skipped_samples(), 1);
  EXPECT_EQ(skip->skipped_in_epoch(1), 1);
  EXPECT_EQ(skip->bad_files(), std::vector<std::string>{bad});
  // The replacement is the next red image (red/2.jpg = index 5) seen through
  // sample 4's view, and the same every time.
  const Batch again = skip->get_batch({4}, 1);
  EXPECT_TRUE(torch::equal(again.pixel_values[0], b.pixel_values[0]));
  EXPECT_EQ(skip->skipped_samples(), 2);
  EXPECT_FALSE(torch::equal(b.pixel_values[0], b.pixel_values[2]));  // other view of index 5
  auto eval_skip = f.dataset(false, BadSamplePolicy::kSkip);
  const Batch e = eval_skip->get_batch({4, 5}, 0);  // eval view: the same centre crop
  EXPECT_TRUE(torch::equal(e.pixel_values[0], e.pixel_values[1]));
  skip->get_batch({0}, 2);
  EXPECT_EQ(skip->skipped_in_epoch(2), 0);
  EXPECT_EQ(skip->skipped_samples(), 2);

  // A class with nothing readable has no replacement.
  write_bytes(f.root + "/red/0.jpg", garbage);
  write_bytes(f.root + "/red/2.jpg", {garbage.begin(), garbage.begin() + 50});
  auto hopeless = f.dataset(true, BadSamplePolicy::kSkip);
  m = error_message<DataError>([&] { hopeless->get_batch({0, 3}, 0); });
  EXPECT_NE(m.find("every image of class 'red'"), std::string::npos) << m;
}

TEST(ImageFolderDataset, FactoryReadsTheStandardLayoutAndValidates) {
  Fixture f;
  const std::vector<uint8_t> png = encode_png(solid(8, 8, 0, 0, 0).data(), 8, 8);
  write_bytes(f.dir.file("data/validation/red/v.png"), png);
  DataConfig config;
  config.dataset = "image-folder";
  config.dir = f.dir.file("data");
  config.decode_threads = 2;
  DataShape shape;
  shape.image_size = 24;
  shape.num_channels = 3;
  DatasetSplits splits = make_datasets(config, shape, 9);
  ASSERT_TRUE(splits.train && splits.eval);
  EXPECT_EQ(splits.train->size(), 6);
  EXPECT_EQ(splits.eval->size(), 1);
  EXPECT_EQ(splits.eval->label(0), 1);  // "red" is class 1 of the training set
  EXPECT_EQ(splits.train->class_names(), (std::vector<std::string>{"blue", "red"}));
  EXPECT_EQ(splits.train->get_batch({0, 5}, 0).pixel_values.sizes(),
            (std::vector<int64_t>{2, 3, 24, 24}));
  EXPECT_EQ(dataset_modality("image-folder"), Modality::kImage);

  // A held-out split instead of validation/.
  config.eval_split = 0.34;  // one of each class's three
  splits = make_datasets(config, shape, 9);
  EXPECT_EQ(splits.train->size(), 4);
  EXPECT_EQ(splits.eval->size(), 2);
  // Explicit paths, and no evaluation set at all.
  config.eval_split = 0;
  config.dir.clear();
  config.train_path = f.root;
  splits = make_datasets(config, shape, 9);
  EXPECT_EQ(splits.train->size(), 6);
  EXPECT_FALSE(splits.eval);

  std::string m = error_message<DataError>([&] {
    DataConfig c = config;
    c.train_path.clear();
    c.dir = f.dir.path();
    make_datasets(c, shape, 9);
  });
  EXPECT_NE(m.find("has no train/ folder"), std::string::npos) << m;
  m = error_message<ConfigError>([&] {
    DataConfig c = config;
    c.mean = {0.5};
    c.std = {0.5};
    make_datasets(c, shape, 9);
  });
  EXPECT_NE(m.find("data.mean"), std::string::npos) << m;
  m = error_message<ConfigError>([&] {
    DataShape text;
    text.vocab_size = 100;
    make_datasets(config, text, 9);
  });
  EXPECT_NE(m.find("ViT"), std::string::npos) << m;
}

}  // namespace
}  // namespace pipet
