#include "runtime/data/sampler.h"

#include "runtime/core/errors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

namespace pipet {
namespace {

std::vector<std::vector<int64_t>> drain(EpochSampler& sampler) {
  std::vector<std::vector<int64_t>> batches;
  for (auto b = sampler.next_batch(); !b.empty(); b = sampler.next_batch()) batches.push_back(b);
  return batches;
}

template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const DataError& e) {
    return std::string("DataError: ") + e.what();
  }
  return "no error";
}

TEST(Sampler, EveryIndexExactlyOncePerEpoch) {
  EpochSampler sampler(103, 10, 5, /*shuffle=*/true, /*drop_last=*/false);
  EXPECT_EQ(sampler.batches_per_epoch(), 11);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    sampler.start_epoch(epoch);
    auto batches = drain(sampler);
    ASSERT_EQ(batches.size(), 11u);
    EXPECT_EQ(batches.back().size(), 3u);
    std::vector<int64_t> all;
    for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
    std::sort(all.begin(), all.end());
    std::vector<int64_t> expected(103);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(all, expected) << "epoch " << epoch;
    EXPECT_TRUE(sampler.epoch_finished());
    EXPECT_TRUE(sampler.next_batch().empty());
  }
}

TEST(Sampler, DropLastReturnsOnlyFullBatches) {
  EpochSampler sampler(103, 10, 5, true, /*drop_last=*/true);
  EXPECT_EQ(sampler.batches_per_epoch(), 10);
  auto batches = drain(sampler);
  ASSERT_EQ(batches.size(), 10u);
  std::vector<int64_t> all;
  for (const auto& b : batches) {
    EXPECT_EQ(b.size(), 10u);
    all.insert(all.end(), b.begin(), b.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end());
}

TEST(Sampler, PermutationDiffersPerEpochAndIsReproducible) {
  EpochSampler a(50, 50, 9, true, false);
  const auto epoch0 = a.next_batch();
  a.start_epoch(1);
  const auto epoch1 = a.next_batch();
  EXPECT_NE(epoch0, epoch1);
  a.start_epoch(0);
  EXPECT_EQ(a.next_batch(), epoch0);

  EpochSampler b(50, 50, 9, true, false);
  EXPECT_EQ(b.next_batch(), epoch0);
  EpochSampler other_seed(50, 50, 10, true, false);
  EXPECT_NE(other_seed.next_batch(), epoch0);
}

TEST(Sampler, OrderIsAPureFunctionPinnedAcrossPlatforms) {
  // From an independent reference implementation of the Fisher-Yates draw.
  EXPECT_EQ(epoch_order(7, 0, 10, true), (std::vector<int64_t>{0, 3, 9, 7, 1, 5, 2, 6, 8, 4}));
  EXPECT_EQ(epoch_order(7, 1, 10, true), (std::vector<int64_t>{1, 8, 0, 5, 6, 9, 3, 4, 7, 2}));
  EpochSampler sampler(10, 4, 7, true, false);
  sampler.start_epoch(1);
  EXPECT_EQ(sampler.order(), epoch_order(7, 1, 10, true));
  EXPECT_EQ(sampler.next_batch(), (std::vector<int64_t>{1, 8, 0, 5}));
}

TEST(Sampler, NoShuffleVisitsInIndexOrder) {
  EpochSampler sampler(7, 3, 1, /*shuffle=*/false, false);
  sampler.start_epoch(4);
  EXPECT_EQ(drain(sampler),
            (std::vector<std::vector<int64_t>>{{0, 1, 2}, {3, 4, 5}, {6}}));
}

TEST(Sampler, ResumeFromMidEpochStateGivesTheSameRemainingBatches) {
  EpochSampler original(97, 8, 21, true, true);
  original.start_epoch(2);
  for (int i = 0; i < 5; ++i) original.next_batch();
  const EpochSampler::State saved = original.state();
  EXPECT_EQ(saved.epoch, 2);
  EXPECT_EQ(saved.position, 40);
  EXPECT_EQ(original.remaining_batches(), 7);
  const auto rest = drain(original);
  ASSERT_EQ(rest.size(), 7u);

  EpochSampler resumed(97, 8, 21, true, true);
  resumed.set_state(saved);
  EXPECT_EQ(resumed.state(), saved);
  EXPECT_EQ(drain(resumed), rest);
  // The following epoch continues identically too.
  original.start_epoch(3);
  resumed.start_epoch(3);
  EXPECT_EQ(drain(resumed), drain(original));
}

TEST(Sampler, ResumeWithAnotherBatchSizeContinuesFromTheSamePosition) {
  EpochSampler original(20, 6, 4, true, false);
  original.next_batch();
  EpochSampler resumed(20, 4, 4, true, false);
  resumed.set_state(original.state());
  std::vector<int64_t> rest;
  for (const auto& b : drain(resumed)) rest.insert(rest.end(), b.begin(), b.end());
  const auto& order = original.order();
  EXPECT_EQ(rest, std::vector<int64_t>(order.begin() + 6, order.end()));
}

TEST(Sampler, BadSettingsNameTheKey) {
  EXPECT_NE(error_message([] { EpochSampler(10, 0, 1, true, false); }).find("train.batch_size must be >= 1, got 0"),
            std::string::npos);
  const std::string small = error_message([] { EpochSampler(5, 8, 1, true, true); });
  EXPECT_NE(small.find("train.batch_size=8"), std::string::npos) << small;
  EXPECT_NE(small.find("(5 samples)"), std::string::npos) << small;
  // Without drop_last the single short batch is fine.
  EpochSampler ok(5, 8, 1, true, false);
  EXPECT_EQ(ok.next_batch().size(), 5u);
  const std::string eval = error_message([] { EpochSampler(5, -1, 1, false, false, "eval.batch_size"); });
  EXPECT_NE(eval.find("eval.batch_size must be >= 1"), std::string::npos) << eval;
  EXPECT_NE(error_message([] { EpochSampler(0, 4, 1, true, false); }).find("no samples"),
            std::string::npos);
}

TEST(Sampler, StateBeyondTheDatasetIsRejected) {
  EpochSampler sampler(10, 2, 1, true, false);
  const std::string message = error_message([&] { sampler.set_state({1, 11}); });
  EXPECT_NE(message.find("DataError: sampler state (epoch 1, position 11)"), std::string::npos)
      << message;
  EXPECT_NE(error_message([&] { sampler.set_state({-1, 0}); }).find("DataError"),
            std::string::npos);
  // A state at the very end of an epoch is valid: the epoch is finished.
  sampler.set_state({3, 10});
  EXPECT_TRUE(sampler.epoch_finished());
  EXPECT_TRUE(sampler.next_batch().empty());
}

}  // namespace
}  // namespace pipet
