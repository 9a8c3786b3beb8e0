// The freeze rule: published schedules, the paper term's argmin semantics,
// the adaptive rule's evidence (settle, hold, bound), limits, resumption,
// the gradient-norm tracker and every error.
#include "freeze/freeze_policy.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace pipet {
namespace {

using testing::error_message;

std::vector<int> run_policy(FreezePolicy& policy, int decisions, const std::vector<double>& norms = {}) {
  std::vector<int> frozen = {policy.frozen()};
  for (int t = 0; t < decisions; ++t) frozen.push_back(policy.decide(norms));
  return frozen;
}

FreezeState state_of(int decisions, int frozen, double bound) {
  FreezeState state;
  state.decisions = decisions;
  state.frozen = frozen;
  state.bound = bound;
  return state;
}

FreezeOptions options_with(FreezeMode mode, double alpha) {
  FreezeOptions o;
  o.mode = mode;
  o.alpha = alpha;
  return o;
}

TEST(FreezeRule, BoundReproducesPublishedSchedulesForAnyDepth) {
  // REFERENCE.md, L = 12, bound only.
  EXPECT_EQ(freeze_bound_schedule(1.0 / 3.0, 12, 8), (std::vector<int>{0, 4, 7, 9, 10, 11, 11, 12, 12}));
  EXPECT_EQ(freeze_bound_schedule(0.5, 12, 5), (std::vector<int>{0, 6, 9, 11, 12, 12}));
  // The schedule mode of the policy is the same thing, and ignores norms.
  FreezePolicy schedule(options_with(FreezeMode::kSchedule, 1.0 / 3.0), 12);
  EXPECT_EQ(run_policy(schedule, 7, std::vector<double>(12, 1.0)), (std::vector<int>{0, 4, 7, 9, 10, 11, 11, 12}));
  // BERT-large depth: no hard-coded 12; ceil(24 * (1 - (2/3)^T)).
  EXPECT_EQ(freeze_bound_schedule(1.0 / 3.0, 24, 8), (std::vector<int>{0, 8, 14, 17, 20, 21, 22, 23, 24}));
  // The closed form ceil(L * (1 - (1 - alpha)^T)) for many depths and alphas.
  for (double alpha : {0.2, 0.25, 1.0 / 3.0, 0.4, 0.5, 1.0}) {
    for (int L = 1; L <= 48; ++L) {
      const auto got = freeze_bound_schedule(alpha, L, 30);
      for (int T = 0; T <= 30; ++T) {
        const long double bound = L * (1.0L - std::pow(1.0L - alpha, T));
        const int expected = std::min(L, static_cast<int>(std::ceil(bound - 1e-9L)));
        ASSERT_EQ(got[T], expected) << "alpha " << alpha << " L " << L << " T " << T;
      }
    }
  }
  // alpha = 1 freezes everything at the first decision.
  EXPECT_EQ(freeze_bound_schedule(1.0, 6, 2), (std::vector<int>{0, 6, 6}));
  // kNone never freezes.
  FreezePolicy none(options_with(FreezeMode::kNone, 0.5), 12);
  EXPECT_EQ(run_policy(none, 3), (std::vector<int>{0, 0, 0, 0}));
}

TEST(FreezeRule, PaperTermFreezesUpToAndIncludingTheSmallestNorm) {
  FreezePolicy policy(options_with(FreezeMode::kPaper, 1.0 / 3.0), 12);
  std::vector<double> norms(12, 5.0);
  // Decision 1: bound ceil(4) = 4; smallest norm at block 2 -> f = 3.
  norms[2] = 1.0;
  norms[7] = 1.0;  // tie with a later block: the lowest wins
  EXPECT_EQ(policy.decide(norms), 3);
  EXPECT_DOUBLE_EQ(policy.state().bound, 4.0);
  // Decision 2: the bound grows from the integer f = 3: 3 + 9/3 = 6. The
  // smallest active norm is at block 10 (blocks 0-2 are frozen, their tiny
  // norms ignored), so the bound wins: f = 6.
  norms = std::vector<double>(12, 5.0);
  norms[0] = norms[1] = norms[2] = 0.0;
  norms[10] = 0.5;
  EXPECT_EQ(policy.decide(norms), 6);
  EXPECT_DOUBLE_EQ(policy.state().bound, 6.0);
  // Decision 3: bound 6 + 6/3 = 8. Block 6 is NaN (never the argmin), block 7
  // is the smallest finite one -> f = 8.
  norms = std::vector<double>(12, 5.0);
  norms[6] = std::nan("");
  norms[7] = 2.0;
  norms[9] = INFINITY;
  EXPECT_EQ(policy.decide(norms), 8);
  // Decision 4: no finite active norm -> nothing new freezes; the bound
  // still moves (8 + 4/3) but the next one grows from f = 8 again.
  EXPECT_EQ(policy.decide(std::vector<double>(12, std::nan(""))), 8);
  EXPECT_NEAR(policy.state().bound, 8.0 + 4.0 / 3.0, 1e-12);
  // Decision 5: bound 9.33 -> 10; smallest at the first active block -> 9.
  norms = std::vector<double>(12, 5.0);
  norms[8] = 0.1;
  EXPECT_EQ(policy.decide(norms), 9);
  EXPECT_EQ(policy.state().decisions, 5);
  // No statistics at all (zero steps) behaves like all-NaN.
  EXPECT_EQ(policy.decide(rms_block_norms(std::vector<double>(12, 0.0), 0)), 9);

  // Property check on random norms: monotone, never ahead of the bound
  // alone, and at least one block per decision while the bound allows it.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int L = 1 + static_cast<int>(rng() % 30);
    const double alpha = 0.05 + (rng() % 95) / 100.0;
    FreezePolicy adaptive(options_with(FreezeMode::kPaper, alpha), L);
    const auto bound_only = freeze_bound_schedule(alpha, L, 12);
    for (int T = 1; T <= 12; ++T) {
      std::vector<double> g(L);
      for (double& x : g) x = rng() % 10 == 0 ? std::nan("") : (rng() % 1000) / 100.0;
      const int before = adaptive.frozen();
      bool any_finite = false;
      for (int l = before; l < L; ++l) any_finite = any_finite || std::isfinite(g[l]);
      const int after = adaptive.decide(g);
      ASSERT_GE(after, before);
      ASSERT_LE(after, bound_only[T]) << "L " << L << " alpha " << alpha << " T " << T;
      const bool bound_allows = std::ceil(adaptive.state().bound - 1e-9) > before;
      if (any_finite && bound_allows) {
        ASSERT_GT(after, before) << "the bound allows it and an active block has a norm";
      } else {
        ASSERT_EQ(after, before);
      }
    }
  }
}

