// What AutoDP does to the batch and the learning rate when the replica count
// changes (autodp.batch_policy). Pure arithmetic: no processes, no torch.
//
// train.batch_size B0 is the global batch at the starting replica count R0
// (the configured layout). With R training replicas:
//   keep_global_batch  global batch B0, B0 / R per replica, LR unchanged:
//                      the optimisation is the same for every layout.
//   scale_lr           B0 / R0 per replica (fixed), global batch B0 R / R0,
//                      LR multiplied by R / R0 (the linear scaling rule):
//                      the freed ranks add throughput instead of splitting
//                      the same work finer.
// The reference lets the global batch grow with the replica count and keeps
// the LR (REFERENCE.md); neither policy does that.
//
// Progress through the LR schedule is counted in samples, in units of B0
// (schedule_position): an update of B0 R / R0 samples advances the schedule
// by R / R0 steps, so warm-up and decay end at the same point of the data
// whatever the layouts on the way (counting optimizer steps, a run whose
// steps grew would stop with the schedule unfinished).
#pragma once

#include <cstdint>
#include <string>

namespace pipet {

enum class BatchPolicy {
  kKeepGlobalBatch,
  kScaleLr,
};
const char* to_string(BatchPolicy policy);
// "keep_global_batch" or "scale_lr"; else ConfigError naming `what`.
BatchPolicy batch_policy_from_string(const std::string& name, const std::string& what);

struct ReplicaBatch {
  int64_t global = 0;       // samples per optimizer step over all replicas
  int64_t per_replica = 0;  // samples per pipeline per step
  double lr_scale = 1.0;    // multiplies the scheduled learning rate
  bool operator==(const ReplicaBatch& o) const {
    return global == o.global && per_replica == o.per_replica && lr_scale == o.lr_scale;
  }
};

// The batch of a layout with `replicas` training pipelines, for a run that
// started with `initial_replicas` and train.batch_size `configured_batch`.
// Throws ConfigError naming train.batch_size when the batch does not split
// into whole per-replica shares, or when a count is below 1.
ReplicaBatch replica_batch(BatchPolicy policy, int64_t configured_batch, int64_t initial_replicas,
                           int64_t replicas);

// Where the LR schedule is, in steps of `configured_batch` (train.batch_size):
// epoch * steps_per_epoch + epoch_samples / configured_batch, fractional when
// steps grew. Counted per epoch so that the tail of an epoch a larger batch
// leaves out (incomplete batches are dropped) is skipped over: every epoch
// covers steps_per_epoch positions and the schedule ends with the data.
// Under keep_global_batch it equals the optimizer step count.
double schedule_position(int64_t epoch, int64_t steps_per_epoch, int64_t epoch_samples, int64_t configured_batch);

}  // namespace pipet
