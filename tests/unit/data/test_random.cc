#include "runtime/core/random.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <set>

namespace pipet {
namespace {

TEST(Random, KeyZeroIsSplitMix64FromStateZero) {
  // Published SplitMix64 outputs for seed 0.
  Rng rng(0);
  EXPECT_EQ(rng.next_u64(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(rng.next_u64(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(rng.next_u64(), 0x06C45D188009454FULL);
}

TEST(Random, DerivedStreamsMatchIndependentReference) {
  // Values from an independent Python implementation of the same definitions;
  // they pin the streams so data order is the same on every platform.
  const uint64_t key = sample_key(42, StreamTag::kAugment, 3, 7);
  EXPECT_EQ(key, 0xF4FA07A438315EA1ULL);
  Rng rng(key);
  const std::array<uint64_t, 8> expected = {7, 1, 2, 8, 9, 3, 3, 7};
  for (uint64_t e : expected) EXPECT_EQ(rng.below(10), e);
}

TEST(Random, DeriveKeyDependsOnEveryPartAndItsOrder) {
  const uint64_t base = derive_key(1, {2, 3});
  EXPECT_NE(base, derive_key(1, {3, 2}));
  EXPECT_NE(base, derive_key(2, {2, 3}));
  EXPECT_NE(base, derive_key(1, {2, 3, 0}));
  EXPECT_NE(sample_key(1, StreamTag::kAugment, 0, 5), sample_key(1, StreamTag::kSampler, 0, 5));
  EXPECT_EQ(base, derive_key(1, {2, 3}));
}

TEST(Random, BelowIsInRangeAndUniform) {
  Rng rng(123);
  constexpr int kDraws = 60000;
  std::array<int, 6> counts{};
  for (int i = 0; i < kDraws; ++i) {
    const uint64_t v = rng.below(6);
    ASSERT_LT(v, 6u);
    ++counts[v];
  }
  // Expected 10000 each; 5 sigma is about 456.
  for (int c : counts) EXPECT_NEAR(c, kDraws / 6, 460);
  Rng one(5);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(one.below(1), 0u);
}

TEST(Random, BelowHandlesBoundsThatRejectOften) {
  // n = 2^63 + 1 rejects almost half of all draws; results must stay below n.
  const uint64_t n = (uint64_t{1} << 63) + 1;
  Rng rng(9);
  bool saw_high = false;
  for (int i = 0; i < 200; ++i) {
    const uint64_t v = rng.below(n);
    ASSERT_LT(v, n);
    saw_high |= v >= (uint64_t{1} << 62);
  }
  EXPECT_TRUE(saw_high);
}

TEST(Random, UniformIntCoversInclusiveRange) {
  Rng rng(77);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t v = rng.uniform_int(-3, 3);
    ASSERT_GE(v, -3);
    ASSERT_LE(v, 3);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_EQ(rng.uniform_int(5, 5), 5);
  // The full int64 range must not overflow the span computation.
  rng.uniform_int(INT64_MIN, INT64_MAX);
}

TEST(Random, UniformFloatsAreInUnitInterval) {
  Rng rng(3);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double d = rng.uniform_double();
    const float f = rng.uniform_float();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    ASSERT_GE(f, 0.0f);
    ASSERT_LT(f, 1.0f);
    sum += d;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(Random, ChanceMatchesItsRatio) {
  Rng rng(11);
  int hits = 0;
  for (int i = 0; i < 20000; ++i) hits += rng.chance(1, 4);
  EXPECT_NEAR(hits, 5000, 350);
}

}  // namespace
}  // namespace pipet
