// AutoPipe above the partitioners: the cost model, the compression
// criterion (including the published ViT-B/16 K sequence), micro-batch
// choice and make_plan.
#include "autopipe/plan.h"
#include "freeze/freeze_policy.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>

namespace pipet {
namespace {

using testing::error_message;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

SubLayerCost sub(const std::string& name, int64_t parameters) {
  SubLayerCost s;
  s.name = name;
  s.parameters = parameters;
  return s;
}

// ViT-B/16 as REFERENCE.md sizes it: embedding 0.74M, attention 2.36M,
// MLP 4.72M per block, head 0.08M (100 classes): 26 sub-layers.
std::vector<SubLayerCost> vit_b16() {
  std::vector<SubLayerCost> s;
  s.push_back(sub("embedding", 740000));
  for (int b = 0; b < 12; ++b) {
    s.push_back(sub("block" + std::to_string(b) + ".attention", 2360000));
    s.push_back(sub("block" + std::to_string(b) + ".mlp", 4720000));
  }
  s.push_back(sub("head", 80000));
  return s;
}

std::vector<int> ends_of(const std::vector<Stage>& stages) {
  std::vector<int> ends;
  for (const Stage& s : stages) ends.push_back(s.end);
  return ends;
}

// K by epoch: epoch e trains with f = schedule[e]; K starts at K0 = 8.
std::vector<int> k_by_epoch(const std::vector<int>& schedule, PartitionMethod method, double lambda) {
  PlanInputs in;
  in.initial_stages = 8;
  in.current_stages = 8;
  in.cost.basis = CostBasis::kParameters;
  in.cost.frozen_cost_factor = lambda;
  in.compression.method = method;
  for (int k : {1, 2, 4, 8}) in.pipeline_batch_by_stages[k] = 400;
  std::vector<int> ks;
  for (int f : schedule) {
    in.sublayers = with_frozen_blocks(vit_b16(), f);
    const Plan plan = make_plan(in);
    EXPECT_EQ(plan.frozen_sublayers, frozen_sublayer_count(f));
    EXPECT_GE(plan.partition[0].end, plan.frozen_sublayers) << "the frozen prefix sits on stage 0";
    in.current_stages = plan.stages;
    ks.push_back(plan.stages);
  }
  return ks;
}

TEST(CostModel, ParametersTimesFrozenPrefixAndErrors) {
  std::vector<SubLayerCost> s = {sub("embedding", 600),        sub("block0.attention", 1200), sub("block0.mlp", 2400),
                                 sub("block1.attention", 1200), sub("block1.mlp", 2400),       sub("head", 60)};
  EXPECT_EQ(frozen_sublayer_count(0), 0);
  EXPECT_EQ(frozen_sublayer_count(2), 5);
  EXPECT_EQ(frozen_prefix_length(s), 0);
  EXPECT_EQ(balance_costs(s, {}), (std::vector<double>{600, 1200, 2400, 1200, 2400, 60}));
  s = with_frozen_blocks(s, 1);
  EXPECT_EQ(frozen_prefix_length(s), 3);
  // Parameter proxy: frozen sub-layers cost lambda (1/6 by default).
  EXPECT_EQ(balance_costs(s, {}), (std::vector<double>{100, 200, 400, 1200, 2400, 60}));
  EXPECT_EQ(balance_costs(s, {CostBasis::kParameters, 0.0}), (std::vector<double>{0, 0, 0, 1200, 2400, 60}));

  // Measured time: active = forward + backward, frozen = forward only.
  for (size_t i = 0; i < s.size(); ++i) {
    s[i].forward_seconds = 0.01 * (i + 1);
    s[i].backward_seconds = 0.02 * (i + 1);
  }
  EXPECT_EQ(resolve_cost_basis(s, {}), CostBasis::kMeasuredTime);
  const auto timed = balance_costs(s, {});
  EXPECT_DOUBLE_EQ(timed[0], 0.01);
  EXPECT_DOUBLE_EQ(timed[2], 0.03);
  EXPECT_DOUBLE_EQ(timed[3], 0.04 + 0.08);
  EXPECT_DOUBLE_EQ(timed[5], 0.06 + 0.12);
  // An explicit parameter basis ignores the times.
  EXPECT_EQ(balance_costs(s, {CostBasis::kParameters, 0.5}), (std::vector<double>{300, 600, 1200, 1200, 2400, 60}));

  // Errors name the sub-layer.
  auto err = [](const std::vector<SubLayerCost>& records, CostModelOptions o = {}) {
    return error_message<ConfigError>([&] { balance_costs(records, o); });
  };
  auto mixed = s;
  mixed[4].backward_seconds.reset();
  EXPECT_TRUE(contains(err(mixed), "sub-layer 4 'block1.mlp' has no measured forward and backward time while 5"));
  EXPECT_TRUE(contains(err(mixed, {CostBasis::kMeasuredTime, 0.1}), "basis 'measured_time' but sub-layer 4"));
  auto bad_time = s;
  bad_time[1].forward_seconds = std::nan("");
  EXPECT_TRUE(contains(err(bad_time), "sub-layer 1 'block0.attention' has forward time nan"));
  auto gap = s;
  gap[1].frozen = false;
  EXPECT_TRUE(contains(err(gap), "sub-layer 2 'block0.mlp' is frozen but sub-layer 1"));
  auto negative = s;
  negative[5].parameters = -1;
  EXPECT_TRUE(contains(err(negative), "sub-layer 5 'head' has a negative parameter count"));
  EXPECT_TRUE(contains(err(s, {CostBasis::kAuto, 1.5}), "frozen_cost_factor (lambda_frozen) = 1.5"));
  EXPECT_TRUE(contains(err({}), "no sub-layers"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { with_frozen_blocks(s, 3); }),
                       "3 frozen blocks are 7 sub-layers, but the model has only 6"));
  EXPECT_TRUE(contains(error_message<ConfigError>([] { frozen_sublayer_count(-1); }), "-1 is negative"));
}

TEST(Compression, PublishedVitB16SequenceAndWhatChangesIt) {
  // The start plan: 26 sub-layers over 8 stages; its largest stage (the
  // compression reference) is the last: MLP + attention + MLP + head.
  const auto full = balance_costs(vit_b16(), {});
  const auto start = partition_optimal(full, 8);
  EXPECT_EQ(ends_of(start), (std::vector<int>{4, 7, 10, 13, 16, 19, 22, 26})) << describe(start);
  EXPECT_DOUBLE_EQ(max_stage_cost(start), 11880000.0);
  EXPECT_DOUBLE_EQ(reference_max_stage_cost(full, 8, PartitionMethod::kOptimal), 11880000.0);

  // f by epoch from the alpha 1/3 bound: 0, 4, 7, 9, 10, 11.
  const auto schedule = freeze_bound_schedule(1.0 / 3.0, 12, 5);
  ASSERT_EQ(schedule, (std::vector<int>{0, 4, 7, 9, 10, 11}));
  // REFERENCE.md: K = 8, 8, 4, 2, 2, 1. Reproduced by the optimal partition
  // when frozen sub-layers cost nothing, which is what the public code
  // effectively does (it removes them from the cost list and never applies
  // lambda). At f = 9 the two-stage plan's largest stage is exactly the
  // reference (11.88M), so the tie must be accepted.
  EXPECT_EQ(k_by_epoch(schedule, PartitionMethod::kOptimal, 0.0), (std::vector<int>{8, 8, 4, 2, 2, 1}));
  // With lambda 1/6 the frozen prefix pinned to stage 0 already weighs
  // 10.74M at f = 9, so stage 1 would need all 21.32M of the active blocks:
  // compression stops at K = 4.
  EXPECT_EQ(k_by_epoch(schedule, PartitionMethod::kOptimal, 1.0 / 6.0), (std::vector<int>{8, 8, 4, 4, 4, 4}));
  // The greedy fill (scale-free slack) starts from a worse plan (largest
  // stage 14.24M), so it compresses sooner: 8, 4, 4, 2, 1, 1.
  EXPECT_DOUBLE_EQ(reference_max_stage_cost(full, 8, PartitionMethod::kGreedy), 14240000.0);
  EXPECT_EQ(k_by_epoch(schedule, PartitionMethod::kGreedy, 0.0), (std::vector<int>{8, 4, 4, 2, 1, 1}));
}

TEST(Compression, AllowedStageCountsForcedShrinkAndErrors) {
  // Five active unit costs, reference 2 (ten units over K0 = 5).
  const std::vector<double> costs = {1, 1, 1, 1, 1};
  CompressionOptions halving;
  const auto by_half = compress_stage_count(costs, 0, 4, 2.0, halving);
  EXPECT_EQ(by_half.stages, 4) << "K = 2 puts three units on a stage";
  ASSERT_EQ(by_half.trials.size(), 1u);
  EXPECT_EQ(by_half.trials[0].stages, 2);
  EXPECT_DOUBLE_EQ(by_half.trials[0].max_stage_cost, 3.0);
  EXPECT_FALSE(by_half.trials[0].accepted);

  CompressionOptions any_divisor;
  any_divisor.allowed_stage_counts = {1, 2, 3, 4};
  const auto by_list = compress_stage_count(costs, 0, 4, 2.0, any_divisor);
  EXPECT_EQ(by_list.stages, 3) << "3 stages hold at most two units";
  ASSERT_EQ(by_list.trials.size(), 2u);
  EXPECT_TRUE(by_list.trials[0].accepted);
  EXPECT_FALSE(by_list.trials[1].accepted);

  // Halving keeps going while accepted, down to 1.
  EXPECT_EQ(compress_stage_count(costs, 0, 8, 5.0, halving).stages, 1);
  // Odd K halves downwards: 3 -> 1.
  EXPECT_EQ(compress_stage_count(costs, 0, 3, 5.0, halving).stages, 1);

  // Four of five sub-layers pinned to stage 0: K = 4 cannot give every
  // stage a sub-layer, so K = 2 is forced, then K = 1 is tried and rejected.
  const auto forced = compress_stage_count({0, 0, 0, 0, 3}, 4, 4, 2.0, halving);
  EXPECT_EQ(forced.stages, 2);
  ASSERT_EQ(forced.trials.size(), 2u);
  EXPECT_TRUE(forced.trials[0].forced);
  EXPECT_FALSE(forced.trials[1].accepted);
  CompressionOptions only_four;
  only_four.allowed_stage_counts = {4};
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { compress_stage_count({0, 0, 0, 0, 3}, 4, 4, 2.0, only_four); }),
                       "K = 4 leaves a stage empty"));

  CompressionOptions bad;
  bad.allowed_stage_counts = {2, 0};
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { compress_stage_count(costs, 0, 4, 2.0, bad); }),
                       "allowed_stage_counts[1] = 0 is not a positive"));
  bad.allowed_stage_counts = {2, 2};
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { compress_stage_count(costs, 0, 4, 2.0, bad); }),
                       "allowed_stage_counts[1] = 2 appears twice"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { compress_stage_count(costs, 0, 0, 2.0, halving); }),
                       "current stage count 0"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { compress_stage_count({}, 0, 2, 2.0, halving); }), "empty"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { compress_stage_count(costs, 0, 2, NAN, halving); }),
                       "reference largest stage cost"));
}

