#include <gtest/gtest.h>

#include <filesystem>

#include "pipet/build_config.h"
#include "runtime/core/errors.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/pipeline.h"
#include "runtime/engine/stop_signal.h"
#include "runtime/engine/task.h"
#include "runtime/engine/trainer.h"
#include "runtime/model/model.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

namespace fs = std::filesystem;

TrainConfig tiny_vit_config(const testing::TempDir& dir, const std::string& name) {
  TrainConfig c;
  c.model.preset = "vit-tiny";
  c.model.hidden_dropout = 0.1;  // exercises the random generator across a resume
  c.data.dataset = "synthetic-image";
  c.data.train_samples = 64;
  c.data.eval_samples = 32;
  c.train.batch_size = 16;
  c.train.epochs = 2;
  c.train.warmup_steps = 2;
  c.train.log_every_steps = 1;
  c.eval.every_epochs = 1;
  c.checkpoint.dir = dir.file(name + "-ckpt");
  c.checkpoint.every_epochs = 0;
  c.output.dir = dir.file(name + "-out");
  c.runtime.threads = 1;
  return c;
}

TrainConfig tiny_bert_config(const testing::TempDir& dir, const std::string& name) {
  TrainConfig c = tiny_vit_config(dir, name);
  c.model = ModelConfig{};
  c.model.preset = "bert-tiny";
  c.model.vocab_size = 512;
  c.model.max_position_embeddings = 64;
  c.data.dataset = "synthetic-text";
  c.data.seq_len = 24;
  c.train.optimizer = "sgd";
  c.train.lr = 0.05;
  c.train.schedule = "linear";
  return c;
}

void expect_identical_weights(TransformerModel& a, TransformerModel& b) {
  auto pa = a.hf_parameters();
  auto pb = b.hf_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
}

void check_resume_is_bit_identical(const TrainConfig& straight_config, const TrainConfig& split_config) {
  Trainer straight(straight_config);
  TrainResult full = straight.run();
  ASSERT_FALSE(full.interrupted);
  const int64_t half = straight.total_steps() / 2 + 1;  // mid-epoch on purpose

  {
    Trainer first(split_config);
    TrainResult part = first.run(RunLimits{half});
    ASSERT_TRUE(part.interrupted);
    ASSERT_FALSE(part.last_checkpoint.empty());
    EXPECT_EQ(part.steps, half);
  }
  Trainer second(split_config);  // checkpoint.resume = auto
  EXPECT_EQ(second.state().step, half);
  TrainResult rest = second.run();
  EXPECT_EQ(rest.steps, full.steps);
  expect_identical_weights(straight.model(), second.model());
  ASSERT_TRUE(full.eval && rest.eval);
  EXPECT_EQ(full.eval->loss, rest.eval->loss);
}

TEST(Trainer, ResumeMidEpochGivesBitIdenticalWeightsVit) {
  testing::TempDir dir;
  check_resume_is_bit_identical(tiny_vit_config(dir, "straight"), tiny_vit_config(dir, "split"));
}

TEST(Trainer, ResumeMidEpochGivesBitIdenticalWeightsBertSgd) {
  testing::TempDir dir;
  check_resume_is_bit_identical(tiny_bert_config(dir, "straight"), tiny_bert_config(dir, "split"));
}

TEST(Trainer, WritesExportSummaryAndMetrics) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "run");
  Trainer trainer(c);
  TrainResult result = trainer.run();
  EXPECT_EQ(result.steps, 8);
  EXPECT_EQ(result.epochs_completed, 2);
  for (const char* file : {"model.safetensors", "config.json", "summary.json", "metrics.jsonl"}) {
    EXPECT_TRUE(fs::exists(c.output.dir + "/" + file)) << file;
  }
}

TEST(Trainer, LearnsTheSyntheticImageTask) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "learn");
  c.data.train_samples = 512;
  c.data.eval_samples = 128;
  c.train.batch_size = 32;
  c.train.epochs = 8;
  c.train.lr = 2e-3;
  c.checkpoint.dir.clear();
  Trainer trainer(c);
  const double before = trainer.evaluate().metric("accuracy");
  TrainResult result = trainer.run();
  ASSERT_TRUE(result.eval.has_value());
  EXPECT_GT(result.eval->metric("accuracy"), 0.9) << "accuracy before training " << before;
}

TEST(Trainer, EarlyStopsWhenTheMetricStallsAndResumesThatCount) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "stall");
  c.train.lr = 1e-12;
  c.train.epochs = 10;
  c.eval.every_steps = 1;
  c.eval.every_epochs = 0;
  c.eval.early_stop_patience = 2;
  c.eval.early_stop_metric = "eval_loss";
  c.eval.early_stop_min_delta = 1e-3;
  Trainer trainer(c);
  TrainResult result = trainer.run();
  EXPECT_TRUE(result.early_stopped);
  EXPECT_EQ(result.steps, 3);  // best at 1, no gain at 2 and 3
}

TEST(Trainer, StopRequestCheckpointsAndReportsInterrupted) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "signal");
  request_stop();
  Trainer trainer(c);
  TrainResult result = trainer.run();
  clear_stop_request();
  EXPECT_TRUE(result.interrupted);
  EXPECT_EQ(result.steps, 1);
  EXPECT_TRUE(fs::exists(result.last_checkpoint + "/trainer_state.json"));
}

