// Elastic pipelining under mpirun (np 4): freezing compresses the pipeline
// and regroups the freed ranks into replicas, live. A transition moves state
// without changing it; a whole run goes K 4 -> 2 -> 1 with R 1 -> 2 -> 4,
// learns as well as the run without freezing, and resumes after a transition.
#include "tests/mpi/engine_test_support.h"

#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/engine/trainer.h"
#include "runtime/model/model.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::SharedDir;
using pipet::testing::metrics_events;
using pipet::testing::world;


TrainConfig elastic_run(const std::string& out) {
  TrainConfig c = pipet::testing::vit_tiny_engine_run(out);
  c.train.epochs = 5;
  c.output.export_model = true;
  // The bound alone with alpha 1/2 over 4 blocks, after one warm-up
  // decision and capped at 3 blocks: 0, 2, 3, 3 frozen after epochs 1-4.
  c.freeze.policy = "schedule";
  c.freeze.alpha = 0.5;
  c.freeze.warmup_decisions = 1;
  c.freeze.max_fraction = 0.75;
  return c;
}


TEST(ElasticEngine, ATransitionMovesStateWithoutChangingIt) {
  SharedDir dir;
  // Same 4 steps twice; in the first, a manual freeze at step 4 compresses
  // 4 stages to fewer and the checkpoint of step 4 is written after it.
  auto config = [&](const std::string& name, bool freeze) {
    TrainConfig c = elastic_run(dir.path() + "/" + name);
    c.train.epochs = 1;
    c.eval.every_epochs = 0;
    pipet::testing::freeze_two_blocks_at_step_four(c, dir.path() + "/" + name + "-checkpoints", freeze);
    return c;
  };
  const TrainConfig moved = config("moved", true);
  const TrainConfig still = config("still", false);
  for (const TrainConfig* c : {&moved, &still}) {
    Trainer trainer(*c, &world());
    trainer.run(RunLimits{4});
  }
  if (world().rank() == 0) {
    const auto transitions = metrics_events(moved.output.dir + "/metrics.jsonl", "transition");
    ASSERT_EQ(transitions.size(), 1u);
    EXPECT_EQ(transitions[0].at("frozen_blocks"), 2);
    EXPECT_LT(transitions[0].at("stages").get<int>(), 4);
    const auto before_model = pipet::testing::checkpoint_tensors(still.checkpoint.dir, 4, "model.safetensors");
    const auto after_model = pipet::testing::checkpoint_tensors(moved.checkpoint.dir, 4, "model.safetensors");
    ASSERT_EQ(after_model.size(), before_model.size()) << "every parameter has one owner after the move";
    for (const auto& [name, tensor] : before_model)
      EXPECT_TRUE(torch::equal(after_model.at(name), tensor)) << name << " changed in the transition";
    const auto before_state = pipet::testing::checkpoint_tensors(still.checkpoint.dir, 4, "optimizer.safetensors");
    const auto after_state = pipet::testing::checkpoint_tensors(moved.checkpoint.dir, 4, "optimizer.safetensors");
    size_t compared = 0;
    for (const auto& [name, tensor] : after_state) {
      ASSERT_TRUE(before_state.count(name)) << name;
      EXPECT_TRUE(torch::equal(tensor, before_state.at(name))) << name << " changed in the transition";
      ++compared;
    }
    // Frozen blocks drop their optimizer state; every active parameter keeps it.
    EXPECT_GT(compared, 0u);
    EXPECT_LT(compared, before_state.size());
  }
}

