// Smoothing the freeze statistics over past decision intervals: the pooled
// RMS, the window's length, checkpoint round trips that decide identically,
// that smoothing steadies the argmin under noise, and every error.
#include "freeze/freeze_policy.h"
#include "freeze/gradient_window.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace pipet {
namespace {

using testing::error_message;

TEST(GradientNormWindow, PoolsTheLastIntervalsStepWeighted) {
  // Window 1 is the interval alone: exactly rms_block_norms.
  GradientNormWindow single(2, 1);
  EXPECT_EQ(single.add({8.0, 2.0}, 2), rms_block_norms({8.0, 2.0}, 2));
  EXPECT_EQ(single.add({3.0, 12.0}, 3), rms_block_norms({3.0, 12.0}, 3));
  EXPECT_TRUE(single.history().empty()) << "window 1 carries nothing to the next decision";

  // Window 3: sqrt(sum of squared sums / sum of steps) over the newest three.
  GradientNormWindow window(2, 3);
  std::vector<double> norms = window.add({4.0, 1.0}, 1);  // only one interval so far
  EXPECT_DOUBLE_EQ(norms[0], 2.0);
  EXPECT_DOUBLE_EQ(norms[1], 1.0);
  norms = window.add({36.0, 0.0}, 9);  // a long interval weighs more than a short one
  EXPECT_DOUBLE_EQ(norms[0], std::sqrt(40.0 / 10.0));
  EXPECT_DOUBLE_EQ(norms[1], std::sqrt(1.0 / 10.0));
  norms = window.add({0.0, 0.0}, 0);  // an empty interval adds nothing
  EXPECT_DOUBLE_EQ(norms[0], 2.0);
  norms = window.add({10.0, 20.0}, 10);  // the first interval ({4, 1}, 1) has left the window
  EXPECT_DOUBLE_EQ(norms[0], std::sqrt(46.0 / 19.0));
  EXPECT_DOUBLE_EQ(norms[1], std::sqrt(20.0 / 19.0));
  ASSERT_EQ(window.history().size(), 2u);
  EXPECT_EQ(window.history().front().steps, 0);
  EXPECT_EQ(window.history().back().squared_sums, (std::vector<double>{10.0, 20.0}));

  // No steps anywhere in the window: NaN, so the adaptive rule freezes nothing new.
  GradientNormWindow empty(3, 2);
  for (double n : empty.add({0.0, 0.0, 0.0}, 0)) EXPECT_TRUE(std::isnan(n));
  // NaN statistics of one block stay that block's (never its argmin).
  GradientNormWindow with_nan(2, 2);
  norms = with_nan.add({std::nan(""), 4.0}, 1);
  EXPECT_TRUE(std::isnan(norms[0]));
  EXPECT_DOUBLE_EQ(norms[1], 2.0);
}

TEST(GradientNormWindow, RestoredHistoryDecidesLikeTheUninterruptedRun) {
  constexpr int kBlocks = 6;
  FreezeOptions options;
  options.mode = FreezeMode::kPaper;
  options.alpha = 0.5;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> uniform(0.5, 2.0);
  std::vector<std::vector<double>> sums(8, std::vector<double>(kBlocks));
  for (auto& interval : sums)
    for (double& s : interval) s = uniform(rng);

  FreezePolicy straight(options, kBlocks);
  GradientNormWindow straight_window(kBlocks, 3);
  std::vector<int> decided;
  FreezeState saved_state;
  std::vector<GradientNormWindow::Interval> saved_history;
  for (size_t t = 0; t < sums.size(); ++t) {
    decided.push_back(straight.decide(straight_window.add(sums[t], 5)));
    if (t == 3) {
      saved_state = straight.state();
      saved_history.assign(straight_window.history().begin(), straight_window.history().end());
    }
  }
  ASSERT_EQ(saved_history.size(), 2u);

  FreezePolicy resumed(options, kBlocks);
  resumed.restore(saved_state);
  GradientNormWindow resumed_window(kBlocks, 3);
  resumed_window.restore(saved_history);
  for (size_t t = 4; t < sums.size(); ++t) {
    EXPECT_EQ(resumed.decide(resumed_window.add(sums[t], 5)), decided[t]) << "decision " << t + 1;
  }
  EXPECT_EQ(resumed.state(), straight.state());
  // Without the history the resumed run would see other norms.
  GradientNormWindow forgetful(kBlocks, 3);
  EXPECT_NE(forgetful.add(sums[4], 5), [&] {
    GradientNormWindow w(kBlocks, 3);
    w.restore(saved_history);
    return w.add(sums[4], 5);
  }());
  // The open interval of a rank comes back too (GradientNormTracker::restore).
  GradientNormTracker tracker(kBlocks);
  tracker.add_step(std::vector<double>(kBlocks, 1.0));
  tracker.add_step(std::vector<double>(kBlocks, 3.0));
  GradientNormTracker restored_tracker(kBlocks);
  restored_tracker.restore(tracker.squared_sums(), tracker.steps());
  EXPECT_EQ(restored_tracker.steps(), 2);
  EXPECT_EQ(restored_tracker.norms(), tracker.norms());
  EXPECT_NE(error_message<ConfigError>([&] { restored_tracker.restore({1.0}, 1); }).find("for 1 blocks"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { restored_tracker.restore(tracker.squared_sums(), -1); })
                .find("step count -1 is negative"),
            std::string::npos);
  EXPECT_EQ(restored_tracker.steps(), 2) << "a rejected restore changes nothing";
  // A smaller window on resume keeps the newest intervals that fit.
  GradientNormWindow smaller(kBlocks, 2);
  smaller.restore(saved_history);
  ASSERT_EQ(smaller.history().size(), 1u);
  EXPECT_EQ(smaller.history().front(), saved_history.back());
}

// Block 0 truly has the smallest norm (1.0 vs 1.1 and above), but each
// interval sees only a few noisy steps: a longer window finds it more often.
TEST(GradientNormWindow, SmoothingSteadiesTheArgminUnderNoise) {
  constexpr int kBlocks = 4;
  constexpr int kStepsPerInterval = 4;
  constexpr int kDecisions = 400;
  const std::vector<double> true_norms = {1.0, 1.1, 1.2, 1.3};
  auto wrong_argmins = [&](int window_length) {
    std::mt19937_64 rng(2021);
    std::normal_distribution<double> noise(0.0, 0.35);
    GradientNormWindow window(kBlocks, window_length);
    int wrong = 0;
    for (int t = 0; t < kDecisions; ++t) {
      std::vector<double> sums(kBlocks, 0.0);
      for (int s = 0; s < kStepsPerInterval; ++s)
        for (int l = 0; l < kBlocks; ++l) {
          const double g = true_norms[l] * (1.0 + noise(rng));
          sums[l] += g * g;
        }
      const std::vector<double> norms = window.add(sums, kStepsPerInterval);
      int best = 0;
      for (int l = 1; l < kBlocks; ++l)
        if (norms[l] < norms[best]) best = l;
      if (t >= window_length && best != 0) ++wrong;  // once the window is full
    }
    return wrong;
  };
  const int wrong1 = wrong_argmins(1);
  const int wrong2 = wrong_argmins(2);
  const int wrong4 = wrong_argmins(4);
  EXPECT_GT(wrong1, kDecisions / 10) << "the scenario must be noisy for the comparison to mean anything";
  EXPECT_LT(wrong2, wrong1);
  EXPECT_LT(wrong4, wrong2);
}

TEST(GradientNormWindow, RejectsBadInputsWithTheirNames) {
  EXPECT_NE(error_message<ConfigError>([] { GradientNormWindow(4, 0); }).find("freeze.smoothing_window = 0"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([] { GradientNormWindow(0, 2); }).find("0 transformer blocks"),
            std::string::npos);
  GradientNormWindow window(3, 2);
  EXPECT_NE(error_message<ConfigError>([&] { window.add({1.0, 2.0}, 1); }).find("2 blocks, but the model has 3"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { window.add({1.0, -2.0, 0.0}, 1); }).find("block 1 = -2 is negative"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { window.add({1.0, 2.0, 0.0}, -1); }).find("negative step count -1"),
            std::string::npos);
  EXPECT_TRUE(window.history().empty()) << "a rejected interval is not kept";
  const std::string restored = error_message<ConfigError>([&] {
    window.restore({GradientNormWindow::Interval{{1.0, 1.0}, 3}});
  });
  EXPECT_NE(restored.find("checkpointed decision interval holds statistics for 2 blocks"), std::string::npos)
      << restored;
}

}  // namespace
}  // namespace pipet
