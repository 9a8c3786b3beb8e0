// The epoch sampler: which dataset indices form each batch.
//
// Epoch e visits the samples in the order epoch_order(seed, e, size): a
// Fisher-Yates permutation drawn from the stream (seed, e) when shuffling, the
// identity otherwise. The order is a pure function of (seed, epoch, size), so
// every rank computes the same order without communicating; data-parallel
// sharding splits each global batch of that order between replicas and needs
// nothing else from this class. Progress inside an epoch is a count of
// samples consumed from the order (not batches), which stays meaningful when
// the batch size or the sharding changes between a checkpoint and a resume.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pipet {

// The visiting order of epoch `epoch` over `size` samples.
std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t size, bool shuffle);

class EpochSampler {
 public:
  // Where the sampler is: `position` samples of epoch `epoch` have been handed
  // out. Saved in checkpoints and restored with set_state().
  struct State {
    int64_t epoch = 0;
    int64_t position = 0;
    bool operator==(const State& o) const { return epoch == o.epoch && position == o.position; }
  };

  // Starts at epoch 0, position 0. Throws ConfigError for batch_size < 1, an
  // empty dataset, or (with drop_last) a dataset smaller than one batch; the
  // messages name `batch_size_key` (e.g. "eval.batch_size" for an eval sampler).
  EpochSampler(int64_t dataset_size, int64_t batch_size, uint64_t seed, bool shuffle,
               bool drop_last, std::string batch_size_key = "train.batch_size");

  // The next batch of the current epoch, or an empty vector when the epoch is
  // finished. With drop_last only full batches are returned; without it the
  // last batch of an epoch may be smaller.
  std::vector<int64_t> next_batch();

  // Moves to the beginning of epoch `epoch` (>= 0).
  void start_epoch(int64_t epoch);

  // Changes the batch size from the next batch on, keeping the position: a
  // layout change in the middle of an epoch (AutoDP growing the global batch)
  // neither repeats nor skips a sample of the epoch. Same checks as the
  // constructor (ConfigError naming the batch size key).
  void set_batch_size(int64_t batch_size);

  State state() const { return {epoch_, position_}; }
  // Restores a state from state(). Throws DataError when it cannot belong to
  // this dataset (negative epoch, position beyond the dataset).
  void set_state(const State& state);

  int64_t batches_per_epoch() const;
  // Batches left in the current epoch.
  int64_t remaining_batches() const;
  bool epoch_finished() const { return remaining_batches() == 0; }

  int64_t epoch() const { return epoch_; }
  int64_t dataset_size() const { return dataset_size_; }
  int64_t batch_size() const { return batch_size_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }
  // The current epoch's full order.
  const std::vector<int64_t>& order() const { return order_; }

 private:
  int64_t dataset_size_;
  int64_t batch_size_;
  uint64_t seed_;
  bool shuffle_;
  bool drop_last_;
  std::string batch_size_key_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace pipet