// Both directions (DESIGN.md §4.6): two blocks freeze at step 4 (the
// pipeline compresses), all unfreeze at step 8 (it grows back to 4 stages x
// 1 replica, re-planned from K0). The unfreeze moves state without changing
// it: weights and every optimizer slot equal those of a run that stays
// frozen, the re-activated parameters start with fresh (zero) slots; the
// cache's old-depth entries are dropped; a resume after it ends where the
// uninterrupted run ends.
TEST(ElasticEngine, AnUnfreezeGrowsThePipelineBackWithTheStateIntactAndResumes) {
  SharedDir dir;
  auto config = [&](const std::string& name, std::vector<double> manual, int64_t steps) {
    TrainConfig c = elastic_run(dir.path() + "/" + name);
    c.train.epochs = 1;
    c.eval.every_epochs = 0;
    pipet::testing::freeze_two_blocks_at_step_four(c, dir.path() + "/" + name + "-checkpoints", true);
    c.freeze.manual = manual;
    c.train.max_steps = steps;
    c.checkpoint.keep = 5;
    c.autocache.mode = "on";
    return c;
  };
  const TrainConfig round = config("round", {2, 0}, 12);
  const TrainConfig stay = config("stay", {2}, 12);  // the same LR schedule
  std::map<std::string, torch::Tensor> final_weights;
  {
    Trainer trainer(round, &world());
    trainer.run();
    EXPECT_EQ(trainer.state().frozen_prefix, 0);
    EXPECT_EQ(trainer.groups().stages(), 4);
    if (world().rank() == 0)
      for (const auto& [name, tensor] : trainer.model().hf_parameters()) final_weights[name] = tensor.detach().clone();
  }
  {
    Trainer trainer(stay, &world());
    trainer.run();
  }
  if (world().rank() == 0) {
    const auto transitions = metrics_events(round.output.dir + "/metrics.jsonl", "transition");
    ASSERT_EQ(transitions.size(), 2u);
    EXPECT_EQ(transitions[0].at("direction"), "freeze");
    EXPECT_LT(transitions[0].at("stages").get<int>(), 4);
    EXPECT_EQ(transitions[1].at("direction"), "unfreeze");
    EXPECT_EQ(transitions[1].at("frozen_blocks"), 0);
    EXPECT_EQ(transitions[1].at("stages"), 4);
    EXPECT_EQ(transitions[1].at("replicas"), 1);
    EXPECT_EQ(metrics_events(round.output.dir + "/metrics.jsonl", "cache_drop").size(), 1u);
    const auto frozen_model = pipet::testing::checkpoint_tensors(stay.checkpoint.dir, 8, "model.safetensors");
    const auto unfrozen_model = pipet::testing::checkpoint_tensors(round.checkpoint.dir, 8, "model.safetensors");
    ASSERT_EQ(unfrozen_model.size(), frozen_model.size());
    for (const auto& [name, tensor] : frozen_model)
      EXPECT_TRUE(torch::equal(unfrozen_model.at(name), tensor)) << name << " changed in the unfreeze";
    const auto frozen_state = pipet::testing::checkpoint_tensors(stay.checkpoint.dir, 8, "optimizer.safetensors");
    const auto unfrozen_state = pipet::testing::checkpoint_tensors(round.checkpoint.dir, 8, "optimizer.safetensors");
    size_t fresh = 0;
    for (const auto& [name, tensor] : unfrozen_state) {
      auto kept = frozen_state.find(name);
      if (kept != frozen_state.end()) {
        EXPECT_TRUE(torch::equal(tensor, kept->second)) << name << " changed in the unfreeze";
      } else {
        EXPECT_EQ(tensor.abs().max().item<double>(), 0.0) << name << ": a re-activated slot starts fresh";
        ++fresh;
      }
    }
    EXPECT_GT(fresh, 0u) << "the unfrozen blocks' parameters have optimizer state again";
    EXPECT_EQ(unfrozen_state.size(), frozen_state.size() + fresh);
  }
  // Resume from step 8, written after the unfreeze.
  pipet::testing::remove_checkpoints(round.checkpoint.dir, {12});
  TrainConfig resumed = round;
  resumed.output.dir = dir.path() + "/round-resumed";
  Trainer trainer(resumed, &world());
  EXPECT_EQ(trainer.state().step, 8);
  EXPECT_EQ(trainer.state().frozen_prefix, 0);
  trainer.run();
  if (world().rank() == 0) {
    for (const auto& [name, tensor] : trainer.model().hf_parameters())
      EXPECT_TRUE(torch::equal(tensor, final_weights.at(name))) << name << " differs after resuming past the unfreeze";
  }
}

