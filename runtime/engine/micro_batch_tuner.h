// autopipe.tune_micro_batches: after each change of K, the candidate
// micro-batch counts that have not been measured for it run a few steps
// each, the slowest rank's time counts, and the fastest M is kept; the
// measurements persist in autopipe.micro_batch_file for the next run of the
// same model, batch, policy and rank count.
#pragma once

#include "autopipe/micro_batch.h"

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace pipet {

class Communicator;

// What a saved measurement must match to be used.
struct TunedRunShape {
  std::string model;  // preset
  int64_t batch_size = 0;
  std::string batch_policy;
  int ranks = 0;
};

class MicroBatchTuner {
 public:
  // Rank 0 reads `path` (empty = not kept) and broadcasts it; a file for
  // another run shape is not used, a damaged one is warned about and
  // re-measured. Collective over `world` (outlives the tuner).
  MicroBatchTuner(Communicator& world, std::string path, TunedRunShape shape);

  // A new layout of `stages` stages and `pipeline_batch` samples per
  // pipeline: the M to run now (the first unmeasured candidate, else the
  // fastest measured), nullopt when nothing was measured or is to measure.
  std::optional<int64_t> start(int stages, int64_t pipeline_batch);
  // One step of `rows` samples that took `step_seconds` on this rank (the
  // slowest rank counts: collective while candidates remain). Returns the M
  // to run from the next step when it changes.
  std::optional<int64_t> record(double step_seconds, int64_t rows);

 private:
  void load();
  void save() const;

  Communicator& world_;
  std::string path_;
  TunedRunShape shape_;
  MicroBatchTable table_;
  int stages_ = 0;
  std::deque<int> queue_;  // candidates still to profile for the current K
  int steps_ = 0;          // steps run with the front candidate
  double seconds_ = 0.0;   // timed seconds of the front candidate
};

}  // namespace pipet
