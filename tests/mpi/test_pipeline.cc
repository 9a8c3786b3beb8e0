// The multi-process engine under mpirun (np 4): every layout of the same run
// (1x1, 4x1, 2x2, 1x4; GPipe and 1F1B; dropout on) gives the same loss curve, evaluation
// and final weights; a multi-rank run stopped and resumed from its per-rank
// checkpoints ends exactly where the uninterrupted run ends.
#include "tests/mpi/engine_test_support.h"

#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/strings.h"
#include "runtime/engine/pipeline.h"
#include "runtime/engine/task.h"
#include "runtime/engine/trainer.h"
#include "runtime/model/model.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::SharedDir;
using pipet::testing::tiny_run;
using pipet::testing::world;


double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm().clamp_min(1e-12)).item<double>();
}

struct RunRecord {
  std::vector<double> losses;            // per step (rank 0)
  std::map<std::string, torch::Tensor> weights;  // rank 0, gathered
  double weight_change = 0;              // relative to the initial weights (rank 0)
  double eval_loss = 0;
  double eval_accuracy = 0;
  int64_t eval_samples = 0;
};

RunRecord run_layout(Communicator& group, const TrainConfig& config) {
  Trainer trainer(config, &group);
  std::vector<torch::Tensor> initial;
  for (const auto& [name, tensor] : trainer.model().hf_parameters()) initial.push_back(tensor.detach().reshape({-1}).clone());
  const TrainResult result = trainer.run();
  RunRecord record;
  if (group.rank() != 0) return record;
  std::istringstream lines(read_file(config.output.dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json event = nlohmann::json::parse(line);
    if (event.at("event") == "train") record.losses.push_back(event.at("train_loss").get<double>());
  }
  std::vector<torch::Tensor> final;
  for (const auto& [name, tensor] : trainer.model().hf_parameters()) {
    record.weights[name] = tensor.detach().clone();
    final.push_back(tensor.detach().reshape({-1}));
  }
  record.weight_change = relative_difference(torch::cat(final), torch::cat(initial));
  if (result.eval) {
    record.eval_loss = result.eval->loss;
    record.eval_accuracy = result.eval->metric("accuracy");
    record.eval_samples = result.eval->samples;
  }
  return record;
}

void expect_same_run(const RunRecord& reference, const RunRecord& other, const std::string& what) {
  ASSERT_EQ(other.losses.size(), reference.losses.size()) << what;
  for (size_t i = 0; i < reference.losses.size(); ++i)
    EXPECT_NEAR(other.losses[i], reference.losses[i], 1e-5 * std::abs(reference.losses[i]))
        << what << " step " << i + 1;
  ASSERT_EQ(other.weights.size(), reference.weights.size()) << what;
  // Relative over the whole model, and absolute per tensor (a tensor near
  // zero, like a key bias, has no meaningful relative difference of its own).
  std::vector<torch::Tensor> mine, theirs;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, tensor] : reference.weights) {
    mine.push_back(other.weights.at(name).reshape({-1}));
    theirs.push_back(tensor.reshape({-1}));
    const double diff = (other.weights.at(name) - tensor).abs().max().item<double>();
    if (diff > worst) worst = diff, worst_name = name;
  }
  EXPECT_LE(relative_difference(torch::cat(mine), torch::cat(theirs)), 1e-5) << what;
  EXPECT_LE(worst, 1e-6) << what << ": largest absolute weight difference in " << worst_name;
  EXPECT_EQ(other.eval_samples, reference.eval_samples) << what;
  EXPECT_NEAR(other.eval_loss, reference.eval_loss, 1e-5 * reference.eval_loss) << what;
  EXPECT_DOUBLE_EQ(other.eval_accuracy, reference.eval_accuracy) << what;
}

