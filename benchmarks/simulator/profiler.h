// `pipet-simulate profile`: measures a model on this machine, the way the
// engine runs it, into a ModelProfile. Needs torch, so it lives beside the
// CLI, not in the pure pipet_simulator library.
#pragma once

#include <cstdint>
#include <vector>

#include "benchmarks/simulator/profile.h"
#include "runtime/core/config.h"

namespace pipet::sim {

struct ProfilerOptions {
  std::vector<int64_t> rows = {1, 2, 4, 8, 16, 32};  // micro-batch sizes measured
  int repeats = 5;                                   // timed runs per point; the median is kept
  int warmup = 1;                                    // untimed runs first
};

// Builds config's model and training data (same seed, presets and overrides
// as `pipetransformer train`), sets the thread budget as the engine does
// (runtime.threads, 0 = cores / ranks on this node) and times, per row count:
// each sub-layer's training forward (the head includes the loss), its
// backward from a gradient of the output's shape, and its forward under
// no-grad in eval mode (frozen). Then per parameter: zero_grad + the
// configured optimizer's step, the squared-norm pass, and bucket packing;
// and per sample the first stage's input batch.
ModelProfile measure_profile(const TrainConfig& config, const ProfilerOptions& options);

}  // namespace pipet::sim
