// The real `pipetransformer` under a real mpirun: a multi-rank run speaks
// once (rank 0's metrics, one exported model), and a rank that fails mid-run
// ends every rank promptly with the failing rank's message.
#include "runtime/core/files.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::ProcessOptions;
using pipet::testing::run_process;
using pipet::testing::TempDir;
using pipet::testing::write_text;

std::vector<std::string> mpirun(int ranks, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {PIPET_MPIEXEC, "--allow-run-as-root", "--oversubscribe",
                                   "--mca", "btl", "self,vader", "-np", std::to_string(ranks),
                                   "-x", "PIPET_FAULT_INJECTION", PIPET_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

ProcessOptions quiet_threads() {
  ProcessOptions options;
  options.timeout_seconds = 120;
  options.extra_env = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE", "PIPET_FAULT_INJECTION="};
  return options;
}

// Processes whose command line mentions `marker` (a unique temp path).
int processes_mentioning(const std::string& marker) {
  int count = 0;
  DIR* proc = opendir("/proc");
  if (!proc) return -1;
  while (dirent* entry = readdir(proc)) {
    const std::string pid = entry->d_name;
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmdline("/proc/" + pid + "/cmdline");
    std::stringstream text;
    text << cmdline.rdbuf();
    if (text.str().find(marker) != std::string::npos) ++count;
  }
  closedir(proc);
  return count;
}

int count_lines_with(const std::string& text, const std::string& needle) {
  int count = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.find(needle) != std::string::npos) ++count;
  return count;
}

TEST(MpiCli, TwoStagePipelineSpeaksOnceAndExportsTheWholeModel) {
  TempDir dir;
  const auto r = run_process(
      mpirun(2, {"train", "--set", "parallel.pipeline_stages=2", "--set", "parallel.micro_batches=4",
                 "--set", "parallel.schedule=1f1b", "--set", "train.max_steps=8", "--set",
                 "train.log_every_steps=4", "--set", "runtime.threads=1", "--set",
                 "data.train_samples=256", "--set", "data.eval_samples=64", "-o", dir.path()}),
      quiet_threads());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // Rank 0 alone prints metrics: each event exactly once.
  EXPECT_EQ(count_lines_with(r.out, "event=train;"), 2) << r.out;
  EXPECT_EQ(count_lines_with(r.out, "event=eval;"), 1) << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << "progress bars must stay out of a scraped log";
  const nlohmann::json summary = nlohmann::json::parse(read_file(dir.file("summary.json")));
  EXPECT_EQ(summary.at("pipeline_stages"), 2);
  EXPECT_EQ(summary.at("replicas"), 1);
  EXPECT_EQ(summary.at("schedule"), "1f1b");
  // The exported model holds every sub-layer, including stage 1's head.
  const std::string weights = read_file(dir.file("model.safetensors"));
  EXPECT_NE(weights.find("classifier.weight"), std::string::npos);
  EXPECT_NE(weights.find("vit.embeddings.patch_embeddings.projection.weight"), std::string::npos);
}

TEST(MpiCli, ARankThatFailsMidRunEndsEveryRankWithItsMessage) {
  TempDir dir;
  ProcessOptions options = quiet_threads();
  options.extra_env.back() = "PIPET_FAULT_INJECTION=rank=2,step=3";
  options.timeout_seconds = 30;  // the bound: every rank gone within 30 s
  const std::string error_file = dir.file("failure.txt");
  const auto started = std::chrono::steady_clock::now();
  const auto r = run_process(
      mpirun(4, {"--error-file", error_file, "train", "--set", "parallel.pipeline_stages=2", "--set",
                 "train.max_steps=20", "--set", "runtime.threads=1", "-o", dir.path() + "/out"}),
      options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_FALSE(r.timed_out) << "the job outlived 30 s after a rank failed";
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(seconds, 30.0);
  EXPECT_NE(r.err.find("[rank 2] error fault injected by PIPET_FAULT_INJECTION at step 3"), std::string::npos)
      << r.err;
  ASSERT_TRUE(path_exists(error_file));
  EXPECT_EQ(read_file(error_file).rfind("rank 2 of 4 on host ", 0), 0u) << read_file(error_file);
  // mpirun returns once it has signalled its ranks; on a loaded machine a
  // killed rank can take a moment to leave the process table. Still inside
  // the 30 s bound, none may remain.
  int remaining = processes_mentioning(dir.path());
  for (int i = 0; i < 50 && remaining > 0 && seconds + 0.1 * i < 25.0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    remaining = processes_mentioning(dir.path());
  }
  EXPECT_EQ(remaining, 0) << "a rank outlived the job";
}

TEST(MpiCli, MicroBatchTuningMeasuresOnceAndRemembers) {
  TempDir dir;
  const std::vector<std::string> args = {
      "train", "--set", "parallel.pipeline_stages=2", "--set", "autopipe.tune_micro_batches=true",
      "--set", "train.batch_size=16", "--set", "train.max_steps=14", "--set", "eval.every_epochs=0",
      "--set", "runtime.threads=1", "--set", "output.export_model=false", "-o", dir.path()};
  const auto first = run_process(mpirun(2, args), quiet_threads());
  ASSERT_EQ(first.exit_code, 0) << first.err;
  // Candidates for K=2 and a per-pipeline batch of 16: 2, 4, 8, 16.
  const nlohmann::json table = nlohmann::json::parse(read_file(dir.file("micro_batches.json")));
  ASSERT_TRUE(table.at("samples_per_second").contains("2")) << table.dump();
  EXPECT_EQ(table.at("samples_per_second").at("2").size(), 4u) << table.dump();
  EXPECT_NE(first.err.find("2 stages: keeping"), std::string::npos) << first.err;

  const auto second = run_process(mpirun(2, args), quiet_threads());
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_NE(second.err.find("the fastest measured"), std::string::npos) << second.err;
  EXPECT_EQ(second.err.find("micro-batches: "), std::string::npos) << "measured again: " << second.err;

  // A damaged file costs a re-measurement, not the run.
  write_text(dir.file("micro_batches.json"), "{ not json");
  const auto third = run_process(mpirun(2, args), quiet_threads());
  ASSERT_EQ(third.exit_code, 0) << third.err;
  EXPECT_NE(third.err.find("ignoring"), std::string::npos) << third.err;
  EXPECT_NE(third.err.find("2 stages: keeping"), std::string::npos) << third.err;
}

TEST(MpiCli, MeasuredCostsPartitionByProfiledTime) {
  TempDir dir;
  const auto r = run_process(
      mpirun(2, {"train", "--set", "parallel.pipeline_stages=2", "--set", "autopipe.cost=measured",
                 "--set", "train.max_steps=4", "--set", "eval.every_epochs=0", "--set",
                 "runtime.threads=1", "--set", "output.export_model=false", "-o", dir.path()}),
      quiet_threads());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One profile line naming every sub-layer, then a plan in seconds, not parameters.
  EXPECT_NE(r.err.find("[autopipe] measured forward+backward per sub-layer"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("block3.mlp"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines_with(r.err, "[autopipe] measured"), 1) << "rank 0 alone reports: " << r.err;
  EXPECT_EQ(count_lines_with(r.out, "event=train;"), 1) << r.out;
}

TEST(MpiCli, ALayoutThatDoesNotFitTheRanksFailsOnEveryRankWithTheKey) {
  TempDir dir;
  const auto r = run_process(
      mpirun(2, {"train", "--set", "parallel.pipeline_stages=3", "--set", "runtime.threads=1", "-o",
                 dir.path()}),
      quiet_threads());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("parallel.pipeline_stages 3 does not divide the 2 ranks"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pipet