TEST(PipelineEngine, EveryLayoutAndScheduleTrainsTheSameModel) {
  ASSERT_EQ(world().size(), 4) << "run this binary with mpirun -np 4";
  SharedDir dir;
  // 1x1 on rank 0 alone: the single-process reference.
  RunRecord reference;
  {
    std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
    if (solo) reference = run_layout(*solo, tiny_run(dir.path() + "/1x1", 1, 2, "gpipe"));
  }
  world().barrier();
  if (world().rank() == 0) {
    ASSERT_EQ(reference.losses.size(), 5u);
    EXPECT_GT(reference.weight_change, 1e-3) << "the reference run barely trains: the comparison would be vacuous";
    EXPECT_EQ(reference.eval_samples, 40);
  }
  for (const std::string schedule : {"gpipe", "1f1b"}) {
    for (const int64_t stages : {4, 2, 1}) {
      const std::string name = std::to_string(stages) + "x" + std::to_string(4 / stages) + "-" + schedule;
      const RunRecord record = run_layout(world(), tiny_run(dir.path() + "/" + name, stages, 2, schedule));
      if (world().rank() == 0) expect_same_run(reference, record, name);
    }
  }
  // More micro-batches than stages (the steady phase of 1F1B) on 2x2.
  const RunRecord many = run_layout(world(), tiny_run(dir.path() + "/2x2-m4", 2, 4, "1f1b"));
  if (world().rank() == 0) expect_same_run(reference, many, "2x2-1f1b-m4");
}

// Without AutoPipe and AutoCache frozen sub-layers stay on their stages:
// after step 2 the first block freezes (embedding + 2 sub-layers), so on
// 4 stages the first two are frozen through and only run forwards, the
// third starts at the frozen boundary and sends no gradient back. Every
// layout still trains what the single process trains.
TEST(PipelineEngine, FrozenSubLayersOnLaterStagesTrainTheSameModel) {
  SharedDir dir;
  auto frozen_run = [&](const std::string& name, int64_t stages, const std::string& schedule) {
    TrainConfig c = tiny_run(dir.path() + "/" + name, stages, 2, schedule);
    c.freeze.policy = "manual";
    c.freeze.manual = {1};
    c.freeze.every_steps = 2;
    c.autopipe.enabled = false;
    return c;
  };
  RunRecord reference;
  {
    std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
    if (solo) reference = run_layout(*solo, frozen_run("frozen-1x1", 1, "gpipe"));
  }
  world().barrier();
  if (world().rank() == 0) {
    ASSERT_EQ(reference.losses.size(), 5u);
    EXPECT_GT(reference.weight_change, 1e-3);
  }
  for (const std::string schedule : {"gpipe", "1f1b"}) {
    for (const int64_t stages : {4, 2}) {
      const std::string name = "frozen-" + std::to_string(stages) + "x" + std::to_string(4 / stages) + "-" + schedule;
      TrainConfig c = frozen_run(name, stages, schedule);
      {
        // The layout this test is about: stage 0 holds no trainable
        // sub-layer once block 0 (sub-layers [0, 3)) is frozen.
        Trainer probe(c, &world());
        torch::Tensor end = torch::tensor({static_cast<int64_t>(probe.stage_range().second)}, torch::kInt64);
        world().broadcast(end);
        EXPECT_LE(end.item<int64_t>(), 3) << name << ": stage 0 must freeze through";
      }
      const RunRecord record = run_layout(world(), c);
      if (world().rank() == 0) expect_same_run(reference, record, name);
    }
  }
  // Interrupted after the freeze (stages 0 and 1 frozen through, their
  // optimizers empty) and resumed: the layout and the weights come back.
  TrainConfig split = frozen_run("frozen-split", 4, "1f1b");
  split.checkpoint.dir = dir.path() + "/frozen-checkpoints";
  split.checkpoint.every_steps = 1;
  split.checkpoint.every_epochs = 0;
  {
    Trainer first(split, &world());
    EXPECT_TRUE(first.run(RunLimits{3}).interrupted);
  }
  const RunRecord resumed = run_layout(world(), split);
  const RunRecord straight = run_layout(world(), frozen_run("frozen-straight", 4, "1f1b"));
  if (world().rank() == 0) {
    ASSERT_EQ(resumed.weights.size(), straight.weights.size());
    for (const auto& [name, tensor] : straight.weights)
      EXPECT_TRUE(torch::equal(resumed.weights.at(name), tensor)) << name << " differs after resume";
  }
}

