// A view of some samples of a dataset, and the seeded split of a training
// set into the samples it trains on and a probe it never trains on (the
// freeze rule's held-out check, freeze.probe_samples).
#pragma once

#include "runtime/data/dataset.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

class SubsetDataset : public Dataset {
 public:
  // Sample i is sample indices[i] of `base` (each in range: DataError).
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices, std::string what);

  std::string name() const override;
  Modality modality() const override { return base_->modality(); }
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  int64_t num_classes() const override { return base_->num_classes(); }
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override;
  int64_t label(int64_t index) const override;
  torch::Tensor labels(const std::vector<int64_t>& indices) const override;

 private:
  std::vector<int64_t> map(const std::vector<int64_t>& indices) const;
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
  std::string what_;
};

struct ProbeSplit {
  std::shared_ptr<Dataset> train;  // the samples training draws from
  std::shared_ptr<Dataset> probe;  // `probe_samples` of them, never trained on
};

// A seeded choice of `probe_samples` samples of `data` as the probe, the
// rest for training. ConfigError naming freeze.probe_samples unless it
// leaves at least one sample on each side.
ProbeSplit split_probe(std::shared_ptr<const Dataset> data, int64_t probe_samples, uint64_t seed);

}  // namespace pipet
