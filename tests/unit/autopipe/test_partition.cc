// Partitioners: hand-computed plans, the optimal one against brute force on
// random inputs (with frequent exact ties), the greedy one's invariants, and
// every input error.
#include "autopipe/partition.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

namespace pipet {
namespace {

using testing::error_message;

std::vector<int> ends_of(const std::vector<Stage>& stages) {
  std::vector<int> ends;
  for (const Stage& s : stages) ends.push_back(s.end);
  return ends;
}

// Contiguous, covering, non-empty, pinned prefix on stage 0, costs summed.
void expect_valid(const std::vector<double>& costs, int K, int pinned, const std::vector<Stage>& stages) {
  ASSERT_EQ(static_cast<int>(stages.size()), K);
  int next = 0;
  for (const Stage& s : stages) {
    EXPECT_EQ(s.begin, next);
    EXPECT_GT(s.end, s.begin);
    double sum = 0.0;
    for (int i = s.begin; i < s.end; ++i) sum += costs[i];
    EXPECT_DOUBLE_EQ(s.cost, sum);
    next = s.end;
  }
  EXPECT_EQ(next, static_cast<int>(costs.size()));
  EXPECT_GE(stages[0].end, pinned);
}

// Every partition by enumeration: the best largest stage, and the stage ends
// of the first partition (lexicographically) within `tol` of that best.
struct BruteForce {
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> first_best_ends;
};
BruteForce brute_force(const std::vector<double>& costs, int K, int pinned) {
  const int n = static_cast<int>(costs.size());
  std::vector<std::pair<double, std::vector<int>>> all;  // in lexicographic order
  std::vector<int> ends;
  std::function<void(int, int, double)> rec = [&](int begin, int stage, double worst) {
    if (stage == K - 1) {
      double sum = 0.0;
      for (int i = begin; i < n; ++i) sum += costs[i];
      ends.push_back(n);
      all.emplace_back(std::max(worst, sum), ends);
      ends.pop_back();
      return;
    }
    const int first = stage == 0 ? std::max(pinned, 1) : begin + 1;
    for (int end = first; end <= n - (K - stage - 1); ++end) {
      double sum = 0.0;
      for (int i = begin; i < end; ++i) sum += costs[i];
      ends.push_back(end);
      rec(end, stage + 1, std::max(worst, sum));
      ends.pop_back();
    }
  };
  rec(0, 0, 0.0);
  BruteForce result;
  for (const auto& [worst, e] : all) result.best = std::min(result.best, worst);
  double total = 0.0;
  for (double c : costs) total += c;
  for (const auto& [worst, e] : all) {
    if (worst <= result.best + 1e-9 * total) {
      result.first_best_ends = e;
      break;
    }
  }
  return result;
}

TEST(Partition, HandComputedPlansAndPinnedPrefix) {
  const std::vector<double> costs = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  // Optimal: largest stage 17 ({8, 9}); earliest cuts give 15 | 13 | 17.
  const auto optimal = partition_optimal(costs, 3);
  expect_valid(costs, 3, 0, optimal);
  EXPECT_EQ(ends_of(optimal), (std::vector<int>{5, 7, 9})) << describe(optimal);
  EXPECT_DOUBLE_EQ(max_stage_cost(optimal), 17.0);
  EXPECT_DOUBLE_EQ(optimal[0].cost, 15.0);
  EXPECT_DOUBLE_EQ(optimal[1].cost, 13.0);
  // Greedy: stage 0 fills under 45/3 + std(1..9)/3 = 15.86 -> {1..5};
  // stage 1 under 30/2 + std(6..9)/2 = 15.56 -> {6, 7}; the rest is {8, 9}.
  const auto greedy = partition_greedy(costs, 3);
  expect_valid(costs, 3, 0, greedy);
  EXPECT_EQ(ends_of(greedy), (std::vector<int>{5, 7, 9})) << describe(greedy);
  EXPECT_EQ(describe(greedy), "[0,5) 15 | [5,7) 13 | [7,9) 17");

  // One big cost at the end: both put it alone.
  const std::vector<double> skewed = {1, 1, 1, 1, 1, 7};
  EXPECT_EQ(ends_of(partition_optimal(skewed, 2)), (std::vector<int>{5, 6}));
  EXPECT_DOUBLE_EQ(max_stage_cost(partition_optimal(skewed, 2)), 7.0);
  // Greedy: limit 12/2 + std/2 = 6 + 1.118 -> takes all five ones, then must
  // leave the last sub-layer for stage 1: same plan here.
  EXPECT_EQ(ends_of(partition_greedy(skewed, 2)), (std::vector<int>{5, 6}));
  const std::vector<double> front_heavy = {9, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  // Optimal puts 9 alone; greedy's first stage limit 9 + 2.4/3 = 9.8 also
  // stops after 9; stage 1 limit 9/2 + 0 = 4.5 -> {1,1,1,1}; stage 2 takes 5.
  EXPECT_EQ(ends_of(partition_optimal(front_heavy, 3)), (std::vector<int>{1, 2, 10}))
      << "earliest cuts among optimal plans (largest stage 9)";
  EXPECT_EQ(ends_of(partition_greedy(front_heavy, 3)), (std::vector<int>{1, 5, 10}));
  EXPECT_DOUBLE_EQ(max_stage_cost(partition_greedy(front_heavy, 3)), 9.0);

  // Pinned prefix: stage 0 must hold the first 4, even when a cheaper plan
  // exists without the constraint.
  const std::vector<double> pinned_costs = {1, 1, 1, 1, 10, 1};
  EXPECT_EQ(ends_of(partition_optimal(pinned_costs, 2, 4)), (std::vector<int>{4, 6}));
  EXPECT_EQ(ends_of(partition_optimal(pinned_costs, 2, 5)), (std::vector<int>{5, 6}));
  EXPECT_EQ(ends_of(partition_greedy(pinned_costs, 2, 5)), (std::vector<int>{5, 6}));
  EXPECT_EQ(ends_of(partition_optimal(pinned_costs, 3, 3)), (std::vector<int>{4, 5, 6}));
  EXPECT_EQ(ends_of(partition_optimal(pinned_costs, 1, 6)), (std::vector<int>{6}));
  EXPECT_TRUE(partition_fits(6, 2, 5));
  EXPECT_FALSE(partition_fits(6, 2, 6));
  EXPECT_FALSE(partition_fits(6, 7, 0));

  // All-zero costs are legal and still give non-empty stages.
  const std::vector<double> zeros(5, 0.0);
  EXPECT_EQ(ends_of(partition_optimal(zeros, 5)), (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_EQ(ends_of(partition_greedy(zeros, 2)), (std::vector<int>{1, 5}));
  EXPECT_EQ(partition(costs, 3, PartitionMethod::kOptimal), optimal);
  EXPECT_EQ(partition(costs, 3, PartitionMethod::kGreedy), greedy);
}

TEST(Partition, OptimalMatchesBruteForceAndGreedyIsNeverBetter) {
  std::mt19937 rng(20240611);
  int cases = 0;
  int greedy_suboptimal = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 9);
    std::vector<double> costs(n);
    // Half the trials use small integers so exact ties are common.
    const bool integral = trial % 2 == 0;
    for (double& c : costs) {
      c = integral ? static_cast<double>(rng() % 4) : 0.1 + (rng() % 100000) / 1000.0;
    }
    const int K = 1 + static_cast<int>(rng() % n);
    const int pinned = static_cast<int>(rng() % (n + 1));
    if (!partition_fits(n, K, pinned)) continue;
    ++cases;
    const BruteForce expected = brute_force(costs, K, pinned);
    const auto optimal = partition_optimal(costs, K, pinned);
    expect_valid(costs, K, pinned, optimal);
    EXPECT_NEAR(max_stage_cost(optimal), expected.best, 1e-9) << "trial " << trial << ": " << describe(optimal);
    EXPECT_EQ(ends_of(optimal), expected.first_best_ends) << "trial " << trial << ": " << describe(optimal);
    const auto greedy = partition_greedy(costs, K, pinned);
    expect_valid(costs, K, pinned, greedy);
    EXPECT_GE(max_stage_cost(greedy), expected.best - 1e-9);
    if (max_stage_cost(greedy) > expected.best + 1e-9) ++greedy_suboptimal;
    // Pure: the same inputs give the same plan.
    EXPECT_EQ(partition_optimal(costs, K, pinned), optimal);
    EXPECT_EQ(partition_greedy(costs, K, pinned), greedy);
  }
  EXPECT_GT(cases, 200);
  EXPECT_GT(greedy_suboptimal, 0) << "the random inputs should show greedy is a heuristic";
}

TEST(Partition, InputErrorsNameTheProblem) {
  const std::vector<double> costs = {1, 2, 3};
  for (auto method : {PartitionMethod::kGreedy, PartitionMethod::kOptimal}) {
    EXPECT_NE(error_message<ConfigError>([&] { partition({}, 1, method); }).find("empty"), std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition(costs, 0, method); }).find("K = 0"), std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition(costs, 4, method); }).find("K = 4"), std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition({1, -2, 3}, 2, method); }).find("sub-layer 1"),
              std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition({1, 2, NAN}, 2, method); }).find("sub-layer 2"),
              std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition({1, INFINITY}, 1, method); }).find("finite"),
              std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition(costs, 2, method, 3); }).find("pinned to stage 0"),
              std::string::npos);
    EXPECT_NE(error_message<ConfigError>([&] { partition(costs, 1, method, 4); }).find("pinned prefix of 4"),
              std::string::npos);
  }
  EXPECT_EQ(partition_method_from_string("optimal", "autopipe.partitioner"), PartitionMethod::kOptimal);
  EXPECT_NE(error_message<ConfigError>([] { partition_method_from_string("dp", "autopipe.partitioner"); })
                .find("autopipe.partitioner: unknown partition method 'dp'"),
            std::string::npos);
}

}  // namespace
}  // namespace pipet