TEST(MicroBatches, CandidatesDefaultsAndMeasuredChoice) {
  EXPECT_EQ(default_micro_batch_candidates(8, 400), (std::vector<int>{8, 16}));
  EXPECT_EQ(default_micro_batch_candidates(2, 64), (std::vector<int>{2, 4, 8, 16}));
  EXPECT_EQ(default_micro_batch_candidates(1, 6), (std::vector<int>{1, 2}));
  EXPECT_EQ(default_micro_batch_candidates(3, 10), (std::vector<int>{5, 10})) << "divisors of 10 in [3, 24]";
  EXPECT_EQ(default_micro_batch_candidates(4, 3), (std::vector<int>{3})) << "batch smaller than K";
  EXPECT_EQ(default_micro_batches(1, 400), 1);
  EXPECT_EQ(default_micro_batches(8, 400), 16);
  EXPECT_EQ(default_micro_batches(2, 64), 4);
  EXPECT_EQ(default_micro_batches(3, 10), 10);
  EXPECT_EQ(default_micro_batches(4, 3), 3);

  // The paper's K = 8 profile, M = K..6K: 368, 410, 386, 340, 298, 286 samples/s.
  MicroBatchTable table;
  const double rates[] = {368, 410, 386, 340, 298, 286};
  for (int m = 1; m <= 6; ++m) table.record(8, 8 * m, rates[m - 1]);
  EXPECT_EQ(table.best(8), 16);
  EXPECT_FALSE(table.best(4).has_value());
  EXPECT_EQ(table.unmeasured(8, 400), std::vector<int>{});
  EXPECT_EQ(table.unmeasured(4, 400), (std::vector<int>{4, 8, 16}));
  table.record(4, 8, 500.0);
  table.record(4, 16, 500.0);
  EXPECT_EQ(table.best(4), 8) << "ties go to the smaller M";
  table.record(4, 16, 501.0);
  EXPECT_EQ(table.best(4), 16) << "a new measurement replaces the old one";
  EXPECT_EQ(table.unmeasured(4, 400), (std::vector<int>{4}));

  EXPECT_TRUE(contains(error_message<ConfigError>([] { best_micro_batches({}); }), "no throughput measured"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { table.record(4, 0, 1.0); }), "M = 0"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { table.record(4, 2, -1.0); }), "throughput -1"));
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { table.record(0, 2, 1.0); }), "stage count 0"));
  EXPECT_TRUE(contains(error_message<ConfigError>([] { default_micro_batches(2, 0); }), "per-pipeline batch 0"));
}