// A checkpoint that does not fit the configuration is refused with the key:
// another model shape (ModelError), or another batch (ConfigError: the LR
// schedule and the run length count steps of the saved batch, so a resume
// with another one would shift both without a word).
TEST(Trainer, ResumeRefusesACheckpointOfAnotherModelShapeOrBatch) {
  testing::TempDir dir;
  const TrainConfig trained = tiny_vit_config(dir, "shape");
  {
    Trainer trainer(trained);
    trainer.run(RunLimits{1});
  }
  TrainConfig c = trained;
  c.model.hidden_size = 32;
  c.model.num_heads = 2;
  const std::string shape = testing::error_message<ModelError>([&] { Trainer trainer(c); });
  EXPECT_NE(shape.find("hidden_size"), std::string::npos) << shape;
  EXPECT_NE(shape.find("step-"), std::string::npos) << shape;
  c = trained;
  c.train.batch_size = 32;
  const std::string batch = testing::error_message<ConfigError>([&] { Trainer trainer(c); });
  EXPECT_NE(batch.find("train.batch_size"), std::string::npos) << batch;
  EXPECT_NE(batch.find("global batch of 16"), std::string::npos) << batch;
  EXPECT_NE(batch.find("keep_global_batch"), std::string::npos) << batch;
}

// The executor runs frozen sub-layers on any stage, forward only, but the
// last stage computes the loss: one frozen through is refused by name.
TEST(StageExecutor, ALastStageWithNothingToTrainIsAModelError) {
  ModelConfig model_config;
  model_config.preset = "vit-tiny";
  TransformerModel model(resolve_model_spec(model_config, 10));
  LocalCommunicator pipeline("pipeline");
  ClassificationTask task;
  const size_t count = model.num_sublayers();
  const std::string message = testing::error_message<ModelError>(
      [&] { StageExecutor executor(model, 0, count, pipeline, task, std::chrono::seconds(5), count); });
  EXPECT_NE(message.find("the last stage (0) holds no trainable sub-layer"), std::string::npos) << message;
  EXPECT_NE(message.find("frozen up to " + std::to_string(count)), std::string::npos) << message;
  // One trainable sub-layer (the head) is enough.
  StageExecutor trains_the_head(model, 0, count, pipeline, task, std::chrono::seconds(5), count - 1);
  EXPECT_EQ(trains_the_head.end(), count);
}

// bf16 autocast on the CPU (the same code path as on a GPU): forward in
// bfloat16, weights and AdamW in fp32; it learns the task as fp32 does.
TEST(Trainer, Bf16AutocastLearnsTheSyntheticImageTask) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "bf16");
  c.model.hidden_dropout = 0.0;
  c.data.train_samples = 512;
  c.data.eval_samples = 128;
  c.train.batch_size = 32;
  c.train.epochs = 6;
  c.train.lr = 2e-3;
  c.eval.every_epochs = 6;
  c.checkpoint.dir.clear();
  c.runtime.precision = "bf16";
  {
    // Autocast is really on: the first step's loss differs from fp32's by
    // bf16 rounding (about 1e-3), not by nothing and not by more.
    TrainConfig fp32_config = c;
    fp32_config.runtime.precision = "fp32";
    fp32_config.output.dir = dir.file("fp32-out");
    const double fp32_loss = Trainer(fp32_config).run(RunLimits{1}).train_loss;
    TrainConfig bf16_config = c;
    bf16_config.output.dir = dir.file("bf16-step-out");
    const double bf16_loss = Trainer(bf16_config).run(RunLimits{1}).train_loss;
    EXPECT_NE(bf16_loss, fp32_loss);
    EXPECT_NEAR(bf16_loss, fp32_loss, 2e-2 * fp32_loss);
  }
  Trainer trainer(c);
  for (const auto& [name, p] : trainer.model().hf_parameters())
    ASSERT_EQ(p.scalar_type(), torch::kFloat) << name << ": the master weights stay fp32";
  TrainResult result = trainer.run();
  ASSERT_TRUE(result.eval.has_value());
  EXPECT_GT(result.eval->metric("accuracy"), 0.85);
  for (const auto& [name, p] : trainer.model().hf_parameters())
    EXPECT_EQ(p.scalar_type(), torch::kFloat) << name;
}

#if !PIPET_WITH_CUDA
TEST(Trainer, CudaDeviceInACpuBuildIsAConfigErrorThatSaysHowToGetOne) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "cuda");
  c.runtime.device = "cuda";
  const std::string message = [&] {
    try {
      Trainer trainer(c);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  }();
  EXPECT_NE(message.find("runtime.device"), std::string::npos) << message;
  EXPECT_NE(message.find("PIPET_WITH_CUDA"), std::string::npos) << message;
}
#endif

TEST(Trainer, TooFewLabelsForTheDatasetIsAConfigError) {
  testing::TempDir dir;
  TrainConfig c = tiny_vit_config(dir, "labels");
  c.model.num_labels = 3;  // the synthetic dataset has 10 classes
  EXPECT_THROW(Trainer trainer(c), ConfigError);
}

}  // namespace
}  // namespace pipet
