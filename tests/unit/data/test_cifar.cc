#include "runtime/data/cifar.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <string>
#include <vector>

namespace pipet {
namespace {

using testing::TempDir;
using testing::write_text;

// Pixel byte of global record r at (c, y, x): distinct across channels and rows.
uint8_t pixel(int64_t r, int64_t c, int64_t y, int64_t x) {
  return static_cast<uint8_t>((r * 7 + c * 50 + y * 3 + x) % 256);
}

// `labels` holds 1 byte per record (CIFAR-10) or 2 (coarse, fine; CIFAR-100).
std::string records(int64_t first_record, const std::vector<std::vector<uint8_t>>& labels) {
  std::string bytes;
  for (size_t i = 0; i < labels.size(); ++i) {
    for (uint8_t l : labels[i]) bytes.push_back(static_cast<char>(l));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x)
          bytes.push_back(static_cast<char>(pixel(first_record + static_cast<int64_t>(i), c, y, x)));
  }
  return bytes;
}

// CIFAR-10 files with 2 records per train batch (labels r % 10) and 3 test records.
void write_cifar10(const std::string& folder) {
  std::filesystem::create_directories(folder);
  for (int b = 0; b < 5; ++b)
    write_text(folder + "/data_batch_" + std::to_string(b + 1) + ".bin",
               records(2 * b, {{static_cast<uint8_t>(2 * b)}, {static_cast<uint8_t>(2 * b + 1)}}));
  write_text(folder + "/test_batch.bin", records(100, {{9}, {0}, {4}}));
}

DataConfig cifar_config(const std::string& dataset, const std::string& dir) {
  DataConfig config;
  config.dataset = dataset;
  config.dir = dir;
  return config;
}

DataShape vit_shape() {
  DataShape shape;
  shape.image_size = 32;
  return shape;
}

template <typename F>
std::string data_error(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "no DataError";
}

TEST(Cifar, ReadsCifar10RecordsInFileOrderWithChwPixels) {
  TempDir tmp;
  write_cifar10(tmp.path());
  const DatasetSplits splits = make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1);
  auto train = std::dynamic_pointer_cast<CifarDataset>(splits.train);
  auto eval = std::dynamic_pointer_cast<CifarDataset>(splits.eval);
  ASSERT_TRUE(train && eval);
  EXPECT_EQ(train->name(), "cifar10");
  EXPECT_EQ(train->size(), 10);
  EXPECT_EQ(eval->size(), 3);
  EXPECT_EQ(train->num_classes(), 10);
  EXPECT_TRUE(train->class_names().empty());
  for (int64_t r = 0; r < 10; ++r) EXPECT_EQ(train->label(r), r);
  EXPECT_EQ(eval->label(0), 9);
  EXPECT_EQ(eval->label(2), 4);
  // Record 7 (data_batch_4.bin, second record): bytes 1024*c + 32*y + x are pixel (c, y, x).
  const torch::Tensor image = train->raw_image(7);
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{3, 32, 32}));
  for (auto [c, y, x] : std::vector<std::array<int64_t, 3>>{{0, 0, 0}, {1, 5, 9}, {2, 31, 30}})
    EXPECT_EQ(image[c][y][x].item<uint8_t>(), pixel(7, c, y, x));
  EXPECT_EQ(eval->raw_image(1)[2][3][4].item<uint8_t>(), pixel(101, 2, 3, 4));
  // Batches carry labels and sample ids; the eval batch is normalised with CIFAR statistics.
  const Batch batch = eval->get_batch({2, 0}, 0);
  EXPECT_TRUE(torch::equal(batch.labels, torch::tensor({4, 9}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.sample_ids, torch::tensor({2, 0}, torch::kInt64)));
  EXPECT_NEAR(batch.pixel_values[0][1][5][9].item<float>(),
              (pixel(102, 1, 5, 9) / 255.0 - 0.4822) / 0.2435, 1e-5);
}

TEST(Cifar, AcceptsTheStandardSubfolderAndReadsClassNames) {
  TempDir tmp;
  const std::string folder = tmp.file("cifar-10-batches-bin");
  write_cifar10(folder);
  write_text(folder + "/batches.meta.txt",
             "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n\n");
  const DatasetSplits splits = make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1);
  const auto names = splits.eval->class_names();
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "airplane");
  EXPECT_EQ(names[9], "truck");
  EXPECT_EQ(splits.train->class_names(), names);
}

