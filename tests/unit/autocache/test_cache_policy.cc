// The on/off/auto decision with hysteresis and the cached-view selection.
#include "autocache/cache_policy.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

namespace pipet {
namespace {

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(CachePolicy, AutoFollowsMeasurementsWithHysteresisAndFixedModesObey) {
  CachePolicyOptions autoo;  // auto, margin 0.1
  // forward 10 ms: enable below 9 ms, disable above 11 ms.
  struct Step {
    double read;
    bool expected;
  };
  const std::vector<Step> steps = {{12e-3, false}, {9.5e-3, false}, {8.9e-3, true}, {10.5e-3, true},
                                   {10.9e-3, true}, {11.2e-3, false}, {9.5e-3, false}, {1e-3, true}};
  bool enabled = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const CacheDecision d = decide_cache(autoo, enabled, {3, 10e-3, steps[i].read});
    EXPECT_EQ(d.enabled, steps[i].expected) << "step " << i << ": " << d.reason;
    EXPECT_TRUE(has(d.reason, "depth 3")) << d.reason;
    EXPECT_TRUE(has(d.reason, "10.000 ms")) << d.reason;
    enabled = d.enabled;
  }
  // The same timings at a shallow and at a deep depth decide the same way: no depth threshold.
  EXPECT_TRUE(decide_cache(autoo, false, {1, 5e-3, 1e-3}).enabled);
  EXPECT_FALSE(decide_cache(autoo, true, {11, 1e-3, 5e-3}).enabled);
  EXPECT_FALSE(decide_cache(autoo, false, {0, 5e-3, 1e-3}).enabled);  // nothing frozen
  // Timings from a shallower depth (right after a freeze change) can only
  // enable: a deeper prefix costs at least that forward time to run.
  const CacheDecision shallower_faster = decide_cache(autoo, false, {7, 5e-3, 1e-3, 5});
  EXPECT_TRUE(shallower_faster.enabled) << shallower_faster.reason;
  EXPECT_TRUE(has(shallower_faster.reason, "timed at frozen depth 5")) << shallower_faster.reason;
  const CacheDecision shallower_slower = decide_cache(autoo, true, {7, 1e-3, 5e-3, 5});
  EXPECT_TRUE(shallower_slower.enabled) << "a lower bound cannot show that reading is slower: "
                                        << shallower_slower.reason;
  EXPECT_TRUE(has(shallower_slower.reason, "until timed at this depth")) << shallower_slower.reason;
  EXPECT_FALSE(decide_cache(autoo, false, {7, 1e-3, 5e-3, 5}).enabled);
  EXPECT_FALSE(decide_cache(autoo, true, {7, 1e-3, 5e-3, 7}).enabled) << "timed at the depth itself";
  // Unusable timings keep the state.
  EXPECT_TRUE(decide_cache(autoo, true, {4, NAN, 1e-3}).enabled);
  EXPECT_FALSE(decide_cache(autoo, false, {4, 1e-3, -1.0}).enabled);
  EXPECT_TRUE(has(decide_cache(autoo, false, {4, 1e-3, -1.0}).reason, "unusable"));
  // margin 0: a strict comparison.
  CachePolicyOptions strict;
  strict.margin = 0.0;
  EXPECT_TRUE(decide_cache(strict, false, {2, 10e-3, 9.99e-3}).enabled);
  EXPECT_FALSE(decide_cache(strict, true, {2, 10e-3, 10.01e-3}).enabled);
  // Fixed modes ignore timings.
  CachePolicyOptions on;
  on.mode = CacheMode::kOn;
  EXPECT_TRUE(decide_cache(on, false, {2, 1e-3, 1.0}).enabled);
  CachePolicyOptions off;
  off.mode = CacheMode::kOff;
  EXPECT_FALSE(decide_cache(off, true, {2, 1.0, 1e-6}).enabled);

  EXPECT_EQ(parse_cache_mode("auto"), CacheMode::kAuto);
  EXPECT_EQ(parse_cache_mode("on"), CacheMode::kOn);
  EXPECT_STREQ(cache_mode_name(CacheMode::kOff), "off");
  EXPECT_TRUE(has(testing::error_message<ConfigError>([] { parse_cache_mode("sometimes"); }), "autocache.mode"));
  CachePolicyOptions bad;
  bad.margin = 1.0;
  EXPECT_TRUE(has(testing::error_message<ConfigError>([&] { decide_cache(bad, false, {1, 1, 1}); }), "margin"));
  bad.margin = NAN;
  EXPECT_TRUE(has(testing::error_message<ConfigError>([&] { validate_cache_policy_options(bad); }), "margin"));
}

TEST(CachePolicy, ViewIdsAreDeterministicInRangeAndSpreadOverEpochs) {
  for (uint64_t sample = 0; sample < 50; ++sample) {
    for (int epoch = 0; epoch < 10; ++epoch) EXPECT_EQ(cache_view_id(42, epoch, sample, 1), 0);
  }
  std::vector<int> counts(4, 0);
  for (uint64_t sample = 0; sample < 1000; ++sample) {
    std::set<int> seen;
    for (int epoch = 0; epoch < 16; ++epoch) {
      const int view = cache_view_id(42, epoch, sample, 4);
      ASSERT_GE(view, 0);
      ASSERT_LT(view, 4);
      EXPECT_EQ(view, cache_view_id(42, epoch, sample, 4));
      ++counts[view];
      seen.insert(view);
    }
    EXPECT_GE(seen.size(), 2u) << "sample " << sample << " always drew the same view";
  }
  for (int c : counts) EXPECT_NEAR(c, 4000, 300);  // 16000 draws over 4 views
  // The seed changes the assignment.
  int differ = 0;
  for (uint64_t sample = 0; sample < 100; ++sample) differ += cache_view_id(1, 0, sample, 4) != cache_view_id(2, 0, sample, 4);
  EXPECT_GT(differ, 50);
  EXPECT_TRUE(has(testing::error_message<ConfigError>([] { cache_view_id(1, 0, 0, 0); }), "cache_views"));
}

}  // namespace
}  // namespace pipet
