#include "autopipe/partition.h"

#include "runtime/core/errors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace pipet {

namespace {

double sum_range(const std::vector<double>& costs, int begin, int end) {
  double total = 0.0;
  for (int i = begin; i < end; ++i) total += costs[i];
  return total;
}

Stage make_stage(const std::vector<double>& costs, int begin, int end) {
  return Stage{begin, end, sum_range(costs, begin, end)};
}

// Population standard deviation of costs[begin, end).
double stddev_range(const std::vector<double>& costs, int begin, int end) {
  const int n = end - begin;
  if (n <= 1) return 0.0;
  const double mean = sum_range(costs, begin, end) / n;
  double squares = 0.0;
  for (int i = begin; i < end; ++i) squares += (costs[i] - mean) * (costs[i] - mean);
  return std::sqrt(squares / n);
}

}  // namespace

const char* to_string(PartitionMethod method) {
  switch (method) {
    case PartitionMethod::kGreedy: return "greedy";
    case PartitionMethod::kOptimal: return "optimal";
  }
  return "unknown";
}

PartitionMethod partition_method_from_string(const std::string& name, const std::string& what) {
  if (name == "greedy") return PartitionMethod::kGreedy;
  if (name == "optimal") return PartitionMethod::kOptimal;
  throw ConfigError(what + ": unknown partition method '" + name
                    + "' (expected 'greedy' or 'optimal')");
}

bool partition_fits(int num_sublayers, int num_stages, int pinned_prefix) {
  if (num_sublayers < 1 || num_stages < 1 || num_stages > num_sublayers) return false;
  if (pinned_prefix < 0 || pinned_prefix > num_sublayers) return false;
  // Stage 0 ends at or after max(pinned, 1); every later stage needs one.
  return num_sublayers - std::max(pinned_prefix, 1) >= num_stages - 1;
}

void validate_partition_inputs(const std::vector<double>& costs, int num_stages, int pinned_prefix) {
  if (costs.empty()) throw ConfigError("partition: the cost sequence is empty (no sub-layers to place)");
  const int n = static_cast<int>(costs.size());
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(costs[i]) || costs[i] < 0.0) {
      std::ostringstream msg;
      msg << "partition: cost of sub-layer " << i << " is " << costs[i]
          << "; costs must be finite and >= 0";
      throw ConfigError(msg.str());
    }
  }
  if (num_stages < 1 || num_stages > n) {
    throw ConfigError("partition: number of stages K = " + std::to_string(num_stages)
                      + " must be between 1 and the number of sub-layers (" + std::to_string(n) + ")");
  }
  if (pinned_prefix < 0 || pinned_prefix > n) {
    throw ConfigError("partition: pinned prefix of " + std::to_string(pinned_prefix)
                      + " sub-layers is outside [0, " + std::to_string(n) + "]");
  }
  if (!partition_fits(n, num_stages, pinned_prefix)) {
    throw ConfigError("partition: the " + std::to_string(pinned_prefix)
                      + " sub-layers pinned to stage 0 leave " + std::to_string(n - pinned_prefix)
                      + " sub-layers, too few for the other " + std::to_string(num_stages - 1)
                      + " stages (K = " + std::to_string(num_stages) + ")");
  }
}

std::vector<Stage> partition_greedy(const std::vector<double>& costs, int num_stages, int pinned_prefix) {
  validate_partition_inputs(costs, num_stages, pinned_prefix);
  const int n = static_cast<int>(costs.size());
  std::vector<Stage> stages;
  stages.reserve(num_stages);
  double remaining = sum_range(costs, 0, n);
  int next = 0;
  for (int s = 0; s < num_stages; ++s) {
    const int begin = next;
    const int stages_after = num_stages - s - 1;
    if (stages_after == 0) {
      stages.push_back(make_stage(costs, begin, n));
      break;
    }
    const double mean = remaining / (num_stages - s);
    const double slack = stddev_range(costs, begin, n) / (num_stages - s);
    double load = 0.0;
    // Mandatory part: the pinned prefix on stage 0, one sub-layer elsewhere.
    const int mandatory_end = s == 0 ? std::max(pinned_prefix, 1) : begin + 1;
    for (; next < mandatory_end; ++next) load += costs[next];
    // Fill while under mean + slack, leaving one sub-layer per later stage.
    while (next < n - stages_after && load + costs[next] < mean + slack) {
      load += costs[next];
      ++next;
    }
    stages.push_back(make_stage(costs, begin, next));
    remaining -= load;
  }
  return stages;
}