TEST(Cifar, Cifar100FineOrCoarseLabels) {
  TempDir tmp;
  const std::string folder = tmp.file("cifar-100-binary");
  std::filesystem::create_directories(folder);
  write_text(folder + "/train.bin", records(0, {{3, 77}, {19, 99}, {0, 0}}));
  write_text(folder + "/test.bin", records(50, {{11, 42}}));
  std::string coarse_names;
  for (int i = 0; i < 20; ++i) coarse_names += "super" + std::to_string(i) + "\n";
  write_text(folder + "/coarse_label_names.txt", coarse_names);

  DataConfig config = cifar_config("cifar100", tmp.path());
  const DatasetSplits fine = make_datasets(config, vit_shape(), 1);
  auto train = std::dynamic_pointer_cast<CifarDataset>(fine.train);
  EXPECT_EQ(train->num_classes(), 100);
  EXPECT_EQ(train->label(0), 77);
  EXPECT_EQ(train->label(1), 99);
  EXPECT_TRUE(train->class_names().empty());  // no fine_label_names.txt
  EXPECT_EQ(train->raw_image(2)[1][2][3].item<uint8_t>(), pixel(2, 1, 2, 3));

  config.cifar100_labels = "coarse";
  const DatasetSplits coarse = make_datasets(config, vit_shape(), 1);
  EXPECT_EQ(coarse.train->num_classes(), 20);
  EXPECT_TRUE(torch::equal(coarse.train->get_batch({0, 1, 2}, 0).labels,
                           torch::tensor({3, 19, 0}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(coarse.train->labels({2, 0, 1}), torch::tensor({0, 3, 19}, torch::kInt64)));
  EXPECT_EQ(coarse.eval->class_names().at(11), "super11");
  EXPECT_EQ(std::dynamic_pointer_cast<CifarDataset>(coarse.eval)->raw_image(0)[0][0][1].item<uint8_t>(),
            pixel(50, 0, 0, 1));
}

TEST(Cifar, MissingDirectoryAndFilesAreNamed) {
  TempDir tmp;
  const std::string missing_dir = tmp.file("nope");
  EXPECT_EQ(data_error([&] { make_datasets(cifar_config("cifar10", missing_dir), vit_shape(), 1); }),
            "data.dir '" + missing_dir + "': the directory does not exist");

  const std::string empty = data_error([&] { make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1); });
  EXPECT_NE(empty.find("no CIFAR-10 files found in " + tmp.path()), std::string::npos) << empty;
  EXPECT_NE(empty.find("cifar-10-batches-bin"), std::string::npos) << empty;

  write_cifar10(tmp.path());
  std::filesystem::remove(tmp.file("data_batch_3.bin"));
  std::filesystem::remove(tmp.file("test_batch.bin"));
  const std::string partial = data_error([&] { make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1); });
  EXPECT_NE(partial.find("data.dir '" + tmp.path() + "': missing CIFAR-10 files in " + tmp.path() +
                         ": data_batch_3.bin, test_batch.bin"),
            std::string::npos)
      << partial;

  TempDir other;
  write_text(other.file("plain-file"), "x");
  EXPECT_NE(data_error([&] { make_datasets(cifar_config("cifar10", other.file("plain-file")), vit_shape(), 1); })
                .find("not a directory"),
            std::string::npos);
  // An unset data.dir is a config mistake, not a data one.
  EXPECT_THROW(make_datasets(cifar_config("cifar10", ""), vit_shape(), 1), ConfigError);
}

TEST(Cifar, TruncatedAndEmptyFilesAreRejected) {
  TempDir tmp;
  write_cifar10(tmp.path());
  const std::string path = tmp.file("data_batch_2.bin");
  write_text(path, records(0, {{1}, {2}}) + std::string(30001 - 2 * 3073, '\0'));
  EXPECT_EQ(data_error([&] { make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1); }),
            "data.dir '" + tmp.path() + "': " + path +
                " is 30001 bytes, not a multiple of the 3073-byte record: truncated or not a "
                "CIFAR-10 file");
  write_text(path, "");
  EXPECT_EQ(data_error([&] { make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1); }),
            "data.dir '" + tmp.path() + "': " + path +
                " is empty (0 bytes): truncated or not a CIFAR-10 file");
  // A CIFAR-10 sized file where CIFAR-100 records (3074 bytes) are expected.
  TempDir c100;
  write_text(c100.file("train.bin"), records(0, {{1}, {2}}));
  write_text(c100.file("test.bin"), records(0, {{1, 1}}));
  const std::string wrong = data_error([&] { make_datasets(cifar_config("cifar100", c100.path()), vit_shape(), 1); });
  EXPECT_NE(wrong.find("train.bin is 6146 bytes, not a multiple of the 3074-byte record"),
            std::string::npos)
      << wrong;
}

TEST(Cifar, LabelsOutOfRangeNameTheRecord) {
  TempDir tmp;
  write_cifar10(tmp.path());
  const std::string path = tmp.file("test_batch.bin");
  write_text(path, records(0, {{3}, {9}, {12}}));
  EXPECT_EQ(data_error([&] { make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1); }),
            "data.dir '" + tmp.path() + "': record 2 of " + path +
                " has label 12, outside 0..9: corrupt or not a CIFAR-10 file");

  TempDir c100;
  write_text(c100.file("train.bin"), records(0, {{1, 5}, {2, 100}}));
  write_text(c100.file("test.bin"), records(0, {{1, 1}}));
  const std::string fine = data_error([&] { make_datasets(cifar_config("cifar100", c100.path()), vit_shape(), 1); });
  EXPECT_NE(fine.find("record 1 of " + c100.file("train.bin") + " has fine label 100, outside 0..99"),
            std::string::npos)
      << fine;
  write_text(c100.file("train.bin"), records(0, {{20, 5}}));
  const std::string coarse = data_error([&] { make_datasets(cifar_config("cifar100", c100.path()), vit_shape(), 1); });
  EXPECT_NE(coarse.find("record 0 of " + c100.file("train.bin") + " has coarse label 20, outside 0..19"),
            std::string::npos)
      << coarse;
}

TEST(Cifar, ClassNamesFileWithTheWrongCountIsRejected) {
  TempDir tmp;
  write_cifar10(tmp.path());
  write_text(tmp.file("batches.meta.txt"), "a\nb\nc\n");
  const std::string message = data_error([&] { make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1); });
  EXPECT_NE(message.find(tmp.file("batches.meta.txt") + " lists 3 class names, but CIFAR-10 has 10 classes"),
            std::string::npos)
      << message;
}

TEST(Cifar, IndexOutsideTheSplitIsADataError) {
  TempDir tmp;
  write_cifar10(tmp.path());
  const DatasetSplits splits = make_datasets(cifar_config("cifar10", tmp.path()), vit_shape(), 1);
  EXPECT_NE(data_error([&] { splits.eval->get_batch({0, 3}, 0); })
                .find("sample index 3 is outside the eval split of dataset 'cifar10' (3 samples)"),
            std::string::npos);
}

}  // namespace
}  // namespace pipet
