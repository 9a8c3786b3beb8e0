#include "runtime/data/dataset.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/synthetic.h"

#include <gtest/gtest.h>

#include <string>

namespace pipet {
namespace {

DataShape image_shape(int64_t size = 32) {
  DataShape shape;
  shape.image_size = size;
  return shape;
}

DataShape text_shape(int64_t vocab = 30522, int64_t max_len = 512) {
  DataShape shape;
  shape.image_size = 0;
  shape.vocab_size = vocab;
  shape.max_seq_len = max_len;
  return shape;
}

DataConfig config_for(const std::string& dataset) {
  DataConfig config;
  config.dataset = dataset;
  config.train_samples = 40;
  config.eval_samples = 12;
  config.num_classes = 4;
  config.seq_len = 16;
  return config;
}

template <typename F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no ConfigError";
}

TEST(DatasetFactory, LabelsWithoutInputsMatchTheBatchLabels) {
  const DatasetSplits images = make_datasets(config_for("synthetic-image"), image_shape(), 3);
  const DatasetSplits texts = make_datasets(config_for("synthetic-text"), text_shape(), 3);
  const std::vector<int64_t> indices = {7, 3, 11, 3, 0};  // within the 12-sample eval split
  for (const auto& dataset : {images.train, images.eval, texts.train, texts.eval}) {
    EXPECT_TRUE(torch::equal(dataset->labels(indices), dataset->get_batch(indices, 2).labels))
        << dataset->name();
  }
  try {
    images.train->labels({0, images.train->size()});
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(images.train->size())), std::string::npos)
        << e.what();
  }
}

TEST(DatasetFactory, ModalityOfEachName) {
  EXPECT_EQ(dataset_modality("synthetic-image"), Modality::kImage);
  EXPECT_EQ(dataset_modality("cifar10"), Modality::kImage);
  EXPECT_EQ(dataset_modality("cifar100"), Modality::kImage);
  EXPECT_EQ(dataset_modality("synthetic-text"), Modality::kText);
  EXPECT_EQ(config_error([] { dataset_modality("imagenet"); }),
            "unknown data.dataset 'imagenet' (known: synthetic-image, synthetic-text, cifar10, "
            "cifar100, image-folder, glue, squad)");
  EXPECT_NE(config_error([] { make_datasets(config_for("cifar-10"), image_shape(), 1); })
                .find("unknown data.dataset 'cifar-10'"),
            std::string::npos);
}

TEST(DatasetFactory, SyntheticImageSplitsAndTransforms) {
  DataConfig config = config_for("synthetic-image");
  config.crop_padding = 2;
  const DatasetSplits splits = make_datasets(config, image_shape(40), 9);
  ASSERT_TRUE(splits.train && splits.eval);
  EXPECT_EQ(splits.train->size(), 40);
  EXPECT_EQ(splits.eval->size(), 12);
  EXPECT_EQ(splits.train->num_classes(), 4);
  EXPECT_EQ(splits.train->modality(), Modality::kImage);
  auto train = std::dynamic_pointer_cast<ImageDataset>(splits.train);
  auto eval = std::dynamic_pointer_cast<ImageDataset>(splits.eval);
  EXPECT_TRUE(train->transform().augment);
  EXPECT_EQ(train->transform().crop_padding, 2);
  EXPECT_TRUE(train->transform().hflip);
  EXPECT_FALSE(eval->transform().augment);
  EXPECT_EQ(eval->transform().mean, (std::vector<double>{0.5, 0.5, 0.5}));
  EXPECT_EQ(eval->transform().std, (std::vector<double>{0.5, 0.5, 0.5}));
  EXPECT_EQ(eval->transform().output_size, 40);
  EXPECT_EQ(splits.train->get_batch({0, 1}, 0).pixel_values.sizes(),
            (std::vector<int64_t>{2, 3, 40, 40}));

  config.augment = false;
  config.mean = {0.1, 0.2, 0.3};
  config.std = {1, 2, 3};
  config.eval_samples = 0;
  const DatasetSplits plain = make_datasets(config, image_shape(), 9);
  EXPECT_EQ(plain.eval, nullptr);
  auto t = std::dynamic_pointer_cast<ImageDataset>(plain.train)->transform();
  EXPECT_FALSE(t.augment);
  EXPECT_EQ(t.mean, config.mean);
  EXPECT_EQ(t.std, config.std);
}

