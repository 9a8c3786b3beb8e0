// autodp.batch_policy arithmetic: the batch and LR multiplier of a replica
// count, the sampler across a mid-epoch change of the global batch, and the
// LR schedule's position in samples (it ends with the data).
#include "autodp/batch_policy.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/sampler.h"
#include "runtime/engine/lr_schedule.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

namespace pipet {
namespace {

using testing::error_message;

TEST(BatchPolicy, ReplicaBatchAndLrMultiplierFollowThePolicy) {
  // keep_global_batch: the same global batch, split finer; LR unchanged.
  EXPECT_EQ(replica_batch(BatchPolicy::kKeepGlobalBatch, 32, 1, 1), (ReplicaBatch{32, 32, 1.0}));
  EXPECT_EQ(replica_batch(BatchPolicy::kKeepGlobalBatch, 32, 1, 4), (ReplicaBatch{32, 8, 1.0}));
  // scale_lr: the starting per-replica batch, a global batch and LR that grow by R / R0.
  EXPECT_EQ(replica_batch(BatchPolicy::kScaleLr, 32, 1, 1), (ReplicaBatch{32, 32, 1.0}));
  EXPECT_EQ(replica_batch(BatchPolicy::kScaleLr, 32, 1, 2), (ReplicaBatch{64, 32, 2.0}));
  EXPECT_EQ(replica_batch(BatchPolicy::kScaleLr, 32, 2, 8), (ReplicaBatch{128, 16, 4.0}));
  const ReplicaBatch thirds = replica_batch(BatchPolicy::kScaleLr, 24, 3, 4);  // K 4 -> 3 over 12 ranks
  EXPECT_EQ(thirds.global, 32);
  EXPECT_EQ(thirds.per_replica, 8);
  EXPECT_DOUBLE_EQ(thirds.lr_scale, 4.0 / 3.0);

  EXPECT_EQ(batch_policy_from_string("scale_lr", "autodp.batch_policy"), BatchPolicy::kScaleLr);
  EXPECT_EQ(batch_policy_from_string("keep_global_batch", "autodp.batch_policy"), BatchPolicy::kKeepGlobalBatch);
  const std::string unknown =
      error_message<ConfigError>([] { batch_policy_from_string("sqrt", "autodp.batch_policy"); });
  EXPECT_NE(unknown.find("autodp.batch_policy: unknown batch policy 'sqrt'"), std::string::npos) << unknown;
  const std::string uneven =
      error_message<ConfigError>([] { replica_batch(BatchPolicy::kKeepGlobalBatch, 30, 1, 4); });
  EXPECT_NE(uneven.find("train.batch_size 30 does not split into 4"), std::string::npos) << uneven;
  const std::string uneven_start = error_message<ConfigError>([] { replica_batch(BatchPolicy::kScaleLr, 32, 3, 6); });
  EXPECT_NE(uneven_start.find("does not split into the 3 starting replicas"), std::string::npos) << uneven_start;
  EXPECT_NE(error_message<ConfigError>([] { replica_batch(BatchPolicy::kScaleLr, 32, 0, 2); }).find("at least 1"),
            std::string::npos);
}

TEST(BatchPolicy, SamplerNeitherRepeatsNorSkipsWhenTheGlobalBatchGrowsMidEpoch) {
  // 104 samples: steps of 8 (R0 = 1), then of 16 (R = 2) and 32 (R = 4).
  EpochSampler sampler(/*dataset_size=*/104, /*batch_size=*/8, /*seed=*/5, /*shuffle=*/true, /*drop_last=*/true);
  std::vector<int64_t> seen;
  std::vector<size_t> sizes;
  auto take = [&](int batches) {
    for (int b = 0; b < batches; ++b) {
      const std::vector<int64_t> batch = sampler.next_batch();
      ASSERT_FALSE(batch.empty());
      sizes.push_back(batch.size());
      seen.insert(seen.end(), batch.begin(), batch.end());
    }
  };
  take(3);                     // 24 samples
  sampler.set_batch_size(16);  // a transition: R 1 -> 2
  EXPECT_EQ(sampler.state().position, 24) << "the position is kept across the change";
  EXPECT_EQ(sampler.remaining_batches(), 5);  // (104 - 24) / 16
  take(2);                     // 56
  sampler.set_batch_size(32);  // R 2 -> 4
  EXPECT_EQ(sampler.remaining_batches(), 1);  // 48 left: one full batch, 16 dropped
  take(1);                     // 88
  EXPECT_TRUE(sampler.next_batch().empty());
  EXPECT_TRUE(sampler.epoch_finished());
  EXPECT_EQ(sizes, (std::vector<size_t>{8, 8, 8, 16, 16, 32}));
  // Exactly the epoch's order, in order: nothing repeated, nothing skipped
  // but the incomplete last batch.
  const std::vector<int64_t> expected(sampler.order().begin(), sampler.order().begin() + 88);
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size());

