#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/core/errors.h"
#include "runtime/engine/checkpoint.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

namespace fs = std::filesystem;

CheckpointData sample_data(int64_t step) {
  CheckpointData data;
  data.state.step = step;
  data.state.epoch = 2;
  data.state.sampler_position = 64;
  data.state.samples_seen = 1000;
  data.state.has_best = true;
  data.state.best_metric = 0.75;
  data.state.cache_served_share = 0.375;
  data.model_config = {{"model_type", "vit"}, {"hidden_size", 8}};
  data.train_config = {{"train", {{"lr", 0.001}}}};
  data.optimizer_name = "adamw";
  data.model = {{"classifier.weight", torch::arange(6, torch::kFloat32).reshape({2, 3}) * step}};
  data.optimizer = {{"classifier.weight/step", torch::tensor({step}, torch::kInt64).reshape({})}};
  data.rng = {{"torch_cpu", torch::arange(16, torch::kUInt8)}};
  return data;
}

TEST(Checkpointer, SaveThenLoadReturnsEveryPart) {
  testing::TempDir dir;
  Checkpointer checkpointer(dir.file("ckpt"), 2);
  const std::string path = checkpointer.save(sample_data(7));
  EXPECT_EQ(fs::path(path).filename(), "step-0000000007");
  LoadedCheckpoint loaded = Checkpointer::load(path);
  EXPECT_EQ(loaded.state.step, 7);
  EXPECT_EQ(loaded.state.epoch, 2);
  EXPECT_EQ(loaded.state.sampler_position, 64);
  EXPECT_TRUE(loaded.state.has_best);
  EXPECT_DOUBLE_EQ(loaded.state.best_metric, 0.75);
  EXPECT_DOUBLE_EQ(loaded.state.cache_served_share, 0.375);
  EXPECT_EQ(loaded.model_config.at("hidden_size"), 8);
  EXPECT_EQ(loaded.optimizer_name, "adamw");
  EXPECT_TRUE(torch::equal(loaded.model.at("classifier.weight"), sample_data(7).model[0].second));
  EXPECT_EQ(loaded.optimizer.at("classifier.weight/step").item<int64_t>(), 7);
  EXPECT_TRUE(torch::equal(loaded.rng.at("torch_cpu"), torch::arange(16, torch::kUInt8)));
}

TEST(Checkpointer, KeepsOnlyTheNewestAndNoTemporaries) {
  testing::TempDir dir;
  Checkpointer checkpointer(dir.path(), 2);
  for (int64_t step : {10, 20, 30}) checkpointer.save(sample_data(step));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path())) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-0000000020", "step-0000000030"}));
}

TEST(Checkpointer, CorruptNewestFallsBackToThePrevious) {
  testing::TempDir dir;
  Checkpointer checkpointer(dir.path(), 3);
  checkpointer.save(sample_data(1));
  const std::string newest = checkpointer.save(sample_data(2));
  testing::write_text(newest + "/model.safetensors", "garbage");
  auto loaded = checkpointer.load_latest();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.step, 1);
}

TEST(Checkpointer, RemovesTheTemporaryDirectoryOfACrashedWriter) {
  testing::TempDir dir;
  fs::create_directory(dir.file(".step-0000000005.tmp-4242"));
  testing::write_text(dir.file(".step-0000000005.tmp-4242/model.safetensors"), "half");
  Checkpointer checkpointer(dir.path(), 1);
  EXPECT_FALSE(fs::exists(dir.file(".step-0000000005.tmp-4242")));
  EXPECT_FALSE(checkpointer.load_latest().has_value());
}

TEST(Checkpointer, SavingTheSameStepAgainReplacesIt) {
  testing::TempDir dir;
  Checkpointer checkpointer(dir.path(), 2);
  checkpointer.save(sample_data(4));
  CheckpointData again = sample_data(4);
  again.state.epoch = 9;
  checkpointer.save(again);
  EXPECT_EQ(checkpointer.list().size(), 1u);
  EXPECT_EQ(checkpointer.load_latest()->state.epoch, 9);
}

// The FormatError of loading a checkpoint whose trainer state is `trainer`.
std::string trainer_state_error(const std::string& trainer) {
  testing::TempDir dir;
  Checkpointer checkpointer(dir.path(), 1);
  const std::string path = checkpointer.save(sample_data(3));
  testing::write_text(path + "/trainer_state.json",
                      R"({"format": "pipetransformer-checkpoint", "version": 1, "optimizer": "adamw", "trainer": )" +
                          trainer + "}");
  return testing::error_message<FormatError>([&] { Checkpointer::load(path); });
}

TEST(Checkpointer, MissingTrainerFieldIsAFormatErrorNamingIt) {
  const std::string error = trainer_state_error(R"({"step": 3})");
  EXPECT_NE(error.find("'epoch'"), std::string::npos) << error;
  EXPECT_NE(error.find("trainer_state.json"), std::string::npos) << error;
}

TEST(Checkpointer, CacheServedShareOutsideZeroToOneIsAFormatError) {
  const std::string error = trainer_state_error(
      R"({"step": 3, "epoch": 0, "sampler_position": 0, "samples_seen": 0, "elapsed_seconds": 0,
          "has_best": false, "best_metric": 0, "evals_without_improvement": 0, "frozen_prefix": 0,
          "pipeline_stages": 1, "micro_batches": 1, "cache_served_share": 1.5})");
  EXPECT_NE(error.find("cache_served_share 1.5"), std::string::npos) << error;
}

TEST(Checkpointer, NotACheckpointDirectoryIsAnIoError) {
  testing::TempDir dir;
  EXPECT_THROW(Checkpointer::load(dir.file("absent")), IoError);
  testing::write_text(dir.file("trainer_state.json"), "{\"format\": \"other\"}");
  EXPECT_THROW(Checkpointer::load(dir.path()), FormatError);
}

TEST(Checkpointer, UnwritableDirectoryIsAnIoErrorNamingTheKey) {
  testing::TempDir dir;
  testing::write_text(dir.file("file"), "x");
  try {
    Checkpointer checkpointer(dir.file("file/sub"), 1);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint.dir"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipet
