// The dataset factory: config + model shape -> train and eval datasets.
#include "runtime/data/dataset.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/cifar.h"
#include "runtime/data/glue.h"
#include "runtime/data/image_folder.h"
#include "runtime/data/squad.h"
#include "runtime/data/synthetic.h"

#include <spdlog/spdlog.h>

#include <array>
#include <sstream>

namespace pipet {

namespace {

constexpr std::array<const char*, 7> kDatasets = {"synthetic-image", "synthetic-text", "cifar10",
                                                  "cifar100", "image-folder", "glue", "squad"};

// torchvision's customary CIFAR statistics.
const std::vector<double> kCifarMean = {0.4914, 0.4822, 0.4465};
const std::vector<double> kCifarStd = {0.2470, 0.2435, 0.2616};
const std::vector<double> kHalf = {0.5, 0.5, 0.5};

std::string known_datasets() {
  std::string out;
  for (const char* name : kDatasets) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

std::string list_values(const std::vector<double>& values) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << "]";
  return out.str();
}

void require_positive(const char* key, int64_t value) {
  if (value < 1) throw ConfigError(std::string(key) + " must be >= 1, got " + std::to_string(value));
}

std::vector<double> channel_values(const char* key, const std::vector<double>& configured,
                                   const std::vector<double>& fallback, int64_t channels,
                                   bool positive) {
  const std::vector<double>& values = configured.empty() ? fallback : configured;
  if (static_cast<int64_t>(values.size()) != channels)
    throw ConfigError(std::string(key) + " has " + std::to_string(values.size()) +
                      " values " + list_values(values) + " but the images have " +
                      std::to_string(channels) + " channels: give one value per channel");
  for (size_t c = 0; c < values.size(); ++c)
    if (positive && !(values[c] > 0))
      throw ConfigError(std::string(key) + "[" + std::to_string(c) + "] must be > 0, got " +
                        std::to_string(values[c]));
  return values;
}

// Train and eval transforms of a 3x32x32 image dataset, from data.* and the model shape.
std::pair<ImageTransform, ImageTransform> image_transforms(const DataConfig& config,
                                                          const DataShape& shape, uint64_t seed,
                                                          const std::vector<double>& mean,
                                                          const std::vector<double>& std) {
  if (shape.image_size < 1)
    throw ConfigError("data.dataset '" + config.dataset +
                      "' is an image dataset, but the model takes no images (image size " +
                      std::to_string(shape.image_size) + "): pick a ViT model.preset");
  constexpr int64_t channels = 3;
  if (shape.num_channels != channels)
    throw ConfigError("data.dataset '" + config.dataset + "' has " + std::to_string(channels) +
                      "-channel images, but model.num_channels is " +
                      std::to_string(shape.num_channels));
  if (config.augment && (config.crop_padding < 0 || config.crop_padding > 32))
    throw ConfigError("data.crop_padding must be in [0, 32] pixels, got " +
                      std::to_string(config.crop_padding));
  ImageTransform eval;
  eval.channels = channels;
  eval.height = 32;
  eval.width = 32;
  eval.output_size = shape.image_size;
  eval.mean = channel_values("data.mean", config.mean, mean, channels, false);
  eval.std = channel_values("data.std", config.std, std, channels, true);
  eval.seed = seed;
  ImageTransform train = eval;
  train.augment = config.augment;
  train.crop_padding = config.augment ? config.crop_padding : 0;
  train.hflip = config.augment && config.hflip;
  return {train, eval};
}

DatasetSplits make_synthetic_image(const DataConfig& config, const DataShape& shape,
                                   uint64_t seed) {
  auto [train_t, eval_t] = image_transforms(config, shape, seed, kHalf, kHalf);
  DatasetSplits splits;
  splits.train = std::make_shared<SyntheticImageDataset>(config.num_classes, config.train_samples,
                                                         seed, Split::kTrain, train_t);
  if (config.eval_samples > 0)
    splits.eval = std::make_shared<SyntheticImageDataset>(config.num_classes, config.eval_samples,
                                                          seed, Split::kEval, eval_t);
  return splits;
}

DatasetSplits make_synthetic_text(const DataConfig& config, const DataShape& shape,
                                  uint64_t seed) {
  if (shape.vocab_size < 1)
    throw ConfigError("data.dataset 'synthetic-text' is a text dataset, but the model takes no "
                      "tokens (vocab size " + std::to_string(shape.vocab_size) +
                      "): pick a BERT model.preset");
  if (config.seq_len < 3)
    throw ConfigError("data.seq_len must be >= 3 ([CLS], a token, [SEP]), got " +
                      std::to_string(config.seq_len));
  if (shape.max_seq_len > 0 && config.seq_len > shape.max_seq_len)
    throw ConfigError("data.seq_len=" + std::to_string(config.seq_len) +
                      " exceeds the model's maximum sequence length " +
                      std::to_string(shape.max_seq_len) +
                      " (model.max_position_embeddings): lower data.seq_len");
  const int64_t min_vocab = SyntheticTextDataset::minimum_vocab_size(config.num_classes);
  if (shape.vocab_size < min_vocab)
    throw ConfigError("model.vocab_size=" + std::to_string(shape.vocab_size) +
                      " is too small for synthetic-text with data.num_classes=" +
                      std::to_string(config.num_classes) + ": it needs at least " +
                      std::to_string(min_vocab) + " token ids");
  DatasetSplits splits;
  splits.train = std::make_shared<SyntheticTextDataset>(config.num_classes, config.train_samples,
                                                        config.seq_len, shape.vocab_size, seed,
                                                        Split::kTrain);
  if (config.eval_samples > 0)
    splits.eval = std::make_shared<SyntheticTextDataset>(config.num_classes, config.eval_samples,
                                                         config.seq_len, shape.vocab_size, seed,
                                                         Split::kEval);
  return splits;
}

void check_synthetic_sizes(const DataConfig& config) {
  require_positive("data.train_samples", config.train_samples);
  if (config.eval_samples < 0)
    throw ConfigError("data.eval_samples must be >= 0 (0 = no eval split), got " +
                      std::to_string(config.eval_samples));
  if (config.num_classes < 2)
    throw ConfigError("data.num_classes must be >= 2, got " + std::to_string(config.num_classes));
}

}  // namespace

Modality dataset_modality(const std::string& dataset) {
  if (dataset == "synthetic-text" || dataset == "glue" || dataset == "squad") return Modality::kText;
  if (dataset == "synthetic-image" || dataset == "cifar10" || dataset == "cifar100" ||
      dataset == "image-folder")
    return Modality::kImage;
  throw ConfigError("unknown data.dataset '" + dataset + "' (known: " + known_datasets() + ")");
}

torch::Tensor Dataset::labels(const std::vector<int64_t>& indices) const {
  torch::Tensor out = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  int64_t* data = out.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) {
    const int64_t index = indices[i];
    if (index < 0 || index >= size()) {
      throw DataError("sample index " + std::to_string(index) + " is outside dataset '" + name() +
                      "' of " + std::to_string(size()) + " samples");
    }
    data[i] = label(index);
  }
  return out;
}

