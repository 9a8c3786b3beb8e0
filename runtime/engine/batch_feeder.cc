#include "runtime/engine/batch_feeder.h"

#include <algorithm>

#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/data/sampler.h"
#include "runtime/engine/compute_device.h"

namespace pipet {
namespace {

// Rows [begin, begin + length) of every defined tensor of a batch's inputs.
Activations slice_inputs(const Activations& in, int64_t begin, int64_t length) {
  Activations out;
  out.hidden = in.hidden.narrow(0, begin, length);
  if (in.attention_mask.defined()) out.attention_mask = in.attention_mask.narrow(0, begin, length);
  if (in.token_type_ids.defined()) out.token_type_ids = in.token_type_ids.narrow(0, begin, length);
  return out;
}

}  // namespace

std::vector<std::pair<int64_t, int64_t>> micro_batch_rows(int64_t rows, int64_t count) {
  count = std::max<int64_t>(1, std::min(count, rows));
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t begin = 0;
  for (int64_t m = 0; m < count; ++m) {
    const int64_t length = rows / count + (m < rows % count ? 1 : 0);
    out.emplace_back(begin, length);
    begin += length;
  }
  return out;
}

std::vector<int64_t> replica_share(const std::vector<int64_t>& global_indices, int replica, int replicas) {
  const int64_t share = static_cast<int64_t>(global_indices.size()) / replicas;
  const auto first = global_indices.begin() + replica * share;
  return std::vector<int64_t>(first, first + share);
}

BatchFeeder::BatchFeeder(std::shared_ptr<const Dataset> train_data, int64_t prefetch_batches,
                         const ComputeDevice& device, uint64_t dropout_seed)
    : train_data_(std::move(train_data)),
      prefetch_batches_(prefetch_batches),
      device_(device),
      dropout_seed_(dropout_seed) {}

BatchFeeder::~BatchFeeder() = default;

Batch BatchFeeder::prefetched(const std::vector<int64_t>& indices, int64_t epoch, const EpochSampler& sampler,
                              int replica, int replicas) {
  // This batch, then the next ones of the epoch as the sampler will hand them out.
  std::vector<std::pair<int64_t, std::vector<int64_t>>> wanted = {{epoch, indices}};
  EpochSampler ahead = sampler;
  for (int64_t i = 0; i < prefetch_batches_; ++i) {
    const std::vector<int64_t> next = ahead.next_batch();
    if (next.empty()) break;
    wanted.emplace_back(epoch, replica_share(next, replica, replicas));
  }
  bool in_step = prefetcher_ && queue_.size() <= wanted.size();
  for (size_t i = 0; in_step && i < queue_.size(); ++i) in_step = queue_[i] == wanted[i];
  if (!in_step) {  // first use, a resume or an epoch change: start over
    prefetcher_ = std::make_unique<BatchPrefetcher>(train_data_, prefetch_batches_);
    queue_.clear();
  }
  for (size_t i = queue_.size(); i < wanted.size(); ++i) {
    prefetcher_->submit(wanted[i].second, wanted[i].first);
    queue_.push_back(wanted[i]);
  }
  queue_.pop_front();
  return prefetcher_->next();
}

std::vector<MicroBatch> BatchFeeder::micro_batches(const Dataset& data, const std::vector<int64_t>& indices,
                                                   int64_t epoch, int64_t count, int64_t global_rows, StageRole role,
                                                   const Activations* prebuilt) const {
  const auto split = micro_batch_rows(static_cast<int64_t>(indices.size()), count);
  std::vector<MicroBatch> out(split.size());
  Activations inputs;
  if (role.first) inputs = device_.to_device(prebuilt ? *prebuilt : batch_inputs(data.get_batch(indices, epoch)));
  torch::Tensor labels;
  if (role.last) labels = data.labels(indices).to(device_.device, /*non_blocking=*/false);
  const torch::Tensor sample_ids = torch::tensor(indices, torch::kInt64);
  for (size_t m = 0; m < split.size(); ++m) {
    const auto [begin, length] = split[m];
    if (inputs.hidden.defined()) out[m].input = slice_inputs(inputs, begin, length);
    if (labels.defined()) out[m].labels = labels.narrow(0, begin, length);
    out[m].loss_weight = static_cast<double>(length) / static_cast<double>(global_rows);
    out[m].dropout = DropoutKey{dropout_seed_, epoch, sample_ids.narrow(0, begin, length)};
  }
  return out;
}

}  // namespace pipet