// The evidence rule: a block joins the prefix only once its norm has
// settled (changed by less than the tolerance since the last decision),
// only as a run from the first active block, never past the bound.
TEST(FreezeRule, AdaptiveFreezesOnlyBlocksWhoseNormHasSettled) {
  FreezeOptions options = options_with(FreezeMode::kAdaptive, 0.5);
  options.tolerance = 0.1;
  options.patience = 1;
  FreezePolicy policy(options, 6);
  // Decision 1 has nothing to compare with: it records, freezes nothing.
  EXPECT_EQ(policy.decide({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}), 0);
  EXPECT_EQ(policy.state().reference_norms, (std::vector<double>{1.0, 2.0, 3.0, 4.0, 5.0, 6.0}));
  // Still falling everywhere (-20 %): hold.
  EXPECT_EQ(policy.decide({0.8, 1.6, 2.4, 3.2, 4.0, 4.8}), 0);
  // Blocks 0, 1 and 3 settle (within 10 %); block 2 still moves: the
  // prefix stops at 2, block 3 must wait for block 2.
  EXPECT_EQ(policy.decide({0.82, 1.55, 3.0, 3.3, 2.0, 4.0}), 2);
  // Everything settles, but the bound (alpha 1/2 of the 4 active blocks
  // from f = 2: 4) caps the growth.
  EXPECT_EQ(policy.decide({0.0, 0.0, 3.0, 3.3, 2.0, 4.0}), 4);
  // A settled block above a moving one stays active.
  EXPECT_EQ(policy.decide({0.0, 0.0, 0.0, 0.0, 3.0, 4.1}), 4);
  // Non-finite norms (no statistics) never count as settled.
  EXPECT_EQ(policy.decide({0.0, 0.0, 0.0, 0.0, std::nan(""), 4.1}), 4);
  EXPECT_EQ(policy.decide({0.0, 0.0, 0.0, 0.0, 3.0, 4.1}), 4) << "no reference for block 4 yet";
  // Both settled now; the bound grows from f = 4 by half of the 2 active
  // blocks per decision: 5, then 6.
  EXPECT_EQ(policy.decide({0.0, 0.0, 0.0, 0.0, 3.0, 4.1}), 5);
  EXPECT_EQ(policy.decide({0.0, 0.0, 0.0, 0.0, 0.0, 4.1}), 6);

  // The cap and the warm-up hold as for the other rules; a resumed policy
  // continues with the same reference.
  options.max_frozen_fraction = 0.5;
  options.warmup_decisions = 1;
  FreezePolicy capped(options, 6);
  const std::vector<double> flat(6, 2.0);
  EXPECT_EQ(capped.decide(flat), 0) << "warm-up";
  EXPECT_EQ(capped.decide(flat), 3);  // bound 3, cap 3
  FreezePolicy resumed(options, 6);
  resumed.restore(capped.state());
  EXPECT_EQ(resumed.decide(flat), capped.decide(flat));
  EXPECT_EQ(resumed.state(), capped.state());
}

// Patience: a block must settle at several decisions in a row; a move in
// between starts its count again.
TEST(FreezeRule, AdaptiveWaitsForPatienceDecisionsInARow) {
  FreezeOptions options = options_with(FreezeMode::kAdaptive, 1.0);
  options.tolerance = 0.05;
  options.patience = 2;
  FreezePolicy policy(options, 2);
  EXPECT_EQ(policy.decide({1.0, 1.0}), 0);
  EXPECT_EQ(policy.decide({1.01, 1.5}), 0) << "block 0 settled once";
  EXPECT_EQ(policy.state().settled_decisions, (std::vector<int>{1, 0}));
  EXPECT_EQ(policy.decide({1.2, 1.51}), 0) << "block 0 moved: its count starts again";
  EXPECT_EQ(policy.decide({1.21, 1.52}), 0);
  EXPECT_EQ(policy.decide({1.22, 1.5}), 2) << "both settled twice in a row";
}

TEST(FreezeRule, AdaptiveOptionsAndStateAreChecked) {
  FreezeOptions options = options_with(FreezeMode::kAdaptive, 0.5);
  for (double bad : {0.0, 1.0, -0.1, std::nan("")}) {
    options.tolerance = bad;
    EXPECT_NE(error_message<ConfigError>([&] { FreezePolicy(options, 4); }).find("tolerance"), std::string::npos)
        << bad;
  }
  options.tolerance = 0.1;
  options.patience = 0;
  EXPECT_NE(error_message<ConfigError>([&] { FreezePolicy(options, 4); }).find("patience = 0"), std::string::npos);
  options.patience = 2;
  FreezePolicy policy(options, 4);
  FreezeState wrong;
  wrong.reference_norms = {1.0, 2.0};
  EXPECT_THROW(policy.restore(wrong), ConfigError);
  EXPECT_NE(error_message<ConfigError>([&] { policy.decide({1.0}); }).find("4 blocks"), std::string::npos);
}

