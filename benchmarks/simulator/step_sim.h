// Costing one training step of a layout on a cluster: a small event-driven
// simulation of every rank's work in the order the engine does it
// (runtime/engine/pipeline.cc and trainer.cc's train_step):
//
//   first stage: input preparation (or the AutoCache read of the frozen
//     prefix's output, with misses computed and written)
//   micro-batches in GPipe or 1F1B order: receive activations, forward of
//     the stage's sub-layers (frozen ones under no-grad, on whichever stage
//     holds them), send; receive the activation gradient, backward of the
//     active sub-layers, send. A stage frozen through only runs forwards
//     (receives no gradient), and a stage with no trainable sub-layer
//     before it sends none back (StageExecutor's trains_, previous_trains_)
//   during the last micro-batch's backward, each gradient bucket's
//     all-reduce on the stage's data-parallel group is launched as soon as
//     its sub-layers are done (buckets of whole sub-layers in backward order,
//     as GradientBuckets forms them)
//   wait for the sends and the buckets, copy the sums back, the gradient
//   norm pass (replica 0), the step's world all-reduce, the optimizer update.
//
// Resources are shared fairly among whoever uses them at the same moment:
// a node's compute slots among the ranks computing on it (a rank waiting for
// a message uses none), a node's intra-node fabric (its aggregate bandwidth)
// among its transfers, a node's NIC among the transfers and collectives
// crossing it; each transfer also gets at most its link's per-transfer
// bandwidth (collective bandwidth for an all-reduce). Transfers overlap
// computation and use no compute. A ring all-reduce of B bytes over n ranks
// moves 2(n-1)/n x B per rank after 2(n-1) latencies. The steady-state step time
// is the period between the world all-reduces of consecutive steps.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/simulator/cluster.h"
#include "benchmarks/simulator/profile.h"

namespace pipet::sim {

enum class Schedule { kGpipe, kOneFOneB };
Schedule schedule_from_string(const std::string& name, const std::string& what);
const char* to_string(Schedule schedule);

struct StepLayout {
  int stages = 1;                               // K
  int replicas = 1;                             // R; pipeline p holds ranks [pK, (p+1)K)
  int micro_batches = 1;                        // M
  Schedule schedule = Schedule::kGpipe;
  std::vector<std::pair<int, int>> ranges;      // [begin, end) sub-layers per stage
  int frozen_sublayers = 0;                     // [0, frozen) run forward only, without gradients, on any stage
  int64_t global_batch = 1;                     // split evenly over the replicas
  // AutoCache on the first stage (only when the frozen prefix lies there):
  // the share of a batch read from the memory and disk tiers; the rest is
  // computed through the frozen prefix and, when `cache_fills`, written.
  bool cache_serves = false;
  double cache_memory_hits = 0.0;
  double cache_disk_hits = 0.0;
  bool cache_fills = false;
};

struct StepOptions {
  int64_t bucket_bytes = 25LL * 1024 * 1024;  // parallel.bucket_mb
  int64_t gradient_bytes_per_parameter = 4;   // fp32 gradients
  int steps = 3;                              // simulated back to back; period from the last ones
};

struct StepReport {
  double seconds = 0.0;                // steady-state step time
  double busiest_compute_seconds = 0;  // the most loaded rank's compute per step, at full speed
  double allreduce_seconds = 0.0;      // longest per-step span of a stage group's gradient all-reduces
  double p2p_bytes = 0.0;              // activations and gradients sent per step, all ranks
  double allreduce_bytes = 0.0;        // gradient bytes reduced per step, summed over groups
  int ranks = 0;                       // K x R
};

// ConfigError naming the field when the layout does not fit the profile
// and cluster (ranks beyond the cluster, ranges that do not cover the model,
// a batch that does not split over the replicas, ...).
void validate_layout(const StepLayout& layout, const ModelProfile& profile, const ClusterSpec& cluster);

StepReport simulate_step(const ModelProfile& profile, const ClusterSpec& cluster, const StepLayout& layout,
                         const StepOptions& options = {});

// Micro-batch rows as the engine splits a pipeline's batch: count =
// min(M, rows), the first rows % count micro-batches get one more.
std::vector<int64_t> micro_batch_rows(int64_t pipeline_rows, int micro_batches);

// Gradient buckets of stage [begin, end): lists of sub-layers in backward
// order, a new bucket once the open one holds >= bucket_bytes (as
// GradientBuckets). Sub-layers without trainable parameters belong to none.
std::vector<std::vector<int>> gradient_buckets(const ModelProfile& profile, int begin, int end, int frozen_sublayers,
                                               int64_t bucket_bytes, int64_t bytes_per_parameter);

}  // namespace pipet::sim