TEST(CostModel, PartitionCostsCountTheFrozenForwardNotServedFromTheCache) {
  std::vector<SubLayerCost> s = {sub("embedding", 600), sub("block0.attention", 1200), sub("block0.mlp", 2400),
                                 sub("head", 60)};
  s = with_frozen_blocks(s, 1);
  CostModelOptions o;
  o.basis = CostBasis::kParameters;
  o.frozen_cost_factor = 0.0;
  // kLambda (the default): the balance costs themselves.
  EXPECT_EQ(partition_costs(s, o), balance_costs(s, o));
  EXPECT_EQ(balance_costs(s, o), (std::vector<double>{0.0, 0.0, 0.0, 60.0}));
  o.frozen_balance = FrozenBalance::kForward;
  EXPECT_EQ(partition_costs(s, o), (std::vector<double>{200.0, 400.0, 800.0, 60.0}));
  EXPECT_EQ(balance_costs(s, o), (std::vector<double>{0.0, 0.0, 0.0, 60.0})) << "compression ignores it";
  o.served_share = 0.75;
  EXPECT_EQ(partition_costs(s, o), (std::vector<double>{50.0, 100.0, 200.0, 60.0}));
  // Measured: the forward time alone, scaled the same way.
  for (SubLayerCost& c : s) {
    c.forward_seconds = 0.001 * static_cast<double>(c.parameters);
    c.backward_seconds = 0.002 * static_cast<double>(c.parameters);
  }
  o.basis = CostBasis::kMeasuredTime;
  const std::vector<double> measured = partition_costs(s, o);
  EXPECT_DOUBLE_EQ(measured[1], 0.25 * 1.2);
  EXPECT_DOUBLE_EQ(measured[3], 0.06 + 0.12);
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    o.served_share = bad;
    EXPECT_TRUE(contains(error_message<ConfigError>([&] { partition_costs(s, o); }), "served_share"));
  }
}

