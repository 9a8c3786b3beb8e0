#include "runtime/data/sampler.h"

#include "runtime/core/errors.h"
#include "runtime/core/random.h"

#include <algorithm>
#include <numeric>
#include <utility>

namespace pipet {

std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t size, bool shuffle) {
  PIPET_CHECK(size >= 0, "dataset size " + std::to_string(size));
  std::vector<int64_t> order(static_cast<size_t>(size));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  Rng rng(derive_key(seed, {static_cast<uint64_t>(StreamTag::kSampler),
                            static_cast<uint64_t>(epoch)}));
  // Fisher-Yates from the back: position i swaps with a uniform j in [0, i].
  for (int64_t i = size - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

EpochSampler::EpochSampler(int64_t dataset_size, int64_t batch_size, uint64_t seed,
                           bool shuffle, bool drop_last, std::string batch_size_key)
    : dataset_size_(dataset_size),
      batch_size_(batch_size),
      seed_(seed),
      shuffle_(shuffle),
      drop_last_(drop_last),
      batch_size_key_(std::move(batch_size_key)) {
  set_batch_size(batch_size);
  start_epoch(0);
}

void EpochSampler::set_batch_size(int64_t batch_size) {
  if (batch_size < 1)
    throw ConfigError(batch_size_key_ + " must be >= 1, got " + std::to_string(batch_size));
  if (dataset_size_ < 1)
    throw ConfigError("the dataset has no samples (size " + std::to_string(dataset_size_) +
                      "); nothing to draw batches of " + batch_size_key_ + "=" +
                      std::to_string(batch_size) + " from");
  if (drop_last_ && dataset_size_ < batch_size)
    throw ConfigError(batch_size_key_ + "=" + std::to_string(batch_size) +
                      " is larger than the dataset (" + std::to_string(dataset_size_) +
                      " samples): with incomplete batches dropped, an epoch would have no "
                      "batch; lower " + batch_size_key_ + " or use more samples");
  batch_size_ = batch_size;
}

void EpochSampler::start_epoch(int64_t epoch) {
  PIPET_CHECK(epoch >= 0, "epoch " + std::to_string(epoch));
  if (order_.empty() || epoch != epoch_) order_ = epoch_order(seed_, epoch, dataset_size_, shuffle_);
  epoch_ = epoch;
  position_ = 0;
}

std::vector<int64_t> EpochSampler::next_batch() {
  if (remaining_batches() == 0) return {};
  const int64_t stop = std::min(position_ + batch_size_, dataset_size_);
  std::vector<int64_t> batch(order_.begin() + position_, order_.begin() + stop);
  position_ = stop;
  return batch;
}

void EpochSampler::set_state(const State& state) {
  if (state.epoch < 0 || state.position < 0 || state.position > dataset_size_)
    throw DataError("sampler state (epoch " + std::to_string(state.epoch) + ", position " +
                    std::to_string(state.position) + ") does not fit a dataset of " +
                    std::to_string(dataset_size_) +
                    " samples: was the dataset changed since the checkpoint was written?");
  start_epoch(state.epoch);
  position_ = state.position;
}

int64_t EpochSampler::batches_per_epoch() const {
  return drop_last_ ? dataset_size_ / batch_size_
                    : (dataset_size_ + batch_size_ - 1) / batch_size_;
}

int64_t EpochSampler::remaining_batches() const {
  // Counted from the position rather than from batch boundaries: after a resume
  // with another batch size the position need not be a multiple of it.
  const int64_t left = std::max<int64_t>(dataset_size_ - position_, 0);
  return drop_last_ ? left / batch_size_ : (left + batch_size_ - 1) / batch_size_;
}

}  // namespace pipet