// The probe guard (freeze.probe_samples): all four blocks freeze at step 8
// (2x2 compresses to 1x4); the probe loss then improves by 0.099 where it
// had improved by 0.245, beyond the (here tight) tolerance, so decision 3
// revokes the freeze: the pipeline grows back to 2x2, the cache's entries
// are dropped, and the cooldown holds the next two decisions. A resume
// inside the cooldown ends where the uninterrupted run ends. Bad values of
// the probe keys are named.
TEST(ElasticEngine, TheProbeGuardRevokesAHarmfulFreezeAndThePipelineGrowsBack) {
  SharedDir dir;
  auto config = [&](const std::string& name) {
    TrainConfig c = elastic_run(dir.path() + "/" + name);
    c.data.train_samples = 1024;
    c.train.epochs = 1;
    c.train.max_steps = 24;
    c.eval.every_epochs = 0;
    c.parallel.pipeline_stages = 2;
    c.parallel.micro_batches = 2;
    c.freeze.policy = "manual";
    c.freeze.manual = {4};
    c.freeze.warmup_decisions = 1;
    c.freeze.max_fraction = 1.0;
    c.freeze.every_steps = 4;
    c.freeze.probe_samples = 128;
    c.freeze.probe_tolerance = 0.001;
    c.autocache.mode = "on";
    c.checkpoint.dir = dir.path() + "/" + name + "-checkpoints";
    c.checkpoint.every_steps = 4;
    c.checkpoint.every_epochs = 0;
    c.checkpoint.keep = 10;
    return c;
  };
  const TrainConfig guarded = config("guarded");
  std::map<std::string, torch::Tensor> final_weights;
  {
    Trainer trainer(guarded, &world());
    trainer.run();
    if (world().rank() == 0)
      for (const auto& [name, tensor] : trainer.model().hf_parameters()) final_weights[name] = tensor.detach().clone();
  }
  if (world().rank() == 0) {
    const auto transitions = metrics_events(guarded.output.dir + "/metrics.jsonl", "transition");
    ASSERT_EQ(transitions.size(), 2u);
    EXPECT_EQ(transitions[0].at("frozen_blocks"), 4);
    EXPECT_EQ(transitions[0].at("stages"), 1);
    EXPECT_EQ(transitions[0].at("replicas"), 4);
    EXPECT_EQ(transitions[1].at("direction"), "unfreeze");
    EXPECT_NE(transitions[1].at("reason").get<std::string>().find("probe guard"), std::string::npos);
    EXPECT_EQ(transitions[1].at("frozen_blocks"), 0);
    EXPECT_EQ(transitions[1].at("stages"), 2);
    EXPECT_EQ(transitions[1].at("replicas"), 2);
    const auto decisions = metrics_events(guarded.output.dir + "/metrics.jsonl", "freeze");
    ASSERT_EQ(decisions.size(), 5u);
    EXPECT_EQ(decisions[2].at("revoked"), 1);
    // The cooldown: the manual list asks for 4 blocks, nothing freezes.
    EXPECT_EQ(decisions[3].at("frozen_after"), 0);
    EXPECT_EQ(decisions[4].at("frozen_after"), 0);
    EXPECT_EQ(metrics_events(guarded.output.dir + "/metrics.jsonl", "cache_drop").size(), 1u);
  }
  // Resume from step 16, inside the cooldown.
  pipet::testing::remove_checkpoints(guarded.checkpoint.dir, {20, 24});
  TrainConfig resumed = guarded;
  resumed.output.dir = dir.path() + "/guarded-resumed";
  {
    Trainer trainer(resumed, &world());
    EXPECT_EQ(trainer.state().step, 16);
    trainer.run();
    if (world().rank() == 0) {
      for (const auto& [name, tensor] : trainer.model().hf_parameters())
        EXPECT_TRUE(torch::equal(tensor, final_weights.at(name))) << name << " differs after resuming in the cooldown";
    }
  }
  // A probe as large as the training set is refused by name, on every rank.
  TrainConfig too_big = config("too-big");
  too_big.freeze.probe_samples = 1024;
  try {
    Trainer trainer(too_big, &world());
    ADD_FAILURE() << "a probe of the whole training set was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("freeze.probe_samples 1024"), std::string::npos) << e.what();
  }
}

