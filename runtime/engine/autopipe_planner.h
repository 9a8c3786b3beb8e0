// AutoPipe as the engine runs it (DESIGN.md §4.2): the costs of the model's
// sub-layers for f frozen blocks, the partition of a K-stage layout, and the
// compression after a freeze. Every rank computes the same answers from the
// same inputs; nothing here communicates. The policy itself (partitioners,
// Eq. 1, cost model) is autopipe/; this maps the autopipe.* keys onto it and
// remembers the two facts of the starting layout it needs: the K0 partition
// and its largest stage.
#pragma once

#include "autopipe/cost_model.h"
#include "autopipe/partition.h"
#include "runtime/core/config.h"

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

// [begin, end) sub-layers of every stage, in stage order.
using StageRanges = std::vector<std::pair<size_t, size_t>>;

// What a cost is for: the compression criterion (lambda_frozen, a memory
// proxy) or the partition (which may count the frozen forward:
// autopipe.frozen_balance).
enum class CostUse { kCompression, kPartition };

// Sub-layers stage 0 holds for f frozen blocks: the frozen prefix and the
// first trainable sub-layer after it (0 when nothing is frozen).
int pinned_sublayers(int frozen_blocks);

class AutoPipePlanner {
 public:
  // `sublayers`: the model's sub-layers in order (names, parameter counts
  // and, with autopipe.cost=measured, forward and backward seconds).
  // `cache_may_serve`: autocache.mode is not off. ConfigError naming
  // autopipe.partition for an unknown partitioner.
  AutoPipePlanner(const AutoPipeConfig& config, const std::string& schedule, bool cache_may_serve,
                  std::vector<SubLayerCost> sublayers, int initial_stages);

  // autopipe.frozen_balance resolved for the schedule: the partition
  // charges frozen sub-layers their forward on the samples the cache does
  // not serve (`served_share` of the calls below).
  bool partition_counts_frozen_forward() const;
  std::vector<double> costs(int frozen_blocks, CostUse use, double served_share) const;

  // The stages of a K-stage layout with f frozen blocks: AutoPipe's
  // partition with the frozen prefix pinned to stage 0, or, with
  // autopipe.enabled=false, the starting partition moved only as far as the
  // cache needs (fixed_ranges).
  StageRanges ranges(int stages, int frozen_blocks, double served_share) const;
  // The plan as the log prints it (sub-layers and cost of every stage).
  std::string describe(const StageRanges& ranges, int frozen_blocks, double served_share) const;

  // K after a freeze to `frozen_blocks` from a `stages`-stage layout on
  // `world_size` ranks: Eq. 1 against the K0 plan's largest stage; without
  // AutoPipe K stays while the starting partition can hold the frozen
  // prefix, and a forced compression past that point warns (`log`).
  int stages_after_freeze(int stages, int frozen_blocks, int world_size, bool log) const;

 private:
  // autopipe.enabled=false: the starting partition. When AutoCache may serve
  // the frozen prefix it must sit on stage 0, and the boundaries move only as
  // far as that requires (empty when K stages cannot each keep a sub-layer);
  // with autocache.mode=off frozen sub-layers stay where they are.
  StageRanges fixed_ranges(int stages, int frozen_blocks) const;

  AutoPipeConfig config_;
  bool one_f_one_b_ = false;
  bool cache_may_serve_ = false;
  PartitionMethod method_ = PartitionMethod::kOptimal;
  std::vector<SubLayerCost> sublayers_;
  bool measured_ = false;
  StageRanges initial_ranges_;      // the K0 partition, nothing frozen
  double reference_max_cost_ = 0.0; // its largest stage under the compression costs
};

}  // namespace pipet
