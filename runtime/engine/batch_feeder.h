// What a stage takes into a step: this pipeline's share of the global
// batch, the first stage's inputs (decoded ahead by a prefetcher when
// data.prefetch_batches > 0) and the last stage's labels, split into
// micro-batches weighted by their share of the global mean loss.
#pragma once

#include "runtime/engine/pipeline.h"

#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

namespace pipet {

class BatchPrefetcher;
class Dataset;
class EpochSampler;
struct Batch;
struct ComputeDevice;

// Each micro-batch's (first row, row count) in a batch of `rows`, spread as
// evenly as possible (the first rows % count get one more); at most `rows`
// micro-batches, at least one.
std::vector<std::pair<int64_t, int64_t>> micro_batch_rows(int64_t rows, int64_t count);

// Pipeline `replica` of `replicas`' contiguous slice of a global batch.
std::vector<int64_t> replica_share(const std::vector<int64_t>& global_indices, int replica, int replicas);

// Where a stage sits in its pipeline: the first reads inputs, the last labels.
struct StageRole {
  bool first = true;
  bool last = true;
};

class BatchFeeder {
 public:
  // `device` outlives the feeder. `dropout_seed` keys every micro-batch's
  // dropout masks with its rows' samples and epoch.
  BatchFeeder(std::shared_ptr<const Dataset> train_data, int64_t prefetch_batches, const ComputeDevice& device,
              uint64_t dropout_seed);
  ~BatchFeeder();
  BatchFeeder(const BatchFeeder&) = delete;
  BatchFeeder& operator=(const BatchFeeder&) = delete;

  // The first stage's training batch of `indices` in `epoch`, from the
  // prefetcher, which is kept data.prefetch_batches batches ahead of
  // `sampler` (the next ones of the epoch, this replica's share of each).
  Batch prefetched(const std::vector<int64_t>& indices, int64_t epoch, const EpochSampler& sampler, int replica,
                   int replicas);

  // The micro-batches of `indices` of `data` for a stage in `role`; each
  // weighs rows / `global_rows` in the loss. `prebuilt` (optional): the
  // first stage's inputs, already loaded (prefetched); an undefined
  // `hidden` leaves the inputs to the caller (AutoCache produces them).
  std::vector<MicroBatch> micro_batches(const Dataset& data, const std::vector<int64_t>& indices, int64_t epoch,
                                        int64_t count, int64_t global_rows, StageRole role,
                                        const Activations* prebuilt = nullptr) const;

 private:
  std::shared_ptr<const Dataset> train_data_;
  int64_t prefetch_batches_;
  const ComputeDevice& device_;
  uint64_t dropout_seed_;
  std::unique_ptr<BatchPrefetcher> prefetcher_;
  std::deque<std::pair<int64_t, std::vector<int64_t>>> queue_;  // (epoch, indices) submitted
};

}  // namespace pipet
