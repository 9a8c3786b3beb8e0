// autodp.batch_policy scale_lr under mpirun (np 4): freezing compresses the
// pipeline mid-epoch (K 4 -> 2 -> 1, R 1 -> 2 -> 4); the per-replica batch
// stays, so the global batch and the LR grow by R / R0, every epoch still
// trains on each sample exactly once, and a resume after a transition ends
// where the uninterrupted run ends.
#include "tests/mpi/engine_test_support.h"

#include "runtime/comm/process_groups.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/trainer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::SharedDir;
using pipet::testing::metrics_events;
using pipet::testing::world;

constexpr double kLr = 1e-3;

// 1024 samples, batch 32 at R0 = 1. Decisions every 16 steps: f = 2 at step
// 16 (mid-epoch 0; K 4 -> 2, R 2), f = 3 at step 32 (mid-epoch 1; K 1, R 4).
// Epoch 0: 16 x 32 + 8 x 64 samples; epoch 1: 8 x 64 + 4 x 128.
TrainConfig scale_lr_run(const std::string& out) {
  TrainConfig c = pipet::testing::vit_tiny_engine_run(out);
  c.data.eval_samples = 64;
  c.train.epochs = 2;
  c.train.lr = kLr;
  c.train.schedule = "constant";
  c.output.export_model = false;
  c.parallel.schedule = "gpipe";
  c.freeze.policy = "manual";
  c.freeze.manual = {2, 3};
  c.freeze.every_steps = 16;
  c.autodp.batch_policy = "scale_lr";
  return c;
}


TEST(BatchPolicyEngine, ScaleLrGrowsTheBatchAndLrAndSeesEverySampleOncePerEpoch) {
  SharedDir dir;
  const TrainConfig config = scale_lr_run(dir.path() + "/straight");
  TrainResult straight;
  int64_t samples_seen = 0;
  {
    Trainer trainer(config, &world());
    straight = trainer.run();
    samples_seen = trainer.state().samples_seen;
  }
  EXPECT_EQ(straight.steps, 16 + 8 + 8 + 4);
  EXPECT_EQ(samples_seen, 2 * 1024);
  ASSERT_TRUE(straight.eval.has_value());
  EXPECT_TRUE(std::isfinite(straight.eval->loss));

  if (world().rank() == 0) {
    const std::string metrics = config.output.dir + "/metrics.jsonl";
    std::vector<int> replicas, global_batches;
    std::vector<double> lr_scales;
    for (const auto& t : metrics_events(metrics, "transition")) {
      replicas.push_back(t.at("replicas"));
      global_batches.push_back(t.at("global_batch"));
      lr_scales.push_back(t.at("lr_scale"));
    }
    EXPECT_EQ(replicas, (std::vector<int>{2, 4}));
    EXPECT_EQ(global_batches, (std::vector<int>{64, 128}));
    EXPECT_EQ(lr_scales, (std::vector<double>{2.0, 4.0}));
    // Each epoch trained on the whole dataset once, in steps that changed size.
    const auto epochs = metrics_events(metrics, "epoch");
    ASSERT_EQ(epochs.size(), 2u);
    EXPECT_EQ(epochs[0].at("samples"), 1024);
    EXPECT_EQ(epochs[1].at("samples"), 1024);
    EXPECT_EQ(epochs[0].at("step"), 24);
    EXPECT_EQ(epochs[1].at("global_batch"), 128);
    // The LR of each logged update: x1 up to step 16, x2 up to 32, then x4.
    for (const auto& t : metrics_events(metrics, "train")) {
      const int step = t.at("step");
      const int r = step <= 16 ? 1 : step <= 32 ? 2 : 4;
      EXPECT_DOUBLE_EQ(t.at("lr").get<double>(), kLr * r) << "step " << step;
      EXPECT_EQ(t.at("global_batch"), 32 * r) << "step " << step;
    }
  }

  // Stopped at step 28 (after the first transition, mid-epoch 1) and
  // resumed: batch, LR, sampler position and freeze statistics come back.
  TrainConfig interrupted = scale_lr_run(dir.path() + "/interrupted");
  interrupted.checkpoint.dir = dir.path() + "/checkpoints";
  interrupted.checkpoint.every_epochs = 0;
  {
    Trainer trainer(interrupted, &world());
    const TrainResult stopped = trainer.run(RunLimits{28});
    EXPECT_TRUE(stopped.interrupted);
  }
  if (world().rank() == 0) {
    // A missing field must fail the test, not leave the other ranks waiting.
    try {
      const nlohmann::json saved =
          nlohmann::json::parse(
              read_file(interrupted.checkpoint.dir + "/rank-00000/step-0000000028/trainer_state.json"))
              .at("trainer");
      EXPECT_EQ(saved.at("batch_policy"), "scale_lr");
      EXPECT_EQ(saved.at("global_batch"), 64);
      EXPECT_EQ(saved.at("lr_scale"), 2.0);
      EXPECT_EQ(saved.at("sampler_position"), 4 * 64);
      EXPECT_EQ(saved.at("freeze_interval_steps"), 12) << "steps 17-28 since the decision at step 16";
      EXPECT_EQ(saved.at("freeze_window_steps").get<std::vector<int>>(), (std::vector<int>{16}))
          << "freeze.smoothing_window 2 keeps one interval";
    } catch (const std::exception& e) {
      ADD_FAILURE() << "step 28's trainer state: " << e.what();
    }
  }
  TrainConfig resumed = interrupted;
  resumed.output.dir = dir.path() + "/resumed";
  {
    Trainer trainer(resumed, &world());
    EXPECT_EQ(trainer.state().step, 28);
    EXPECT_EQ(trainer.groups().replicas(), 2);
    const TrainResult result = trainer.run();
    EXPECT_EQ(result.steps, straight.steps);
    EXPECT_EQ(trainer.state().samples_seen, samples_seen);
    ASSERT_TRUE(result.eval.has_value());
    EXPECT_DOUBLE_EQ(result.train_loss, straight.train_loss) << "the resumed run must end where the straight one ended";
    EXPECT_DOUBLE_EQ(result.eval->loss, straight.eval->loss);
  }
  // A resume under the other policy would change the optimisation: refused.
  TrainConfig other = resumed;
  other.output.dir = dir.path() + "/other";
  other.autodp.batch_policy = "keep_global_batch";
  bool refused = false;
  try {
    Trainer trainer(other, &world());
  } catch (const ConfigError& e) {
    refused = std::string(e.what()).find("autodp.batch_policy") != std::string::npos;
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace pipet
