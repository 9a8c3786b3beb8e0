// The trainer's collaborators that need no pipeline: the AutoPipe planner,
// the freeze controller and the micro-batch tuner, one process each.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/comm/local_communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/engine/autopipe_planner.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/freeze_controller.h"
#include "runtime/engine/micro_batch_tuner.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

SubLayerCost sublayer(const std::string& name, int64_t parameters) {
  SubLayerCost cost;
  cost.name = name;
  cost.parameters = parameters;
  return cost;
}

// A 4-block model: embedding, attention and MLP sub-layers, head.
std::vector<SubLayerCost> four_blocks() {
  std::vector<SubLayerCost> out = {sublayer("embedding", 300)};
  for (int b = 0; b < 4; ++b) {
    out.push_back(sublayer("block" + std::to_string(b) + ".attention", 400));
    out.push_back(sublayer("block" + std::to_string(b) + ".mlp", 800));
  }
  out.push_back(sublayer("head", 100));
  return out;
}

size_t stage1_begin(const StageRanges& ranges) { return ranges.at(1).first; }

TEST(AutoPipePlanner, WithoutAutoPipeFrozenSubLayersStayWhereTheyAreUnlessTheCacheMayServe) {
  AutoPipeConfig config;
  config.enabled = false;
  const AutoPipePlanner in_place(config, "1f1b", /*cache_may_serve=*/false, four_blocks(), 4);
  const StageRanges start = in_place.ranges(4, 0, 0.0);
  EXPECT_EQ(in_place.ranges(4, 2, 0.0), start);
  EXPECT_EQ(in_place.stages_after_freeze(4, 3, 4, false), 4);

  const AutoPipePlanner serving(config, "1f1b", /*cache_may_serve=*/true, four_blocks(), 4);
  // Two frozen blocks: embedding + 4 sub-layers + the first trainable one on stage 0.
  EXPECT_GE(stage1_begin(serving.ranges(4, 2, 0.0)), static_cast<size_t>(pinned_sublayers(2)));
  EXPECT_EQ(serving.stages_after_freeze(4, 2, 4, false), 4);
  // Three frozen blocks leave 3 sub-layers after stage 0's 8: 4 stages no
  // longer fit, so the compression is forced.
  EXPECT_LT(serving.stages_after_freeze(4, 3, 4, false), 4);
}

TEST(AutoPipePlanner, OneFOneBCountsTheFrozenForwardTheCacheDoesNotServe) {
  AutoPipeConfig config;
  config.frozen_cost = 0.0;
  const AutoPipePlanner one_f_one_b(config, "1f1b", true, four_blocks(), 2);
  const AutoPipePlanner gpipe(config, "gpipe", true, four_blocks(), 2);
  EXPECT_TRUE(one_f_one_b.partition_counts_frozen_forward());
  EXPECT_FALSE(gpipe.partition_counts_frozen_forward());
  // Nothing served: the two frozen blocks' forwards weigh on stage 0, which
  // then takes fewer trainable sub-layers than when all of it is served.
  const size_t unserved = stage1_begin(one_f_one_b.ranges(2, 2, 0.0));
  const size_t served = stage1_begin(one_f_one_b.ranges(2, 2, 1.0));
  EXPECT_LT(unserved, served);
  EXPECT_GE(unserved, static_cast<size_t>(pinned_sublayers(2)));
  // The compression criterion never counts it.
  EXPECT_EQ(one_f_one_b.costs(2, CostUse::kCompression, 0.0), one_f_one_b.costs(2, CostUse::kCompression, 1.0));
}

TEST(AutoPipePlanner, AnUnknownPartitionerIsNamed) {
  AutoPipeConfig config;
  config.partition = "fastest";
  const std::string message = testing::error_message<ConfigError>(
      [&] { AutoPipePlanner(config, "1f1b", false, four_blocks(), 2); });
  EXPECT_NE(message.find("autopipe.partition"), std::string::npos) << message;
}

TEST(FreezeController, DecidesFromTheWorldsStatisticsAndResumesTheSameSequence) {
  LocalCommunicator world("world");
  FreezeConfig config;
  config.policy = "paper";
  config.alpha = 0.5;
  FreezeController controller(config, 4);
  // Block 1 has the smallest gradient: the prefix up to it freezes (the
  // bound allows 2 of 4 at the first decision).
  for (int step = 0; step < 3; ++step) controller.add_step({4.0, 1.0, 9.0, 16.0});
  EXPECT_EQ(controller.decide(world), 2);
  controller.add_step({0.0, 0.0, 9.0, 1.0});

  TrainerState saved;
  saved.frozen_prefix = 2;
  controller.save_into(saved);
  EXPECT_EQ(saved.freeze_decisions, 1);
  EXPECT_EQ(saved.freeze_interval_steps, 1);
  FreezeController resumed(config, 4);
  resumed.restore_policy(saved);
  resumed.restore_statistics(saved, "ckpt/trainer_state.json");
  EXPECT_EQ(resumed.state(), controller.state());
  controller.add_step({0.0, 0.0, 9.0, 1.0});
  resumed.add_step({0.0, 0.0, 9.0, 1.0});
  EXPECT_EQ(resumed.decide(world), controller.decide(world));
}