std::vector<Stage> partition_optimal(const std::vector<double>& costs, int num_stages, int pinned_prefix) {
  validate_partition_inputs(costs, num_stages, pinned_prefix);
  const int n = static_cast<int>(costs.size());
  const int K = num_stages;
  std::vector<double> prefix(n + 1, 0.0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + costs[i];
  auto range = [&](int b, int e) { return prefix[e] - prefix[b]; };
  const int stage0_min_end = std::max(pinned_prefix, 1);
  const double inf = std::numeric_limits<double>::infinity();

  // best[k][i]: smallest possible largest stage when [i, n) is split into k
  // non-empty stages (stage 0's pinned constraint applies only from i = 0
  // with k = K, handled when reading best[K][0] below).
  std::vector<std::vector<double>> best(K + 1, std::vector<double>(n + 1, inf));
  for (int i = 0; i < n; ++i) best[1][i] = range(i, n);
  for (int k = 2; k <= K; ++k) {
    for (int i = 0; i + k <= n; ++i) {
      const int first_end = (k == K && i == 0) ? stage0_min_end : i + 1;
      double value = inf;
      for (int j = first_end; j <= n - (k - 1); ++j) {
        value = std::min(value, std::max(range(i, j), best[k - 1][j]));
      }
      best[k][i] = value;
    }
  }
  double optimum = best[K][0];
  if (K == 1) optimum = range(0, n);

  // Rebuild with the earliest feasible cut at every stage; the tolerance
  // absorbs the rounding of prefix differences so near-equal plans tie.
  const double tolerance = 1e-12 * prefix[n];
  const double limit = optimum + tolerance;
  std::vector<Stage> stages;
  stages.reserve(K);
  int begin = 0;
  for (int s = 0; s < K - 1; ++s) {
    const int stages_after = K - s - 1;
    const int first_end = s == 0 ? stage0_min_end : begin + 1;
    int end = -1;
    for (int j = first_end; j <= n - stages_after; ++j) {
      if (range(begin, j) > limit) break;  // costs >= 0: ranges only grow
      if (best[stages_after][j] <= limit) {
        end = j;
        break;
      }
    }
    PIPET_CHECK(end > 0, "optimal partition reconstruction found no feasible cut");
    stages.push_back(make_stage(costs, begin, end));
    begin = end;
  }
  stages.push_back(make_stage(costs, begin, n));
  return stages;
}

std::vector<Stage> partition(const std::vector<double>& costs, int num_stages, PartitionMethod method,
                             int pinned_prefix) {
  switch (method) {
    case PartitionMethod::kGreedy: return partition_greedy(costs, num_stages, pinned_prefix);
    case PartitionMethod::kOptimal: return partition_optimal(costs, num_stages, pinned_prefix);
  }
  throw ConfigError("partition: unknown partition method");
}

double max_stage_cost(const std::vector<Stage>& stages) {
  double largest = 0.0;
  for (const Stage& s : stages) largest = std::max(largest, s.cost);
  return largest;
}

std::string describe(const std::vector<Stage>& stages) {
  std::ostringstream out;
  for (size_t s = 0; s < stages.size(); ++s) {
    if (s > 0) out << " | ";
    char cost[32];
    std::snprintf(cost, sizeof(cost), "%.6g", stages[s].cost);
    out << "[" << stages[s].begin << "," << stages[s].end << ") " << cost;
  }
  return out.str();
}

}  // namespace pipet
