// Partitioning an ordered sequence of sub-layer costs over K pipeline stages.
//
// Every partitioner returns K contiguous, non-empty stages that cover the
// sequence in order: stage s holds sub-layers [begin, end). A `pinned_prefix`
// of p sub-layers (the frozen prefix) always belongs to stage 0; stage 0 may
// hold more than that. Costs are plain numbers in any unit (parameters,
// seconds): the partitioners only add and compare them.
//
// Pure functions: no processes, no I/O, equal inputs give equal outputs.
#pragma once

#include <string>
#include <vector>

namespace pipet {

struct Stage {
  int begin = 0;      // first sub-layer index
  int end = 0;        // one past the last sub-layer index
  double cost = 0.0;  // sum of the costs of [begin, end), added left to right

  int size() const { return end - begin; }
  bool operator==(const Stage& o) const {
    return begin == o.begin && end == o.end && cost == o.cost;
  }
  bool operator!=(const Stage& o) const { return !(*this == o); }
};

enum class PartitionMethod {
  kGreedy,   // the paper's left-to-right fill (fast, not always optimal)
  kOptimal,  // minimises the largest stage cost exactly
};
const char* to_string(PartitionMethod method);
// "greedy" or "optimal"; anything else is a ConfigError naming `what`.
PartitionMethod partition_method_from_string(const std::string& name, const std::string& what);

// Throws ConfigError unless `costs` is non-empty with finite costs >= 0,
// 1 <= num_stages <= costs.size(), 0 <= pinned_prefix <= costs.size(), and
// the pinned prefix leaves at least one sub-layer for each later stage.
void validate_partition_inputs(const std::vector<double>& costs, int num_stages, int pinned_prefix);

// Whether `num_stages` non-empty stages fit when stage 0 must hold the first
// `pinned_prefix` sub-layers (no exceptions; for callers choosing K).
bool partition_fits(int num_sublayers, int num_stages, int pinned_prefix);

// The paper's greedy balance. Stage s (of K) starts from the remaining
// sub-layers and takes them left to right while its load plus the next cost
// stays strictly under mean + slack, where mean = remaining cost / (K - s)
// and slack = standard deviation of the remaining costs / (K - s). Each stage
// takes at least one sub-layer (stage 0: at least the pinned prefix) and
// leaves at least one for every later stage; the last stage takes the rest.
std::vector<Stage> partition_greedy(const std::vector<double>& costs, int num_stages,
                                    int pinned_prefix = 0);

// The partition whose largest stage cost is smallest. Among partitions whose
// largest stage is within rounding (relative 1e-12 of the total) of the
// optimum, the one with the earliest cuts (lexicographically smallest list of
// stage ends) is returned, so the result does not depend on summation order.
std::vector<Stage> partition_optimal(const std::vector<double>& costs, int num_stages,
                                     int pinned_prefix = 0);

std::vector<Stage> partition(const std::vector<double>& costs, int num_stages,
                             PartitionMethod method, int pinned_prefix = 0);

// Largest stage cost of a partition (0 for an empty list).
double max_stage_cost(const std::vector<Stage>& stages);

// "[0,4) 10.5 | [4,9) 11.2 | ..." for logs and test messages.
std::string describe(const std::vector<Stage>& stages);

}  // namespace pipet