DatasetSplits make_datasets(const DataConfig& config, const DataShape& shape, uint64_t seed) {
  dataset_modality(config.dataset);  // rejects unknown names first
  DatasetSplits splits;
  if (config.dataset == "synthetic-image") {
    check_synthetic_sizes(config);
    splits = make_synthetic_image(config, shape, seed);
  } else if (config.dataset == "synthetic-text") {
    check_synthetic_sizes(config);
    splits = make_synthetic_text(config, shape, seed);
  } else if (config.dataset == "glue") {
    return load_glue(config, shape, seed);  // logs its own summary
  } else if (config.dataset == "squad") {
    return load_squad(config, shape, seed);  // logs its own summary
  } else if (config.dataset == "image-folder") {
    return load_image_folder(config, shape, seed);  // logs its own summary
  } else {
    CifarLayout layout;
    layout.variant = config.dataset == "cifar10" ? CifarVariant::kCifar10 : CifarVariant::kCifar100;
    if (layout.variant == CifarVariant::kCifar100) {
      if (config.cifar100_labels != "fine" && config.cifar100_labels != "coarse")
        throw ConfigError("data.cifar100_labels must be 'fine' or 'coarse', got '" +
                          config.cifar100_labels + "'");
      layout.fine_labels = config.cifar100_labels == "fine";
    }
    auto [train_t, eval_t] = image_transforms(config, shape, seed, kCifarMean, kCifarStd);
    return load_cifar(config.dir, layout, train_t, eval_t);  // logs its own summary
  }
  spdlog::info("[data] {}: {} train samples, {} eval samples, {} classes (seed {})",
               config.dataset, splits.train->size(), splits.eval ? splits.eval->size() : 0,
               splits.train->num_classes(), seed);
  return splits;
}

}  // namespace pipet
