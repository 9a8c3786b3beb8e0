// The benchmark suite's "without" configurations under mpirun (np 4):
// autodp.enabled=false keeps the starting replica count when the pipeline
// compresses, so the freed ranks sit out (no batches, only world
// collectives) and the run still trains what the AutoDP run trains;
// autopipe.enabled=false keeps K and the starting partition (frozen
// sub-layers stay on their stages unless AutoCache serves them on stage 0).
#include "tests/mpi/engine_test_support.h"

#include "runtime/comm/process_groups.h"
#include "runtime/core/config.h"
#include "runtime/core/files.h"
#include "runtime/engine/trainer.h"
#include "runtime/model/model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sstream>
#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::SharedDir;
using pipet::testing::metrics_events;
using pipet::testing::world;

// vit-tiny (4 blocks, 10 sub-layers) as 2 stages x 2 replicas; 8 steps per
// epoch; 3 blocks freeze at the first epoch boundary.
TrainConfig two_by_two(const std::string& out) {
  TrainConfig c = pipet::testing::vit_tiny_engine_run(out);
  c.data.train_samples = 256;
  c.data.eval_samples = 96;
  c.train.epochs = 3;
  c.train.log_every_steps = 8;
  c.output.export_model = false;
  c.parallel.pipeline_stages = 2;
  c.parallel.micro_batches = 2;
  c.parallel.schedule = "gpipe";
  c.freeze.policy = "manual";
  c.freeze.manual = {3};
  return c;
}


// Sum of every parameter of this rank's stage, gathered from all ranks.
std::vector<double> stage_checksums(Trainer& trainer) {
  double sum = 0.0;
  const auto [begin, end] = trainer.stage_range();
  for (size_t j = begin; j < end; ++j)
    for (auto& [name, p] : trainer.model().sublayer(j).hf_parameters()) sum += p.sum().item<double>();
  const torch::Tensor all = world().all_gather(torch::tensor({sum}, torch::kDouble)).reshape({-1});
  return std::vector<double>(all.data_ptr<double>(), all.data_ptr<double>() + all.numel());
}

TEST(AutoDpOff, FreedRanksSitOutAndTheRunTrainsAsTheAutoDpRunDoes) {
  SharedDir dir;
  TrainConfig with_dp = two_by_two(dir.path() + "/with");
  TrainConfig without_dp = two_by_two(dir.path() + "/without");
  without_dp.autodp.enabled = false;

  TrainResult result_with, result_without;
  {
    Trainer trainer(with_dp, &world());
    result_with = trainer.run();
    EXPECT_EQ(trainer.groups().stages(), 1);
  }
  std::vector<double> sums;
  {
    Trainer trainer(without_dp, &world());
    result_without = trainer.run();
    EXPECT_EQ(trainer.groups().stages(), 1);
    sums = stage_checksums(trainer);
  }
  // K 2 -> 1 in both; the replicas that train are ranks 0 and 1. They agree;
  // ranks 2 and 3 stopped updating at the transition, so they do not.
  ASSERT_EQ(sums.size(), 4u);
  EXPECT_NEAR(sums[0], sums[1], 1e-6 * std::abs(sums[0]) + 1e-9);
  EXPECT_NEAR(sums[2], sums[3], 1e-6 * std::abs(sums[2]) + 1e-9);
  EXPECT_GT(std::abs(sums[0] - sums[2]), 1e-4) << "an idle rank's weights moved: it trained";

  // Same global batch, same updates: only the reduction order differs.
  EXPECT_NEAR(result_without.train_loss, result_with.train_loss, 1e-3);
  ASSERT_TRUE(result_with.eval && result_without.eval);
  EXPECT_EQ(result_without.eval->samples, 96) << "evaluation covers the whole set without the idle ranks";
  EXPECT_NEAR(result_without.eval->loss, result_with.eval->loss, 1e-3);
  EXPECT_EQ(result_without.steps, 24);

  if (world().rank() == 0) {
    const auto with_epochs = metrics_events(with_dp.output.dir + "/metrics.jsonl", "epoch");
    const auto without_epochs = metrics_events(without_dp.output.dir + "/metrics.jsonl", "epoch");
    ASSERT_EQ(without_epochs.size(), 3u);
    ASSERT_EQ(with_epochs.size(), 3u);
    std::vector<int> stages, replicas, idle;
    for (const auto& e : without_epochs) {
      stages.push_back(e.at("stages"));
      replicas.push_back(e.at("replicas"));
      idle.push_back(e.at("idle_ranks"));
      EXPECT_GT(e.at("epoch_seconds").get<double>(), 0.0);
    }
    EXPECT_EQ(stages, (std::vector<int>{2, 1, 1}));
    EXPECT_EQ(replicas, (std::vector<int>{2, 2, 2}));
    EXPECT_EQ(idle, (std::vector<int>{0, 2, 2}));
    EXPECT_EQ(with_epochs[2].at("replicas"), 4);
    EXPECT_EQ(with_epochs[2].at("idle_ranks"), 0);
    EXPECT_LT(without_epochs[0].at("elapsed_seconds").get<double>(),
              without_epochs[2].at("elapsed_seconds").get<double>());
    const auto transitions = metrics_events(without_dp.output.dir + "/metrics.jsonl", "transition");
    ASSERT_EQ(transitions.size(), 1u);
    EXPECT_EQ(transitions[0].at("replicas"), 2);
  }
}