TEST(ElasticEngine, FreezingCompressesThePipelineLearnsAsWellAndResumes) {
  SharedDir dir;
  TrainConfig frozen = elastic_run(dir.path() + "/frozen");
  frozen.checkpoint.dir = dir.path() + "/checkpoints";
  frozen.checkpoint.every_epochs = 1;
  frozen.checkpoint.keep = 5;
  TrainResult with_freezing;
  {
    Trainer trainer(frozen, &world());
    with_freezing = trainer.run();
  }
  TrainConfig plain = elastic_run(dir.path() + "/plain");
  plain.freeze.policy = "none";
  TrainResult without;
  {
    Trainer trainer(plain, &world());
    without = trainer.run();
  }
  ASSERT_TRUE(with_freezing.eval.has_value());
  ASSERT_TRUE(without.eval.has_value());
  const double accuracy_frozen = with_freezing.eval->metric("accuracy");
  const double accuracy_plain = without.eval->metric("accuracy");
  EXPECT_GT(accuracy_plain, 0.8) << "the reference run must learn for the comparison to mean anything";
  EXPECT_GE(accuracy_frozen, accuracy_plain - 0.01);
  if (world().rank() == 0) {
    const auto epochs = metrics_events(frozen.output.dir + "/metrics.jsonl", "epoch");
    ASSERT_EQ(epochs.size(), 5u);
    std::vector<int> stages, replicas;
    for (const auto& transition : metrics_events(frozen.output.dir + "/metrics.jsonl", "transition")) {
      stages.push_back(transition.at("stages"));
      replicas.push_back(transition.at("replicas"));
    }
    EXPECT_EQ(stages, (std::vector<int>{2, 1}));
    EXPECT_EQ(replicas, (std::vector<int>{2, 4}));
  }
  // Resume from the checkpoint of epoch 2, written after the first
  // transition: f, K and R come back.
  TrainConfig resumed = frozen;
  resumed.output.dir = dir.path() + "/resumed";
  resumed.train.epochs = 5;
  {
    // Drop the checkpoints after step 64 (epoch 2).
    pipet::testing::remove_checkpoints(frozen.checkpoint.dir, {96, 128, 160});
    Trainer trainer(resumed, &world());
    EXPECT_EQ(trainer.state().step, 64);
    EXPECT_EQ(trainer.state().frozen_prefix, 2);
    EXPECT_EQ(trainer.groups().stages(), 2);
    EXPECT_EQ(trainer.groups().replicas(), 2);
    const TrainResult result = trainer.run();
    ASSERT_TRUE(result.eval.has_value());
    EXPECT_DOUBLE_EQ(result.eval->metric("accuracy"), accuracy_frozen)
        << "the resumed run must end where the uninterrupted one ended";
  }
}