TEST(FreezeRule, WarmupCapManualAndResume) {
  FreezeOptions o = options_with(FreezeMode::kSchedule, 0.5);
  o.warmup_decisions = 2;
  o.max_frozen_fraction = 0.75;
  FreezePolicy capped(o, 12);
  EXPECT_EQ(run_policy(capped, 6), (std::vector<int>{0, 0, 0, 6, 9, 9, 9}));

  FreezeOptions manual;
  manual.mode = FreezeMode::kManual;
  manual.warmup_decisions = 1;
  manual.manual_schedule = {2, 2, 5};
  FreezePolicy by_hand(manual, 6);
  EXPECT_EQ(run_policy(by_hand, 5), (std::vector<int>{0, 0, 2, 2, 5, 5}));

  // Resuming from a checkpointed state continues the same sequence.
  FreezePolicy whole(options_with(FreezeMode::kPaper, 0.4), 10);
  FreezePolicy first_half(options_with(FreezeMode::kPaper, 0.4), 10);
  std::vector<std::vector<double>> stats;
  for (int t = 0; t < 6; ++t) {
    std::vector<double> g(10);
    for (int l = 0; l < 10; ++l) g[l] = 1.0 + ((l * 7 + t * 3) % 10);
    stats.push_back(g);
  }
  std::vector<int> uninterrupted;
  for (const auto& g : stats) uninterrupted.push_back(whole.decide(g));
  std::vector<int> resumed;
  for (int t = 0; t < 3; ++t) resumed.push_back(first_half.decide(stats[t]));
  FreezePolicy second_half(options_with(FreezeMode::kPaper, 0.4), 10);
  second_half.restore(first_half.state());
  for (int t = 3; t < 6; ++t) resumed.push_back(second_half.decide(stats[t]));
  EXPECT_EQ(resumed, uninterrupted);
  EXPECT_EQ(second_half.state(), whole.state());
  EXPECT_GT(uninterrupted.back(), 0);
}

TEST(FreezeRule, GradientNormTrackerCombinesStepsAndReplicas) {
  GradientNormTracker one(3);
  one.add_step({4.0, 1.0, 0.0});
  one.add_step({16.0, 1.0, 0.0});
  EXPECT_EQ(one.steps(), 2);
  EXPECT_EQ(one.squared_sums(), (std::vector<double>{20.0, 2.0, 0.0}));
  const auto norms = one.norms();
  EXPECT_DOUBLE_EQ(norms[0], std::sqrt(10.0));
  EXPECT_DOUBLE_EQ(norms[1], 1.0);
  EXPECT_DOUBLE_EQ(norms[2], 0.0);

  // Two replicas, all-reduced by summing sums and step counts, equal one
  // tracker that saw every step.
  GradientNormTracker other(3);
  other.add_step({9.0, 0.25, 0.0});
  GradientNormTracker all(3);
  for (const auto& s : {std::vector<double>{4.0, 1.0, 0.0}, {16.0, 1.0, 0.0}, {9.0, 0.25, 0.0}}) all.add_step(s);
  std::vector<double> summed(3);
  for (int l = 0; l < 3; ++l) summed[l] = one.squared_sums()[l] + other.squared_sums()[l];
  EXPECT_EQ(rms_block_norms(summed, one.steps() + other.steps()), all.norms());

  // NaN is carried, not rejected, and makes that block's norm NaN.
  other.add_step({std::nan(""), 0.0, 0.0});
  EXPECT_TRUE(std::isnan(other.norms()[0]));
  other.reset();
  EXPECT_EQ(other.steps(), 0);
  for (double v : other.norms()) EXPECT_TRUE(std::isnan(v)) << "no steps: no statistics";
  EXPECT_EQ(other.squared_sums(), (std::vector<double>{0.0, 0.0, 0.0}));
}