// The adaptive rule's evidence (reference norms, NaN ones included, and the
// settled runs) survives a checkpoint's JSON: the resumed rule decides as
// the uninterrupted one.
TEST(FreezeController, AdaptiveEvidenceSurvivesTheTrainerStateJson) {
  LocalCommunicator world("world");
  FreezeConfig config;
  config.policy = "adaptive";
  config.alpha = 1.0;
  config.smoothing_window = 1;
  FreezeController controller(config, 3);
  EXPECT_EQ(controller.decide(world), 0);  // no steps: NaN reference norms
  TrainerState saved;
  controller.save_into(saved);
  ASSERT_EQ(saved.freeze_reference_norms.size(), 3u);
  ASSERT_TRUE(std::isnan(saved.freeze_reference_norms[0]));
  const TrainerState loaded = trainer_state_from_json(trainer_state_to_json(saved), "trainer_state.json");
  FreezeController resumed(config, 3);
  resumed.restore_policy(loaded);
  resumed.restore_statistics(loaded, "trainer_state.json");
  EXPECT_EQ(resumed.state(), controller.state());
  std::vector<int> frozen[2];
  int i = 0;
  for (FreezeController* c : {&controller, &resumed}) {
    for (const std::vector<double>& step : {std::vector<double>{1.0, 4.0, 0.0}, std::vector<double>{1.0, 4.0, 9.0},
                                            std::vector<double>{1.0, 4.0, 9.0}}) {
      c->add_step(step);
      frozen[i].push_back(c->decide(world));
    }
    ++i;
  }
  // Blocks 0 and 1 settle at the second and third decisions (patience 2).
  EXPECT_EQ(frozen[0], (std::vector<int>{0, 0, 2}));
  EXPECT_EQ(frozen[1], frozen[0]);
  TrainerState after;
  controller.save_into(after);
  EXPECT_EQ(after.freeze_settled_decisions, (std::vector<int64_t>{2, 2, 1}));
}

TEST(FreezeController, InconsistentSavedStatisticsNameTheFile) {
  FreezeConfig config;
  config.policy = "adaptive";
  FreezeController controller(config, 4);
  TrainerState saved;
  saved.freeze_interval_sums = {1.0, 2.0};  // two blocks, not four
  saved.freeze_interval_steps = 1;
  const std::string message = testing::error_message<FormatError>(
      [&] { controller.restore_statistics(saved, "ckpt/trainer_state.json"); });
  EXPECT_NE(message.find("ckpt/trainer_state.json"), std::string::npos) << message;
}

// Three steps per candidate: one warm-up, two timed.
std::optional<int64_t> time_candidate(MicroBatchTuner& tuner, double seconds) {
  std::optional<int64_t> next;
  for (int step = 0; step < 3; ++step) next = tuner.record(seconds, 16);
  return next;
}

TEST(MicroBatchTuner, TimesEachCandidateKeepsTheFastestAndReusesTheFileForTheSameRun) {
  testing::TempDir dir;
  LocalCommunicator world("world");
  const TunedRunShape shape{"vit-tiny", 32, "keep_global_batch", 1};
  const std::string path = dir.file("micro_batches.json");
  {
    MicroBatchTuner tuner(world, path, shape);
    // K = 2, 16 samples per pipeline: candidates 2, 4, 8, 16.
    EXPECT_EQ(tuner.start(2, 16), 2);
    EXPECT_EQ(time_candidate(tuner, 1.0), 4);
    EXPECT_EQ(time_candidate(tuner, 0.5), 8);
    EXPECT_EQ(time_candidate(tuner, 2.0), 16);
    EXPECT_EQ(time_candidate(tuner, 3.0), 4);  // the fastest, kept and saved
    EXPECT_EQ(tuner.record(9.0, 16), std::nullopt);
  }
  MicroBatchTuner again(world, path, shape);
  EXPECT_EQ(again.start(2, 16), 4);
  EXPECT_EQ(again.record(9.0, 16), std::nullopt);

  MicroBatchTuner other_batch(world, path, TunedRunShape{"vit-tiny", 64, "keep_global_batch", 1});
  EXPECT_EQ(other_batch.start(2, 16), 2);
  testing::write_text(path, "{ not json");
  MicroBatchTuner damaged(world, path, shape);
  EXPECT_EQ(damaged.start(2, 16), 2);
}

}  // namespace
}  // namespace pipet