  // A dataset that the grown batch divides: every sample exactly once.
  EpochSampler whole(64, 8, 9, true, true);
  std::vector<int64_t> all;
  for (int b = 0; b < 2; ++b) {
    const auto batch = whole.next_batch();
    all.insert(all.end(), batch.begin(), batch.end());
  }
  whole.set_batch_size(16);
  for (auto batch = whole.next_batch(); !batch.empty(); batch = whole.next_batch())
    all.insert(all.end(), batch.begin(), batch.end());
  std::sort(all.begin(), all.end());
  std::vector<int64_t> every(64);
  for (int64_t i = 0; i < 64; ++i) every[i] = i;
  EXPECT_EQ(all, every);

  const std::string too_big = error_message<ConfigError>([&] { whole.set_batch_size(128); });
  EXPECT_NE(too_big.find("train.batch_size=128 is larger than the dataset (64 samples)"), std::string::npos)
      << too_big;
  EXPECT_EQ(whole.batch_size(), 16) << "a rejected size is not applied";
}

TEST(BatchPolicy, TheLrScheduleAdvancesInSamplesAndEndsWithTheData) {
  TrainLoopConfig config;
  config.schedule = "cosine";
  config.lr = 1.0;
  config.warmup_steps = 4;
  config.min_lr_ratio = 0.1;
  // Integral positions are the step schedule, bit for bit; fractional ones interpolate.
  LrSchedule schedule(config, 93);
  for (int64_t step = 0; step <= 100; ++step)
    EXPECT_EQ(schedule.lr_at_position(static_cast<double>(step)), schedule.lr_at(step)) << step;
  EXPECT_DOUBLE_EQ(schedule.lr_at_position(1.5), 2.5 / 4.0);
  EXPECT_DOUBLE_EQ(schedule.lr_at_position(3.5), 1.0) << "past warmup - 1 the peak is reached";
  const double mid = schedule.lr_at_position(48.5);
  EXPECT_LT(mid, schedule.lr_at(48));
  EXPECT_GT(mid, schedule.lr_at(49));

  // keep_global_batch: the position is the optimizer step count.
  EXPECT_EQ(schedule_position(2, 31, 5 * 32, 32), 67.0);
  // scale_lr over 1000 samples, train.batch_size 32 (31 steps per epoch, 3
  // epochs = 93 positions), R doubling after epoch 0 and again after epoch 1.
  const int64_t steps_per_epoch = 1000 / 32;
  std::vector<double> positions;
  std::vector<double> lrs;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const int64_t lr_scale = int64_t{1} << epoch;
    const int64_t batch = 32 * lr_scale;
    for (int64_t used = 0; used + batch <= 1000; used += batch) {
      const double position = schedule_position(epoch, steps_per_epoch, used, 32);
      positions.push_back(position);
      lrs.push_back(schedule.lr_at_position(position) * static_cast<double>(lr_scale));
    }
  }
  ASSERT_EQ(positions.size(), 31u + 15u + 7u);
  // Each epoch starts where the step schedule's epoch starts, though it took fewer, larger steps.
  EXPECT_EQ(positions[31], 31.0);
  EXPECT_EQ(positions[31 + 15], 62.0);
  EXPECT_EQ(positions[32], 33.0) << "a step of 64 samples advances the schedule by 2";
  EXPECT_DOUBLE_EQ(lrs[31], 2.0 * schedule.lr_at(31)) << "LR x R/R0 after the first transition";
  EXPECT_DOUBLE_EQ(lrs[31 + 15], 4.0 * schedule.lr_at(62));
  // The last update sits in the last epoch's data, near the end of the decay.
  EXPECT_EQ(positions.back(), 62.0 + 6 * 4);
  EXPECT_GT(positions.back(), 0.9 * 93 - 1);
  EXPECT_NE(error_message<ConfigError>([] { schedule_position(0, 31, -1, 32); }).find("non-negative"),
            std::string::npos);
}

}  // namespace
}  // namespace pipet