TEST(Plan, PureFunctionOfItsInputs) {
  PlanInputs in;
  in.sublayers = with_frozen_blocks(vit_b16(), 7);
  in.initial_stages = 8;
  in.current_stages = 8;
  in.cost.frozen_cost_factor = 0.0;
  in.pipeline_batch_by_stages = {{8, 400}, {4, 200}, {2, 100}, {1, 50}};
  const Plan plan = make_plan(in);
  EXPECT_EQ(plan.stages, 4);
  EXPECT_EQ(plan.frozen_sublayers, 15);
  EXPECT_EQ(plan.micro_batches, 8) << "untuned default: smallest candidate >= 2K for batch 200";
  // Stage 0 holds the frozen prefix (cost 0) and the first attention/MLP/attention.
  EXPECT_EQ(ends_of(plan.partition), (std::vector<int>{17, 20, 23, 26})) << describe(plan);
  EXPECT_DOUBLE_EQ(max_stage_cost(plan.partition), 11800000.0);
  EXPECT_EQ(describe(plan).substr(0, 22), "K=4 M=8 frozen=15 | [0");

  // Equal inputs, equal plans; a measured table changes only M.
  EXPECT_EQ(make_plan(in), plan);
  PlanInputs tuned = in;
  tuned.measured.record(4, 4, 900.0);
  tuned.measured.record(4, 16, 700.0);
  tuned.measured.record(8, 8, 9999.0);  // another K: irrelevant
  Plan expected = plan;
  expected.micro_batches = 4;
  EXPECT_EQ(make_plan(tuned), expected);
  EXPECT_NE(make_plan(tuned), plan);

  // Counting the frozen forward moves the partition, never K: f = 7 frozen
  // blocks' forward (15 sub-layers at 1/3 of their parameters, 16.8 M)
  // outweighs any other stage, so stage 0 keeps the pinned prefix alone.
  PlanInputs forward = in;
  forward.cost.frozen_balance = FrozenBalance::kForward;
  const Plan counted = make_plan(forward);
  EXPECT_EQ(counted.stages, 4) << "compression still uses lambda_frozen = 0";
  EXPECT_EQ(counted.partition[0].end, 15) << describe(counted);
  EXPECT_LT(max_stage_cost(std::vector<Stage>(counted.partition.begin() + 1, counted.partition.end())), 1.5e7);
  // Fully served from the cache, the prefix costs nothing again.
  forward.cost.served_share = 1.0;
  EXPECT_EQ(make_plan(forward).partition, plan.partition);

  // Errors.
  PlanInputs bad = in;
  bad.pipeline_batch_by_stages.erase(4);
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { make_plan(bad); }), "no per-pipeline batch given for K = 4"));
  bad = in;
  bad.current_stages = 16;
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { make_plan(bad); }), "current stage count K = 16"));
  bad = in;
  bad.initial_stages = 27;
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { make_plan(bad); }), "K0 = 27"));
  bad = tuned;
  bad.measured.record(4, 3, 5000.0);
  EXPECT_TRUE(contains(error_message<ConfigError>([&] { make_plan(bad); }),
                       "fastest measured M = 3 for K = 4 does not divide the per-pipeline batch 200"));
}

}  // namespace
}  // namespace pipet