TEST(AutoPipeOff, KeepsTheStagesAndThePartitionAndFrozenSubLayersStayPut) {
  SharedDir dir;
  TrainConfig c = two_by_two(dir.path() + "/fixed");
  c.autopipe.enabled = false;
  c.train.epochs = 2;
  Trainer trainer(c, &world());
  const std::pair<size_t, size_t> start = trainer.stage_range();
  const TrainResult result = trainer.run();
  EXPECT_EQ(trainer.groups().stages(), 2);
  EXPECT_EQ(trainer.groups().replicas(), 2);
  // 3 frozen blocks = embedding + 6 sub-layers: stage 0 is frozen through
  // and runs forward only; nothing moved.
  EXPECT_EQ(trainer.stage_range(), start);
  if (trainer.groups().stage() == 0) {
    EXPECT_LE(start.second, 7u) << "stage 0 must freeze through for this test";
  }
  ASSERT_TRUE(result.eval.has_value());
  if (world().rank() == 0) {
    const auto epochs = metrics_events(c.output.dir + "/metrics.jsonl", "epoch");
    ASSERT_EQ(epochs.size(), 2u);
    EXPECT_EQ(epochs[1].at("frozen_blocks"), 3);
    EXPECT_EQ(epochs[1].at("stages"), 2);
    EXPECT_LT(epochs[1].at("train_loss").get<double>(), epochs[0].at("train_loss").get<double>());
    const auto transitions = metrics_events(c.output.dir + "/metrics.jsonl", "transition");
    ASSERT_EQ(transitions.size(), 1u);
    EXPECT_EQ(transitions[0].at("bytes_moved"), 0);
  }

  // With AutoCache on, the cache serves the frozen prefix on stage 0: the
  // boundary moves just past it, the last stage keeps the rest.
  TrainConfig cached = two_by_two(dir.path() + "/cached");
  cached.autopipe.enabled = false;
  cached.autocache.mode = "on";
  cached.autocache.shm_mb = 64;
  cached.train.epochs = 2;
  Trainer cached_trainer(cached, &world());
  cached_trainer.run();
  const auto [begin, end] = cached_trainer.stage_range();
  if (cached_trainer.groups().stage() == 0) {
    EXPECT_EQ(begin, 0u);
    EXPECT_EQ(end, 8u);
  } else {
    EXPECT_EQ(begin, 8u);
    EXPECT_EQ(end, 10u);
  }
}

}  // namespace
}  // namespace pipet