TEST(DatasetFactory, ImageSettingsAreChecked) {
  DataConfig config = config_for("synthetic-image");
  config.mean = {0.5, 0.5};
  EXPECT_NE(config_error([&] { make_datasets(config, image_shape(), 1); })
                .find("data.mean has 2 values [0.5, 0.5] but the images have 3 channels"),
            std::string::npos);
  config.mean = {};
  config.std = {0.5, 0, 0.5};
  EXPECT_NE(config_error([&] { make_datasets(config, image_shape(), 1); }).find("data.std[1] must be > 0"),
            std::string::npos);
  config.std = {};
  EXPECT_NE(config_error([&] { make_datasets(config, text_shape(), 1); })
                .find("data.dataset 'synthetic-image' is an image dataset, but the model takes no images"),
            std::string::npos);
  DataShape gray = image_shape();
  gray.num_channels = 1;
  EXPECT_NE(config_error([&] { make_datasets(config, gray, 1); }).find("model.num_channels is 1"),
            std::string::npos);
  config.crop_padding = -1;
  EXPECT_NE(config_error([&] { make_datasets(config, image_shape(), 1); }).find("data.crop_padding"),
            std::string::npos);
  config.crop_padding = 4;
  config.num_classes = 1;
  EXPECT_NE(config_error([&] { make_datasets(config, image_shape(), 1); }).find("data.num_classes must be >= 2"),
            std::string::npos);
  config.num_classes = 4;
  config.train_samples = 0;
  EXPECT_NE(config_error([&] { make_datasets(config, image_shape(), 1); }).find("data.train_samples must be >= 1"),
            std::string::npos);
}

TEST(DatasetFactory, SyntheticTextUsesTheModelVocabulary) {
  const DatasetSplits splits = make_datasets(config_for("synthetic-text"), text_shape(), 3);
  ASSERT_TRUE(splits.train && splits.eval);
  EXPECT_EQ(splits.train->modality(), Modality::kText);
  auto train = std::dynamic_pointer_cast<SyntheticTextDataset>(splits.train);
  EXPECT_EQ(train->vocab_size(), 30522);
  EXPECT_EQ(train->seq_len(), 16);
  const Batch batch = splits.eval->get_batch({0, 11}, 0);
  EXPECT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{2, 16}));
  EXPECT_EQ(batch.input_ids[0][0].item<int64_t>(), 101);
}

TEST(DatasetFactory, TextSettingsAreChecked) {
  DataConfig config = config_for("synthetic-text");
  config.seq_len = 600;
  EXPECT_EQ(config_error([&] { make_datasets(config, text_shape(), 1); }),
            "data.seq_len=600 exceeds the model's maximum sequence length 512 "
            "(model.max_position_embeddings): lower data.seq_len");
  config.seq_len = 2;
  EXPECT_NE(config_error([&] { make_datasets(config, text_shape(), 1); }).find("data.seq_len must be >= 3"),
            std::string::npos);
  config.seq_len = 16;
  EXPECT_NE(config_error([&] { make_datasets(config, image_shape(), 1); })
                .find("is a text dataset, but the model takes no tokens"),
            std::string::npos);
  EXPECT_NE(config_error([&] { make_datasets(config, text_shape(20), 1); })
                .find("model.vocab_size=20 is too small for synthetic-text with data.num_classes=4"),
            std::string::npos);
}

TEST(DatasetFactory, Cifar100LabelKindIsChecked) {
  DataConfig config = config_for("cifar100");
  config.dir = "/nonexistent";
  config.cifar100_labels = "medium";
  EXPECT_EQ(config_error([&] { make_datasets(config, image_shape(), 1); }),
            "data.cifar100_labels must be 'fine' or 'coarse', got 'medium'");
}

}  // namespace
}  // namespace pipet
