// The AutoPipe plan: pipeline length K, micro-batch count M, which
// sub-layers each stage runs, and the frozen prefix. `make_plan` is a pure
// function of its inputs (DESIGN.md 4.2): every rank computes the same plan
// from the same (all-reduced or broadcast) inputs, and nothing else enters.
#pragma once

#include "autopipe/compression.h"
#include "autopipe/cost_model.h"
#include "autopipe/micro_batch.h"
#include "autopipe/partition.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pipet {

struct Plan {
  int stages = 1;            // K
  int micro_batches = 1;     // M
  int frozen_sublayers = 0;  // length of the frozen prefix, in sub-layers; all on stage 0
  std::vector<Stage> partition;  // K stages over every sub-layer (frozen ones included)

  bool operator==(const Plan& o) const {
    return stages == o.stages && micro_batches == o.micro_batches && frozen_sublayers == o.frozen_sublayers
           && partition == o.partition;
  }
  bool operator!=(const Plan& o) const { return !(*this == o); }
};

struct PlanInputs {
  // The whole model in order (embedding, block sub-layers, head); the frozen
  // flags mark the frozen prefix (see with_frozen_blocks).
  std::vector<SubLayerCost> sublayers;
  int initial_stages = 1;  // K0: the plan at the start (nothing frozen) sets the compression reference
  int current_stages = 1;  // K in use before this decision; the new K is never larger
  CostModelOptions cost;
  CompressionOptions compression;  // also picks the partitioner
  // Per-pipeline batch for every K the plan may land on (the batch policy
  // lives with AutoDP); M must divide it.
  std::map<int, int64_t> pipeline_batch_by_stages;
  MicroBatchTable measured;  // M profiles; the default M is used for a K without any
};

// K by the compression criterion (balance_costs), the partition of all
// sub-layers over K stages (partition_costs) with the frozen prefix pinned
// to stage 0, and M (the fastest
// measured for K, else default_micro_batches). ConfigError for invalid
// inputs (naming them), including current_stages > initial_stages, a
// missing pipeline batch for the chosen K, or a measured M that does not
// divide that batch.
Plan make_plan(const PlanInputs& inputs);

// "K=4 M=16 frozen=15 | [0,17) 1.2e+07 | ..." for logs.
std::string describe(const Plan& plan);

}  // namespace pipet
