// Datasets: random access by index; a batch is assembled from a list of
// indices. Augmentation is seeded by (seed, epoch, sample index) only, so a
// sample's view does not depend on batch composition, order, sharding or
// resumption.
#pragma once

#include "runtime/data/batch.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

struct DataConfig;

enum class Modality { kImage, kText };

// What the model needs the data to look like (from the resolved ModelSpec).
struct DataShape {
  int64_t image_size = 0;    // images are resized to image_size x image_size
  int64_t num_channels = 3;
  int64_t vocab_size = 0;    // text: token ids must be < vocab_size
  int64_t max_seq_len = 0;   // text: max_position_embeddings
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::string name() const = 0;
  virtual Modality modality() const = 0;
  virtual int64_t size() const = 0;
  virtual int64_t num_classes() const = 0;
  // Class names in label order, or empty when the dataset has none.
  virtual std::vector<std::string> class_names() const { return {}; }
  // The samples `indices` as one batch; `epoch` seeds augmentation.
  virtual Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const = 0;
  // The label of sample `index`, without producing its inputs.
  virtual int64_t label(int64_t index) const = 0;
  // Labels of `indices` as int64 [B], equal to get_batch(indices, e).labels
  // but without decoding inputs: what a pipeline's last stage needs. Throws
  // DataError for an index outside the dataset. Span datasets (squad)
  // override it: their labels are [B,2].
  virtual torch::Tensor labels(const std::vector<int64_t>& indices) const;
};

struct DatasetSplits {
  std::shared_ptr<Dataset> train;
  std::shared_ptr<Dataset> eval;  // may be null when there is no eval split
};

// Builds the configured datasets. Throws DataError naming the path for
// missing/truncated files and ConfigError naming the key for bad settings.
DatasetSplits make_datasets(const DataConfig& config, const DataShape& shape, uint64_t seed);

// The modality a dataset name implies (for checking it against the model).
Modality dataset_modality(const std::string& dataset);

}  // namespace pipet