TEST(ElasticEngine, AResumeRebuildsTheStagesThePartitionChoseFromTheCache) {
  // vit-small (12 blocks, 26 sub-layers) at 32 px keeps K = 4 while 2, 4 and
  // 6 blocks freeze after epochs 1-3 (lambda 1/6). Under 1F1B the partition
  // counts the frozen forward on the samples the cache will not serve: all
  // of them at the first freeze, none at the later ones (epoch 2 cached
  // every sample), so stage 0 grows once the prefix is served.
  SharedDir dir;
  TrainConfig c = pipet::testing::vit_tiny_engine_run(dir.path() + "/run");
  c.model.preset = "vit-small";
  c.model.image_size = 32;
  c.model.patch_size = 8;
  c.data.train_samples = 128;
  c.data.eval_samples = 0;
  c.data.augment = false;
  c.train.epochs = 4;
  c.eval.every_epochs = 0;
  c.freeze.policy = "manual";
  c.freeze.manual = {2, 4, 6};
  c.autopipe.frozen_cost = 1.0 / 6.0;
  c.autocache.mode = "on";
  c.autocache.shm_mb = 64;
  c.checkpoint.dir = dir.path() + "/checkpoints";
  c.checkpoint.every_epochs = 1;
  c.checkpoint.keep = 5;
  TrainResult uninterrupted;
  {
    Trainer trainer(c, &world());
    uninterrupted = trainer.run();
  }
  // Every rank reads the transitions (rank 0 wrote them; the directory is shared).
  std::vector<double> served;
  std::vector<int64_t> first_stage;
  for (const auto& t : metrics_events(c.output.dir + "/metrics.jsonl", "transition")) {
    served.push_back(t.at("cache_served_share").get<double>());
    first_stage.push_back(t.at("first_stage_sublayers").get<int64_t>());
    EXPECT_EQ(t.at("stages"), 4) << t.dump();
  }
  ASSERT_EQ(served, (std::vector<double>{0.0, 1.0, 1.0}));
  // Stage 0's extent [0, n): counting the frozen forward it stays small while
  // the prefix runs (8 at 2 blocks, against 10 with lambda costs), and takes
  // more once the cache serves it (13 and 16 at 4 and 6 blocks, against 11
  // and 14 with lambda costs).
  EXPECT_EQ(first_stage, (std::vector<int64_t>{8, 13, 16}));
  // Resume from epoch 2's checkpoint (after the change to 4 blocks): the
  // saved share rebuilds the same stages, although this run's cache is empty.
  pipet::testing::remove_checkpoints(c.checkpoint.dir, {12, 16});
  TrainConfig resumed = c;
  resumed.output.dir = dir.path() + "/resumed";
  Trainer trainer(resumed, &world());
  EXPECT_EQ(trainer.state().step, 8);
  EXPECT_DOUBLE_EQ(trainer.state().cache_served_share, 1.0);
  if (trainer.groups().stage() == 0) {
    EXPECT_EQ(trainer.stage_range().second, static_cast<size_t>(first_stage[1]));
  }
  const TrainResult result = trainer.run();
  // The resumed run recomputes the prefix its cache lacks (equal to the
  // cached values up to BLAS rounding of the batch, about 1 ulp).
  EXPECT_NEAR(result.train_loss, uninterrupted.train_loss, 1e-4 * std::abs(uninterrupted.train_loss) + 1e-7);
}

