// End-to-end tests: the real CLI, real files, real signals.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "runtime/core/safetensors_torch.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::TempDir;

ProcessResult cli(std::vector<std::string> args, testing::ProcessOptions options = {}) {
  args.insert(args.begin(), PIPET_CLI_PATH);
  options.extra_env.push_back("OMP_NUM_THREADS=1");
  return testing::run_process(args, options);
}

// A tiny, fast training run in `dir`.
std::vector<std::string> tiny_train_args(const TempDir& dir, int epochs = 1) {
  return {"train",
          "--set", "model.preset=vit-tiny",
          "--set", "data.train_samples=64",
          "--set", "data.eval_samples=32",
          "--set", "train.batch_size=16",
          "--set", "train.epochs=" + std::to_string(epochs),
          "--set", "train.log_every_steps=1",
          "--set", "runtime.threads=1",
          "--output", dir.file("out")};
}

std::string all_output(const ProcessResult& r) { return r.out + r.err; }

TEST(Cli, HelpAndVersion) {
  ProcessResult help = cli({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("train"), std::string::npos);
  EXPECT_NE(help.out.find("export"), std::string::npos);
  EXPECT_NE(help.out.find("Exit codes"), std::string::npos);
  ProcessResult train_help = cli({"train", "--help"});
  EXPECT_EQ(train_help.exit_code, 0);
  EXPECT_NE(train_help.out.find("--set"), std::string::npos);
  ProcessResult version = cli({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.out.find("LibTorch"), std::string::npos);
}

TEST(Cli, MissingSubcommandIsAUsageError) {
  ProcessResult r = cli({});
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Cli, DescribeListsEveryKeyWithDocumentation) {
  ProcessResult r = cli({"config", "--describe"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* key : {"model.preset", "train.lr", "data.dataset", "checkpoint.dir", "eval.every_epochs"}) {
    EXPECT_NE(r.out.find(key), std::string::npos) << key;
  }
}

TEST(Cli, ConfigurationReferenceInDocsIsCurrent) {
  ProcessResult r = cli({"config", "--describe", "--format", "markdown"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string docs = testing::read_text(std::string(PIPET_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_GE(docs.size(), r.out.size());
  EXPECT_EQ(docs.substr(docs.size() - r.out.size()), r.out)
      << "docs/configuration.md is out of date: run `make docs`";
}

// The shipped recipes stay valid as the schema changes.
TEST(Cli, EveryExampleConfigValidates) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(PIPET_SOURCE_DIR) + "/examples")) {
    if (entry.path().extension() != ".json") continue;
    const ProcessResult r = cli({"config", "--validate", entry.path().string()});
    EXPECT_EQ(r.exit_code, 0) << entry.path() << ": " << all_output(r);
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

TEST(Cli, ValidateReportsUnknownKeyWithSuggestion) {
  TempDir dir;
  testing::write_text(dir.file("bad.json"), R"({"train": {"lrr": 0.1}})");
  ProcessResult r = cli({"config", "--validate", dir.file("bad.json")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train.lrr"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean 'train.lr'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bad.json"), std::string::npos) << r.err;
}

TEST(Cli, ValidateReportsWrongTypeAndRange) {
  TempDir dir;
  testing::write_text(dir.file("type.json"), R"({"train": {"epochs": "three"}})");
  ProcessResult type = cli({"config", "--validate", dir.file("type.json")});
  EXPECT_EQ(type.exit_code, 2);
  EXPECT_NE(type.err.find("train.epochs"), std::string::npos) << type.err;
  testing::write_text(dir.file("ok.json"), R"({"train": {"epochs": 2}})");
  ProcessResult range = cli({"config", "--validate", dir.file("ok.json"), "--set", "train.lr=-1"});
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_NE(range.err.find("train.lr"), std::string::npos) << range.err;
  EXPECT_NE(range.err.find("-1"), std::string::npos) << range.err;
}

TEST(Cli, MalformedJsonNamesLine) {
  TempDir dir;
  testing::write_text(dir.file("broken.json"), "{\n  \"train\": {\"lr\": 0.1,}\n}\n");
  ProcessResult r = cli({"config", "--validate", dir.file("broken.json")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("broken.json:2"), std::string::npos) << r.err;
}

TEST(Cli, TrainWritesModelConfigMetricsAndSageMakerLines) {
  TempDir dir;
  ProcessResult r = cli(tiny_train_args(dir, 2));
  ASSERT_EQ(r.exit_code, 0) << all_output(r);
  // One `name=value;` line per event, no carriage returns (stdout is a pipe).
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  std::regex loss_line(R"(event=train; epoch=\d+; step=\d+; train_loss=[0-9.e+-]+;)");
  EXPECT_TRUE(std::regex_search(r.out, loss_line)) << r.out;
  std::regex eval_line(R"(eval_accuracy=([0-9.]+);)");
  EXPECT_TRUE(std::regex_search(r.out, eval_line)) << r.out;

  const std::string out = dir.file("out");
  auto weights = load_safetensors(out + "/model.safetensors");
  EXPECT_TRUE(weights.count("vit.embeddings.cls_token"));
  EXPECT_TRUE(weights.count("classifier.weight"));
  auto config = nlohmann::json::parse(testing::read_text(out + "/config.json"));
  EXPECT_EQ(config["model_type"], "vit");
  EXPECT_EQ(config["architectures"][0], "ViTForImageClassification");
  auto summary = nlohmann::json::parse(testing::read_text(out + "/summary.json"));
  EXPECT_EQ(summary["steps"], 8);
  std::istringstream metrics(testing::read_text(out + "/metrics.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(metrics, line); ++lines) {
    EXPECT_NO_THROW(nlohmann::json::parse(line)) << line;
  }
  EXPECT_GE(lines, 8);
}

TEST(Cli, SetsPassiveOpenMpWaitUnlessTheUserChoseAPolicy) {
  TempDir dir;
  testing::ProcessOptions defaulted;
  defaulted.unset_env = {"OMP_WAIT_POLICY", "PIPET_SET_OMP_WAIT_POLICY"};
  ProcessResult r = cli(tiny_train_args(dir), defaulted);
  ASSERT_EQ(r.exit_code, 0) << all_output(r);
  EXPECT_NE(r.err.find("OpenMP wait policy PASSIVE (set by pipetransformer)"), std::string::npos) << r.err;

  testing::ProcessOptions chosen;
  chosen.unset_env = {"PIPET_SET_OMP_WAIT_POLICY"};
  chosen.extra_env = {"OMP_WAIT_POLICY=ACTIVE"};
  ProcessResult kept = cli(tiny_train_args(dir), chosen);
  ASSERT_EQ(kept.exit_code, 0) << all_output(kept);
  EXPECT_NE(kept.err.find("OpenMP wait policy ACTIVE (from the environment)"), std::string::npos) << kept.err;
}

TEST(Cli, BertTrainsOnSyntheticText) {
  TempDir dir;
  ProcessResult r = cli({"train", "--set", "model.preset=bert-tiny", "--set", "model.vocab_size=512",
                         "--set", "data.dataset=synthetic-text", "--set", "data.seq_len=16",
                         "--set", "data.train_samples=32", "--set", "data.eval_samples=16",
                         "--set", "train.batch_size=8", "--set", "train.epochs=1",
                         "--set", "runtime.threads=1", "--output", dir.file("out")});
  ASSERT_EQ(r.exit_code, 0) << all_output(r);
  auto config = nlohmann::json::parse(testing::read_text(dir.file("out/config.json")));
  EXPECT_EQ(config["architectures"][0], "BertForSequenceClassification");
}

TEST(Cli, MissingCifarDirectoryIsADataError) {
  TempDir dir;
  ProcessResult r = cli({"train", "--set", "data.dataset=cifar10", "--set", "data.dir=" + dir.file("nope"),
                         "--output", dir.file("out")});
  EXPECT_EQ(r.exit_code, 3) << all_output(r);
  EXPECT_NE(r.err.find(dir.file("nope")), std::string::npos) << r.err;
}

TEST(Cli, TruncatedCifarFileIsADataError) {
  TempDir dir;
  fs::create_directory(dir.file("cifar"));
  testing::write_text(dir.file("cifar/train.bin"), std::string(3074 * 2 + 5, '\0'));
  testing::write_text(dir.file("cifar/test.bin"), std::string(3074, '\0'));
  ProcessResult r = cli({"train", "--set", "data.dataset=cifar100", "--set", "data.dir=" + dir.file("cifar"),
                         "--output", dir.file("out")});
  EXPECT_EQ(r.exit_code, 3) << all_output(r);
  EXPECT_NE(r.err.find("train.bin"), std::string::npos) << r.err;
}

TEST(Cli, CorruptInitFromIsAFormatError) {
  TempDir dir;
  std::string bytes(8, '\0');
  bytes[0] = 100;  // header length 100, but the file ends after 12 bytes
  bytes += "{\"a\"";
  testing::write_text(dir.file("bad.safetensors"), bytes);
  std::vector<std::string> args = tiny_train_args(dir);
  args.insert(args.end(), {"--init-from", dir.file("bad.safetensors")});
  ProcessResult r = cli(args);
  EXPECT_EQ(r.exit_code, 4) << all_output(r);
  EXPECT_NE(r.err.find("bad.safetensors"), std::string::npos) << r.err;
}

TEST(Cli, UnwritableOutputDirectoryIsAnIoError) {
  TempDir dir;
  testing::write_text(dir.file("file"), "x");
  std::vector<std::string> args = tiny_train_args(dir);
  args.back() = dir.file("file/out");
  ProcessResult r = cli(args);
  EXPECT_EQ(r.exit_code, 4) << all_output(r);
  EXPECT_NE(r.err.find("output.dir"), std::string::npos) << r.err;
}

TEST(Cli, ErrorFileGetsTheMessageAndIsNeverOverwritten) {
  TempDir dir;
  ProcessResult r = cli({"--error-file", dir.file("failure"), "train", "--set", "train.lr=abc"});
  EXPECT_EQ(r.exit_code, 2);
  const std::string first = testing::read_text(dir.file("failure"));
  EXPECT_NE(first.find("train.lr"), std::string::npos) << first;
  cli({"--error-file", dir.file("failure"), "train", "--set", "train.epochs=0"});
  EXPECT_EQ(testing::read_text(dir.file("failure")), first);
}

TEST(Cli, SigtermCheckpointsThenResumeFinishes) {
  TempDir dir;
  // 128 steps: ample margin for the signal to land while training runs.
  std::vector<std::string> args = tiny_train_args(dir, 2);
  args.insert(args.end(), {"--set", "checkpoint.dir=" + dir.file("ckpt"), "--set", "data.train_samples=1024"});
  testing::ProcessOptions options;
  options.signal_on_stdout = "step=2;";
  ProcessResult stopped = cli(args, options);
  EXPECT_EQ(stopped.exit_code, 143) << all_output(stopped);
  EXPECT_NE(stopped.err.find("checkpoint"), std::string::npos) << stopped.err;
  ASSERT_FALSE(fs::is_empty(dir.file("ckpt")));

  ProcessResult resumed = cli(args);
  ASSERT_EQ(resumed.exit_code, 0) << all_output(resumed);
  EXPECT_NE(resumed.err.find("resumed step"), std::string::npos) << resumed.err;
  auto summary = nlohmann::json::parse(testing::read_text(dir.file("out/summary.json")));
  EXPECT_EQ(summary["steps"], 128);
  EXPECT_LT(stopped.out.find("step=2;"), stopped.out.size());
  EXPECT_EQ(stopped.out.find("event=summary"), std::string::npos);  // it did stop early
}

TEST(Cli, CheckpointFromADifferentModelShapeIsAModelError) {
  TempDir dir;
  std::vector<std::string> args = tiny_train_args(dir);
  args.insert(args.end(), {"--set", "checkpoint.dir=" + dir.file("ckpt")});
  ASSERT_EQ(cli(args).exit_code, 0);
  args.insert(args.end(), {"--set", "model.hidden_size=32", "--set", "model.num_heads=2"});
  ProcessResult r = cli(args);
  EXPECT_EQ(r.exit_code, 5) << all_output(r);
  EXPECT_NE(r.err.find("hidden_size"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tensor 'vit.embeddings."), std::string::npos) << "names the first tensor that differs: " << r.err;
}

TEST(Cli, ExportWritesAHuggingFaceModelFromACheckpoint) {
  TempDir dir;
  std::vector<std::string> args = tiny_train_args(dir);
  args.insert(args.end(), {"--set", "checkpoint.dir=" + dir.file("ckpt")});
  ASSERT_EQ(cli(args).exit_code, 0);
  std::string checkpoint;
  for (const auto& entry : fs::directory_iterator(dir.file("ckpt"))) checkpoint = entry.path();
  ProcessResult r = cli({"export", "--checkpoint", checkpoint, "--output", dir.file("exported")});
  ASSERT_EQ(r.exit_code, 0) << all_output(r);
  auto exported = load_safetensors(dir.file("exported/model.safetensors"));
  auto trained = load_safetensors(dir.file("out/model.safetensors"));
  ASSERT_EQ(exported.size(), trained.size());
  for (const auto& [name, tensor] : trained) {
    EXPECT_TRUE(torch::equal(tensor, exported.at(name))) << name;
  }
}

TEST(Cli, InitFromOwnExportWithDifferentHeadReinitialisesIt) {
  TempDir dir;
  ASSERT_EQ(cli(tiny_train_args(dir)).exit_code, 0);
  std::vector<std::string> args = tiny_train_args(dir);
  args.back() = dir.file("out2");
  args.insert(args.end(), {"--set", "data.num_classes=4", "--init-from", dir.file("out/model.safetensors")});
  ProcessResult r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << all_output(r);
  EXPECT_NE(r.err.find("re-initialised"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pipet
