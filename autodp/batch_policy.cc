#include "autodp/batch_policy.h"

#include "runtime/core/errors.h"

namespace pipet {

const char* to_string(BatchPolicy policy) {
  switch (policy) {
    case BatchPolicy::kKeepGlobalBatch: return "keep_global_batch";
    case BatchPolicy::kScaleLr: return "scale_lr";
  }
  return "unknown";
}

BatchPolicy batch_policy_from_string(const std::string& name, const std::string& what) {
  for (BatchPolicy policy : {BatchPolicy::kKeepGlobalBatch, BatchPolicy::kScaleLr}) {
    if (name == to_string(policy)) return policy;
  }
  throw ConfigError(what + ": unknown batch policy '" + name + "' (expected 'keep_global_batch' or 'scale_lr')");
}

ReplicaBatch replica_batch(BatchPolicy policy, int64_t configured_batch, int64_t initial_replicas,
                           int64_t replicas) {
  if (configured_batch < 1 || initial_replicas < 1 || replicas < 1) {
    throw ConfigError("autodp.batch_policy: train.batch_size " + std::to_string(configured_batch) + " over " +
                      std::to_string(replicas) + " replicas (started with " + std::to_string(initial_replicas) +
                      "): every count must be at least 1");
  }
  ReplicaBatch out;
  if (policy == BatchPolicy::kKeepGlobalBatch) {
    if (configured_batch % replicas != 0) {
      throw ConfigError("train.batch_size " + std::to_string(configured_batch) + " does not split into " +
                        std::to_string(replicas) + " data-parallel replicas (autodp.batch_policy "
                        "keep_global_batch); use a multiple of " + std::to_string(replicas));
    }
    out.global = configured_batch;
    out.per_replica = configured_batch / replicas;
    out.lr_scale = 1.0;
    return out;
  }
  if (configured_batch % initial_replicas != 0) {
    throw ConfigError("train.batch_size " + std::to_string(configured_batch) + " does not split into the " +
                      std::to_string(initial_replicas) + " starting replicas (autodp.batch_policy scale_lr); use "
                      "a multiple of " + std::to_string(initial_replicas));
  }
  out.per_replica = configured_batch / initial_replicas;
  out.global = out.per_replica * replicas;
  out.lr_scale = static_cast<double>(replicas) / static_cast<double>(initial_replicas);
  return out;
}

double schedule_position(int64_t epoch, int64_t steps_per_epoch, int64_t epoch_samples, int64_t configured_batch) {
  if (epoch < 0 || steps_per_epoch < 0 || epoch_samples < 0 || configured_batch < 1) {
    throw ConfigError("LR schedule position: epoch " + std::to_string(epoch) + ", " +
                      std::to_string(steps_per_epoch) + " steps per epoch, " + std::to_string(epoch_samples) +
                      " samples into the epoch, train.batch_size " + std::to_string(configured_batch) +
                      ": counts must be non-negative and the batch at least 1");
  }
  return static_cast<double>(epoch * steps_per_epoch) +
         static_cast<double>(epoch_samples) / static_cast<double>(configured_batch);
}

}  // namespace pipet
