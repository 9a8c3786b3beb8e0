#include "autopipe/compression.h"

#include "runtime/core/errors.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace pipet {

namespace {

constexpr double kRelativeSlack = 1e-9;

void check_allowed(const std::vector<int>& allowed) {
  std::set<int> seen;
  for (size_t i = 0; i < allowed.size(); ++i) {
    if (allowed[i] < 1) {
      throw ConfigError("compression: allowed_stage_counts[" + std::to_string(i) + "] = "
                        + std::to_string(allowed[i]) + " is not a positive stage count");
    }
    if (!seen.insert(allowed[i]).second) {
      throw ConfigError("compression: allowed_stage_counts[" + std::to_string(i) + "] = "
                        + std::to_string(allowed[i]) + " appears twice");
    }
  }
}

// The next shorter pipeline to try, or 0 when there is none.
int next_candidate(int stages, const std::vector<int>& allowed) {
  if (allowed.empty()) return stages >= 2 ? stages / 2 : 0;
  int best = 0;
  for (int k : allowed) {
    if (k < stages) best = std::max(best, k);
  }
  return best;
}

}  // namespace

double reference_max_stage_cost(const std::vector<double>& full_costs, int initial_stages, PartitionMethod method) {
  return max_stage_cost(partition(full_costs, initial_stages, method));
}

CompressionResult compress_stage_count(const std::vector<double>& costs, int pinned_prefix, int current_stages,
                                       double reference_max, const CompressionOptions& options) {
  check_allowed(options.allowed_stage_counts);
  if (current_stages < 1) {
    throw ConfigError("compression: current stage count " + std::to_string(current_stages) + " is not positive");
  }
  if (!(std::isfinite(reference_max) && reference_max >= 0.0)) {
    throw ConfigError("compression: reference largest stage cost must be finite and >= 0");
  }
  // Validates costs and the pinned prefix (K = 1 always fits when they are valid).
  validate_partition_inputs(costs, 1, pinned_prefix);
  const int n = static_cast<int>(costs.size());

  CompressionResult result;
  int stages = current_stages;
  while (!partition_fits(n, stages, pinned_prefix)) {
    const int next = next_candidate(stages, options.allowed_stage_counts);
    if (next == 0) {
      throw ConfigError("compression: K = " + std::to_string(stages) + " leaves a stage empty ("
                        + std::to_string(n) + " sub-layers, " + std::to_string(pinned_prefix)
                        + " pinned to stage 0) and no smaller allowed stage count exists");
    }
    stages = next;
    if (partition_fits(n, stages, pinned_prefix)) {
      const double worst = max_stage_cost(partition(costs, stages, options.method, pinned_prefix));
      result.trials.push_back(CompressionTrial{stages, worst, true, true});
    } else {
      result.trials.push_back(CompressionTrial{stages, 0.0, true, true});
    }
  }
  const double limit = reference_max * (1.0 + kRelativeSlack);
  for (int next = next_candidate(stages, options.allowed_stage_counts); next != 0;
       next = next_candidate(stages, options.allowed_stage_counts)) {
    const double worst = max_stage_cost(partition(costs, next, options.method, pinned_prefix));
    const bool accepted = worst <= limit;
    result.trials.push_back(CompressionTrial{next, worst, accepted, false});
    if (!accepted) break;
    stages = next;
  }
  result.stages = stages;
  return result;
}

}  // namespace pipet