TEST(PipelineEngine, ResumeFromPerRankCheckpointsMatchesTheUninterruptedRun) {
  SharedDir dir;
  TrainConfig full = tiny_run(dir.path() + "/full", 2, 2, "1f1b");
  const RunRecord uninterrupted = run_layout(world(), full);

  TrainConfig split = full;
  split.output.dir = dir.path() + "/split";
  split.checkpoint.dir = dir.path() + "/checkpoints";
  split.checkpoint.every_steps = 2;
  split.checkpoint.every_epochs = 0;
  {
    Trainer first(split, &world());
    const TrainResult partial = first.run(RunLimits{3});
    EXPECT_TRUE(partial.interrupted);
    EXPECT_EQ(partial.steps, 3);
  }
  if (world().rank() == 0) {
    EXPECT_TRUE(path_exists(split.checkpoint.dir + "/manifest-step-0000000003.json"));
    EXPECT_TRUE(path_exists(split.checkpoint.dir + "/rank-00003/step-0000000003/model.safetensors"));
  }
  world().barrier();
  const RunRecord resumed = run_layout(world(), split);
  if (world().rank() == 0) {
    ASSERT_EQ(resumed.weights.size(), uninterrupted.weights.size());
    for (const auto& [name, tensor] : uninterrupted.weights)
      EXPECT_TRUE(torch::equal(resumed.weights.at(name), tensor)) << name << " differs after resume";
  }

  // Another layout reads the same parts by name: 2x2's step 3 resumed as
  // 4x1 ends where the uninterrupted 2x2 run ends (dropout masks follow
  // the samples, not the ranks).
  TrainConfig other = split;
  other.output.dir = dir.path() + "/other";
  other.parallel.pipeline_stages = 4;
  pipet::testing::remove_checkpoints(split.checkpoint.dir, {4, 5});
  const RunRecord relaid = run_layout(world(), other);
  if (world().rank() == 0) {
    std::vector<torch::Tensor> mine, theirs;
    for (const auto& [name, tensor] : uninterrupted.weights) {
      mine.push_back(relaid.weights.at(name).reshape({-1}));
      theirs.push_back(tensor.reshape({-1}));
    }
    EXPECT_LE(relative_difference(torch::cat(mine), torch::cat(theirs)), 1e-5) << "2x2 resumed as 4x1";
  }
}

// A stage whose neighbour never posts (dead, or on another schedule) fails
// within its timeout with an error naming the exchange, in the ordinary run
// and under NCCL's rules (the nccl-rules run), and so does not hang.
TEST(PipelineEngine, AStageWhoseNeighbourNeverPostsFailsNamingTheExchange) {
  Communicator& w = world();
  std::unique_ptr<Communicator> pipeline = w.subgroup(w.rank() < 2 ? 0 : -1, w.rank(), "silent-pipeline");
  if (pipeline && pipeline->rank() == 0) {
    ModelConfig model_config;
    model_config.preset = "vit-tiny";
    const ModelSpec spec = resolve_model_spec(model_config, 10);
    TransformerModel model(spec);
    ClassificationTask task;
    StageExecutor executor(model, 0, model.num_sublayers() / 2, *pipeline, task, std::chrono::milliseconds(1500));
    std::vector<MicroBatch> micro(2);
    for (MicroBatch& m : micro) {
      m.input.hidden = torch::randn({2, spec.num_channels, spec.image_size, spec.image_size});
      m.loss_weight = 0.5;
    }
    const auto started = std::chrono::steady_clock::now();
    std::string message;
    try {
      executor.train(micro, PipelineSchedule::kOneFOneB, nullptr);
      ADD_FAILURE() << "a schedule whose neighbour never posted completed";
    } catch (const CommError& e) {
      message = e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(8)) << message;
    // Which exchange times out first depends on the rules and on what MPI buffers.
    EXPECT_TRUE(message.find("stage 0 -> 1, activation of micro-batch ") != std::string::npos ||
                message.find("stage 1 -> 0, gradient of micro-batch 0") != std::string::npos)
        << message;
    EXPECT_NE(message.find("'silent-pipeline' (rank 0 of 2)"), std::string::npos) << message;
  }
  w.barrier();
}

TEST(PipelineEngine, LayoutErrorsNameTheKeys) {
  SharedDir dir;
  TrainConfig c = tiny_run(dir.path() + "/bad", 3, 1, "gpipe");
  try {
    Trainer trainer(c, &world());
    ADD_FAILURE() << "3 stages over 4 ranks did not fail";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.pipeline_stages 3 does not divide the 4 ranks"),
              std::string::npos)
        << e.what();
  }
  c = tiny_run(dir.path() + "/bad", 1, 3, "gpipe");
  c.train.batch_size = 18;  // divisible by 3 micro-batches, not by 4 replicas x 3
  try {
    Trainer trainer(c, &world());
    ADD_FAILURE() << "a batch that does not split over replicas x micro-batches did not fail";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("use a multiple of 12"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipet
