// Pipeline compression (the paper's Eq. 1): after more layers freeze, try a
// shorter pipeline and accept it when its largest stage is no larger than
// the largest stage of the starting plan (whole model, nothing frozen, K0
// stages); keep trying shorter ones until one is rejected. K never grows.
//
// Candidates: by default K/2, K/4, ... (the paper; integer halving, so an
// odd K goes to K/2 rounded down). With `allowed_stage_counts` the caller
// names every K a layout may have (e.g. the divisors of the ranks per node
// that also divide the world), and the candidates are those below the
// current K in decreasing order.
//
// The comparison allows a relative slack of 1e-9 so that a plan whose
// largest stage equals the reference up to summation order is accepted.
#pragma once

#include "autopipe/partition.h"

#include <vector>

namespace pipet {

struct CompressionOptions {
  PartitionMethod method = PartitionMethod::kOptimal;
  std::vector<int> allowed_stage_counts;  // empty: halving
};

// Largest stage of the starting plan: `full_costs` (every sub-layer active)
// over `initial_stages` stages.
double reference_max_stage_cost(const std::vector<double>& full_costs, int initial_stages, PartitionMethod method);

struct CompressionTrial {
  int stages = 0;
  double max_stage_cost = 0.0;
  bool accepted = false;
  bool forced = false;  // the previous K no longer fit (too few active sub-layers)
};

struct CompressionResult {
  int stages = 0;                       // the new K
  std::vector<CompressionTrial> trials; // what was tried, in order (for logs)
};

// New K for the current costs (frozen sub-layers already discounted by the
// cost model and pinned to stage 0 as `pinned_prefix`). When the current K
// cannot give every stage a sub-layer any more, K shrinks to the next
// candidate without comparing (a forced trial). ConfigError when no
// candidate fits or the inputs are invalid (current K < 1, a non-positive
// or duplicate allowed K, ...).
CompressionResult compress_stage_count(const std::vector<double>& costs, int pinned_prefix, int current_stages,
                                       double reference_max, const CompressionOptions& options);

}  // namespace pipet