TEST(FreezeRule, ErrorsNameTheParameter) {
  auto options_error = [](FreezeOptions o, int L) {
    return error_message<ConfigError>([&] { FreezePolicy p(o, L); });
  };
  EXPECT_NE(options_error(options_with(FreezeMode::kPaper, 0.0), 12).find("alpha = 0 is outside (0, 1]"),
            std::string::npos);
  EXPECT_NE(options_error(options_with(FreezeMode::kPaper, 1.5), 12).find("alpha = 1.5"), std::string::npos);
  EXPECT_NE(options_error(options_with(FreezeMode::kPaper, std::nan("")), 12).find("alpha = nan"),
            std::string::npos);
  EXPECT_NE(options_error(options_with(FreezeMode::kPaper, 0.5), 0).find("0 transformer blocks"),
            std::string::npos);
  FreezeOptions o = options_with(FreezeMode::kSchedule, 0.5);
  o.warmup_decisions = -1;
  EXPECT_NE(options_error(o, 12).find("warmup_decisions = -1"), std::string::npos);
  o.warmup_decisions = 0;
  o.max_frozen_fraction = 1.5;
  EXPECT_NE(options_error(o, 12).find("max_frozen_fraction = 1.5"), std::string::npos);
  FreezeOptions m;
  m.mode = FreezeMode::kManual;
  EXPECT_NE(options_error(m, 12).find("non-empty manual_schedule"), std::string::npos);
  m.manual_schedule = {1, 13};
  EXPECT_NE(options_error(m, 12).find("manual_schedule[1] = 13 is outside [0, 12]"), std::string::npos);
  // A smaller entry than the one before is an unfreeze, not an error.
  m.manual_schedule = {3, 2};
  FreezePolicy unfreezing(m, 12);
  EXPECT_EQ(run_policy(unfreezing, 3), (std::vector<int>{0, 3, 2, 2}));
  m.manual_schedule = {3, 10};
  m.max_frozen_fraction = 0.5;
  EXPECT_NE(options_error(m, 12).find("manual_schedule[1] = 10 exceeds max_frozen_fraction * L = 6"),
            std::string::npos);

  FreezePolicy policy(options_with(FreezeMode::kPaper, 0.5), 4);
  EXPECT_NE(error_message<ConfigError>([&] { policy.decide({1.0, 2.0}); }).find("got 2 block gradient norms"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { policy.decide({}); }).find("got 0 block gradient norms"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { policy.decide({1.0, 2.0, -0.5, 1.0}); })
                .find("block_grad_norms[2] = -0.5 is negative"),
            std::string::npos);
  EXPECT_EQ(policy.frozen(), 0) << "a rejected decision changes nothing";
  EXPECT_EQ(policy.state().decisions, 0);
  EXPECT_NE(error_message<ConfigError>([&] { policy.restore(state_of(1, 5, 2.0)); }).find("frozen 5"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { policy.restore(state_of(1, 2, std::nan(""))); }).find("bound nan"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([] { freeze_bound_schedule(0.5, 12, -1); }).find("decisions = -1"),
            std::string::npos);

  GradientNormTracker tracker(2);
  EXPECT_NE(error_message<ConfigError>([&] { tracker.add_step({1.0}); }).find("statistics for 1 blocks"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { tracker.add_step({1.0, -1.0}); }).find("block 1 = -1 is negative"),
            std::string::npos);
  EXPECT_EQ(tracker.steps(), 0);
  EXPECT_NE(error_message<ConfigError>([] { GradientNormTracker t(0); }).find("0 transformer blocks"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([] { rms_block_norms({1.0}, -1); }).find("step count -1"),
            std::string::npos);

  EXPECT_EQ(freeze_mode_from_string("schedule", "freeze.mode"), FreezeMode::kSchedule);
  EXPECT_NE(error_message<ConfigError>([] { freeze_mode_from_string("auto", "freeze.mode"); })
                .find("freeze.mode: unknown freeze mode 'auto'"),
            std::string::npos);
}

}  // namespace
}  // namespace pipet