TEST(ElasticEngine, AutoCacheServesTheFrozenPrefixWithTheSameTraining) {
  SharedDir dir;
  auto config = [&](const std::string& name, const std::string& mode) {
    TrainConfig c = elastic_run(dir.path() + "/" + name);
    c.data.augment = false;  // one view per sample: cached and computed inputs agree
    c.autocache.mode = mode;
    c.autocache.shm_mb = 64;
    return c;
  };
  TrainResult with_cache, without_cache, auto_cache;
  {
    Trainer trainer(config("cached", "on"), &world());
    with_cache = trainer.run();
  }
  {
    Trainer trainer(config("computed", "off"), &world());
    without_cache = trainer.run();
  }
  {
    Trainer trainer(config("auto", "auto"), &world());
    auto_cache = trainer.run();
  }
  ASSERT_TRUE(with_cache.eval && without_cache.eval);
  // Cached activations equal recomputed ones up to BLAS rounding of the batch
  // they were computed in (about 1 ulp), so the runs agree closely, not bit for bit.
  EXPECT_NEAR(with_cache.train_loss, without_cache.train_loss, 1e-4 * std::abs(without_cache.train_loss) + 1e-7);
  EXPECT_NEAR(with_cache.eval->loss, without_cache.eval->loss, 1e-4 * without_cache.eval->loss + 1e-7);
  if (world().rank() == 0) {
    const auto epochs = metrics_events(dir.path() + "/cached/metrics.jsonl", "epoch");
    ASSERT_EQ(epochs.size(), 5u);
    // cache_hit_rate: the epoch's share of frozen-prefix outputs read from
    // the cache. Epoch 3 (2 frozen blocks) fills it; epochs 4 and 5 run with
    // 3 and are served entirely by the entries advanced at the change.
    EXPECT_EQ(epochs[2].at("cache_hit_rate").get<double>(), 0.0) << epochs[2].dump();
    EXPECT_EQ(epochs[3].at("cache_hit_rate").get<double>(), 1.0) << epochs[3].dump();
    EXPECT_EQ(epochs[4].at("cache_hit_rate").get<double>(), 1.0) << epochs[4].dump();
    // Auto: at the first freeze nothing has been timed, so the two first
    // stages of K = 2 time a probe batch and, reading being much faster,
    // enable the cache for epoch 3 (which fills it; the probe's entries are
    // its only hits). At the change to K = 1 every entry is advanced and all
    // four ranks (two of them new first stages, deciding from the world's
    // timings) serve epochs 4 and 5 entirely from the cache.
    const auto auto_epochs = metrics_events(dir.path() + "/auto/metrics.jsonl", "epoch");
    ASSERT_EQ(auto_epochs.size(), 5u);
    EXPECT_LT(auto_epochs[2].at("cache_hit_rate").get<double>(), 0.1) << auto_epochs[2].dump();
    EXPECT_EQ(auto_epochs[3].at("cache_hit_rate").get<double>(), 1.0) << auto_epochs[3].dump();
    EXPECT_EQ(auto_epochs[4].at("cache_hit_rate").get<double>(), 1.0) << auto_epochs[4].dump();
    const auto auto_advances = metrics_events(dir.path() + "/auto/metrics.jsonl", "cache_advance");
    ASSERT_EQ(auto_advances.size(), 1u);
    EXPECT_EQ(auto_advances[0].at("entries"), 1024) << auto_advances[0].dump();
    // The change 2 -> 3 blocks compresses K 2 -> 1: all four ranks are first
    // stages of one node and each advances a quarter of the samples. Epoch 3
    // served all 1,024 samples (32 full batches) at 2 blocks, so every one
    // of them is advanced exactly once and nothing is left to drop.
    const auto advances = metrics_events(dir.path() + "/cached/metrics.jsonl", "cache_advance");
    ASSERT_EQ(advances.size(), 1u);
    EXPECT_EQ(advances[0].at("frozen_before"), 2);
    EXPECT_EQ(advances[0].at("frozen_after"), 3);
    EXPECT_EQ(advances[0].at("ranks"), 4);
    EXPECT_EQ(advances[0].at("nodes"), 1);
    EXPECT_EQ(advances[0].at("entries"), 1024) << advances[0].dump();
    EXPECT_EQ(advances[0].at("dropped"), 0) << advances[0].dump();
    EXPECT_TRUE(metrics_events(dir.path() + "/computed/metrics.jsonl", "cache_advance").empty());
    // Under 1F1B the partition counts the frozen prefix's forward on the
    // samples the cache will not serve: all of them at the first freeze
    // (nothing cached yet), none after the fill epoch (every sample cached);
    // without the cache, all of them at every change.
    auto served = [&](const std::string& name) {
      std::vector<double> shares;
      for (const auto& t : metrics_events(dir.path() + "/" + name + "/metrics.jsonl", "transition"))
        shares.push_back(t.at("cache_served_share").get<double>());
      return shares;
    };
    EXPECT_EQ(served("cached"), (std::vector<double>{0.0, 1.0}));
    EXPECT_EQ(served("auto"), (std::vector<double>{0.0, 1.0}));
    EXPECT_EQ(served("computed"), (std::vector<double>{0.0, 0.0}));
  }
  world().barrier();
  int leftovers = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm"))
    if (entry.path().filename().string().rfind("pipet-cache-", 0) == 0) ++leftovers;
  EXPECT_EQ(leftovers, 0) << "a cache segment outlived its job";
}

}  // namespace
}  // namespace pipet
