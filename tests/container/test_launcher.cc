// The real launcher binary on fake /opt/ml trees: bad inputs, real training
// through mpirun, SIGTERM, spot restarts, two hosts on loopback, and the
// README's metric regexes against real output.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "runtime/core/safetensors.h"
#include "tests/container/fake_opt_ml.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

namespace fs = std::filesystem;
using testing::FakeOptMl;
using testing::ProcessOptions;
using testing::ProcessResult;
using testing::TempDir;

// The environment of one launcher "host": its tree and its scratch dir.
ProcessOptions host_options(const FakeOptMl& ml, const std::string& run_dir, double timeout_s = 90) {
  ProcessOptions options;
  options.timeout_seconds = timeout_s;
  options.extra_env = {"SAGEMAKER_BASE_DIR=" + ml.root(),
                       "PIPET_SAGEMAKER_RUN_DIR=" + run_dir,
                       "PIPET_RUNTIME_BIN=" PIPET_CLI_PATH,
                       "PIPET_SAGEMAKER_SSHD=none",
                       "CUDA_VISIBLE_DEVICES=",  // CPU: one rank per host
                       "OMP_NUM_THREADS=1",
                       "OPENBLAS_NUM_THREADS=1",
                       "OMP_WAIT_POLICY=PASSIVE"};
  return options;
}

ProcessResult launch(const ProcessOptions& options) {
  return testing::run_process({PIPET_LAUNCHER_PATH, "train"}, options);
}

std::string failure_of(const FakeOptMl& ml) {
  const std::string path = ml.path("output/failure");
  return fs::exists(path) ? testing::read_text(path) : std::string("<no failure file>");
}

// A tiny real training job: vit-tiny on synthetic data, 4 steps per epoch.
std::string tiny_hyperparameters(int epochs, int checkpoint_every_steps = 2, const std::string& extra = "") {
  return R"({"model.preset": "\"vit-tiny\"", "model.num_layers": "2", "data.train_samples": "64",
    "data.eval_samples": "16", "train.batch_size": "16", "train.epochs": ")" +
         std::to_string(epochs) + R"(", "train.log_every_steps": "1", "runtime.threads": "1",
    "checkpoint.every_steps": ")" + std::to_string(checkpoint_every_steps) +
         R"(", "sagemaker_program": "\"train\"")" + extra + "}";
}

TEST(SageMakerLauncher, EveryBadInputFailsWithAClearFailureFileAndWritesNothingElse) {
  struct Case {
    std::string name;
    std::function<void(FakeOptMl&)> setup;
    int exit_code;
    std::vector<std::string> expected;  // in the failure file's first 1024 characters
  };
  const std::string single = R"({"current_host": "algo-1", "hosts": ["algo-1"]})";
  const std::vector<Case> cases = {
      {"malformed hyperparameters JSON",
       [&](FakeOptMl& ml) { ml.hyperparameters("{\n  \"train.lr\": \"0.1\",\n  \"train.epochs\" \"2\"\n}"); },
       2, {"hyperparameters.json:3:20: invalid JSON"}},
      {"non-string value",
       [&](FakeOptMl& ml) { ml.hyperparameters(R"({"train.lr": 0.1})"); },
       2, {"hyperparameter 'train.lr' is a number", "as a string"}},
      {"wrong-typed hyperparameter",
       [&](FakeOptMl& ml) { ml.hyperparameters(R"({"train.epochs": "three"})"); },
       2, {"hyperparameters.json: key 'train.epochs'", "three"}},
      {"boolean that is not one",
       [&](FakeOptMl& ml) { ml.hyperparameters(R"({"data.augment": "Flase"})"); },
       2, {"key 'data.augment'", "Flase"}},
      {"unknown hyperparameter",
       [&](FakeOptMl& ml) { ml.hyperparameters(R"({"train.lrate": "0.1"})"); },
       2, {"unknown key 'train.lrate'", "did you mean"}},
      {"more than 100 hyperparameters",
       [&](FakeOptMl& ml) {
         std::string json = "{";
         for (int i = 0; i < 101; ++i) json += (i ? ", " : "") + std::string("\"k") + std::to_string(i) + "\": \"1\"";
         ml.hyperparameters(json + "}");
       },
       2, {"101 hyperparameters", "at most 100"}},
      {"current_host not in hosts",
       [&](FakeOptMl& ml) { ml.platform_resources("algo-3", R"(["algo-1", "algo-2"])"); },
       2, {"current_host 'algo-3' is not in hosts [algo-1, algo-2]"}},
      {"malformed resourceconfig",
       [&](FakeOptMl& ml) { ml.resources(R"({"current_host": "algo-1", "hosts": "algo-1"})"); },
       2, {"resourceconfig.json: key 'hosts'"}},
      {"missing channel",
       [&](FakeOptMl& ml) {
         ml.resources(single);
         ml.hyperparameters(R"({"data.dataset": "\"cifar10\""})");
         ml.input_data(R"({"test": {"TrainingInputMode": "File"}})");
         ml.channel_file("test", "test_batch.bin", "x");
       },
       3, {"input channel 'train' is missing", "'test'"}},
      {"empty channel (a sharded host with no objects)",
       [&](FakeOptMl& ml) {
         ml.resources(single);
         ml.hyperparameters(R"({"data.dataset": "\"cifar10\""})");
         ml.input_data(R"({"train": {"TrainingInputMode": "File", "S3DistributionType": "ShardedByS3Key"}})");
         fs::create_directories(ml.path("input/data/train"));
       },
       3, {"input channel 'train' on host algo-1 is empty", "ShardedByS3Key"}},
      {"channel listed but never delivered",
       [&](FakeOptMl& ml) {
         ml.hyperparameters(R"({"data.dataset": "\"cifar10\""})");
         ml.input_data(R"({"train": {"TrainingInputMode": "File"}})");
       },
       3, {"input channel 'train'", "does not exist"}},
      {"unreadable data (a dangling link in the channel)",
       [&](FakeOptMl& ml) {
         ml.hyperparameters(R"({"data.dataset": "\"cifar10\""})");
         ml.input_data(R"({"train": {"TrainingInputMode": "File"}})");
         ml.channel_file("train", "batches.meta.txt", "airplane\n");
         fs::create_symlink(ml.path("input/data/gone.bin"), ml.path("input/data/train/data_batch_1.bin"));
       },
       3, {"cannot read", "data_batch_1.bin"}},
      {"Pipe input mode",
       [&](FakeOptMl& ml) {
         ml.hyperparameters(R"({"data.dataset": "\"cifar10\""})");
         ml.input_data(R"({"train": {"TrainingInputMode": "Pipe"}})");
       },
       3, {"TrainingInputMode Pipe"}},
      {"output location owned by the contract",
       [&](FakeOptMl& ml) { ml.hyperparameters(R"({"output.dir": "\"/tmp/elsewhere\""})"); },
       2, {"'output.dir' is set by the SageMaker launcher"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    FakeOptMl ml(dir);
    c.setup(ml);
    std::set<std::string> before = ml.listing();
    const ProcessResult r = launch(host_options(ml, dir.file("run"), 20));
    EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
    const std::string failure = failure_of(ml);
    for (const auto& text : c.expected)
      EXPECT_NE(failure.substr(0, 1024).find(text), std::string::npos) << failure;
    before.insert("output/failure");
    EXPECT_EQ(ml.listing(), before) << "nothing but the failure file may be written";
    EXPECT_EQ(r.err.find("mpirun"), std::string::npos) << "no process may start on a bad input";
  }

  // An existing failure file is never replaced.
  TempDir dir;
  FakeOptMl ml(dir);
  ml.hyperparameters(R"({"train.lr": "fast"})");
  testing::write_text(ml.path("output/failure"), "the first reason\n");
  EXPECT_EQ(launch(host_options(ml, dir.file("run"), 20)).exit_code, 2);
  EXPECT_EQ(failure_of(ml), "the first reason\n");
}

TEST(SageMakerLauncher, RuntimeErrorReachesTheFailureFileWithRankAndHost) {
  // Data that passes the launcher's checks but that the runtime rejects: a
  // truncated CIFAR batch. The failure names rank, host and the runtime's error.
  TempDir dir;
  FakeOptMl ml(dir);
  ml.resources(R"({"current_host": "algo-1", "hosts": ["algo-1"]})");
  ml.hyperparameters(R"({"data.dataset": "\"cifar10\"", "runtime.threads": "1"})");
  ml.input_data(R"({"train": {"TrainingInputMode": "File"}})");
  for (int i = 1; i <= 5; ++i) ml.channel_file("train", "data_batch_" + std::to_string(i) + ".bin", "short");
  ml.channel_file("train", "test_batch.bin", "short");
  std::set<std::string> before = ml.listing();
  const ProcessResult r = launch(host_options(ml, dir.file("run")));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  const std::string failure = failure_of(ml);
  EXPECT_EQ(failure.rfind("rank 0 on algo-1 failed (exit code 3, data error): data.dir", 0), 0u) << failure;
  EXPECT_NE(failure.find("data_batch_1.bin"), std::string::npos) << failure;
  // Valid inputs: the launcher made the standard output folder; the runtime
  // wrote nothing before reading its data.
  before.insert({"output/failure", "output/data"});
  EXPECT_EQ(ml.listing(), before);
}

// The metric_definitions block of container/README.md.
std::vector<std::pair<std::string, std::string>> readme_metric_definitions() {
  const std::string readme = testing::read_text(std::string(PIPET_SOURCE_DIR) + "/container/README.md");
  const std::string marker = "<!-- metric_definitions -->";
  const size_t at = readme.find(marker);
  if (at == std::string::npos) return {};
  const size_t begin = readme.find("```json", at);
  const size_t end = readme.find("```", begin + 7);
  const auto list = nlohmann::json::parse(readme.substr(begin + 7, end - begin - 7));
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& item : list) out.emplace_back(item.at("Name"), item.at("Regex"));
  return out;
}

TEST(SageMakerLauncher, SingleHostTrainingWritesTheContractOutputsAndMatchesMetricRegexes) {
  TempDir dir;
  FakeOptMl ml(dir);
  ml.platform_resources("algo-1", R"(["algo-1"])");
  ml.hyperparameters(tiny_hyperparameters(2));
  const ProcessResult r = launch(host_options(ml, dir.file("run")));
  ASSERT_EQ(r.exit_code, 0) << r.err << failure_of(ml);
  EXPECT_FALSE(fs::exists(ml.path("output/failure")));
  EXPECT_TRUE(fs::is_regular_file(ml.path("model/model.safetensors")));
  const auto config = nlohmann::json::parse(testing::read_text(ml.path("model/config.json")));
  EXPECT_EQ(config.at("num_hidden_layers"), 2);
  // Metrics as JSON lines in output/data, one per event.
  std::ifstream metrics(ml.path("output/data/metrics.jsonl"));
  int train_events = 0;
  for (std::string line; std::getline(metrics, line);)
    if (nlohmann::json::parse(line).value("event", "") == "train") ++train_events;
  EXPECT_EQ(train_events, 8);
  EXPECT_TRUE(fs::is_directory(ml.path("checkpoints/step-0000000008")));

  // Every metric definition of the README captures a number from this run's stdout.
  const auto definitions = readme_metric_definitions();
  ASSERT_GE(definitions.size(), 5u) << "container/README.md lost its metric_definitions block";
  for (const auto& [name, regex] : definitions) {
    SCOPED_TRACE(name + ": " + regex);
    const std::regex re(regex);
    int matches = 0;
    std::istringstream out(r.out);
    for (std::string line; std::getline(out, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, re)) continue;
      ++matches;
      size_t used = 0;
      EXPECT_NO_THROW(std::stod(m[1].str(), &used)) << line;
      EXPECT_EQ(used, m[1].str().size()) << line;
    }
    EXPECT_GT(matches, 0) << "no line of the run's stdout matched:\n" << r.out;
  }
  // The train regexes match train events only, not the epoch summaries.
  for (const auto& [name, regex] : definitions) {
    if (name != "train:loss") continue;
    int matches = 0;
    std::istringstream out(r.out);
    for (std::string line; std::getline(out, line);) matches += std::regex_search(line, std::regex(regex));
    EXPECT_EQ(matches, 8);
  }
}

TEST(SageMakerLauncher, SigtermCheckpointsWithinTheDeadlineAndExits143) {
  TempDir dir;
  FakeOptMl ml(dir);
  ml.hyperparameters(tiny_hyperparameters(200, 0, R"(, "checkpoint.every_epochs": "0")"));
  ProcessOptions options = host_options(ml, dir.file("run"), 60);
  options.signal_on_stdout = "event=train; epoch=0; step=2;";
  options.signal_number = SIGTERM;
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r = launch(options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 143) << r.err;
  EXPECT_LT(seconds, 30.0);  // SageMaker's SIGKILL comes 120 s after SIGTERM
  std::vector<std::string> checkpoints;
  for (const auto& e : fs::directory_iterator(ml.path("checkpoints"))) checkpoints.push_back(e.path().filename());
  ASSERT_EQ(checkpoints.size(), 1u);
  EXPECT_EQ(checkpoints[0].rfind("step-", 0), 0u);
  const std::string failure = failure_of(ml);
  EXPECT_EQ(failure.rfind("rank 0 on algo-1 stopped: interrupted: stopped by signal 15", 0), 0u) << failure;
  EXPECT_NE(failure.find("checkpoint"), std::string::npos);
  EXPECT_FALSE(fs::exists(ml.path("model/model.safetensors")));
}

// True once no process mentions `text` in its command line (the killed
// launcher's job must die with it, as the container would).
bool no_process_mentions(const std::string& text, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    bool found = false;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string pid = e.path().filename();
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(e.path() / "cmdline");
      std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (cmdline.find(text) != std::string::npos) found = true;
    }
    if (!found) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(SageMakerLauncher, SpotRestartAfterKillResumesToTheSameFinalWeights) {
  TempDir dir;
  const std::string hyperparameters = tiny_hyperparameters(3);

  FakeOptMl reference(dir, "reference");
  reference.hyperparameters(hyperparameters);
  const ProcessResult uninterrupted = launch(host_options(reference, dir.file("run-ref")));
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.err;

  FakeOptMl spot(dir, "spot");
  spot.hyperparameters(hyperparameters);
  // The instance disappears mid-run: SIGKILL, no chance to checkpoint.
  ProcessOptions killed = host_options(spot, dir.file("run-spot"));
  killed.signal_on_stdout = "event=train; epoch=1; step=7;";
  killed.signal_number = SIGKILL;
  const ProcessResult first = launch(killed);
  EXPECT_EQ(first.exit_code, 128 + SIGKILL);
  ASSERT_TRUE(no_process_mentions(dir.file("run-spot"), 10)) << "the job outlived its launcher";
  EXPECT_FALSE(fs::exists(spot.path("model/model.safetensors")));
  EXPECT_FALSE(fs::exists(spot.path("output/failure")));

  const ProcessResult second = launch(host_options(spot, dir.file("run-spot")));
  ASSERT_EQ(second.exit_code, 0) << second.err << failure_of(spot);
  EXPECT_NE(second.err.find("resumed step"), std::string::npos) << second.err;
  EXPECT_EQ(second.out.find("event=train; epoch=0; step=1;"), std::string::npos) << "restarted from scratch";
  EXPECT_EQ(testing::read_text(spot.path("model/model.safetensors")),
            testing::read_text(reference.path("model/model.safetensors")))
      << "the resumed run ended with different weights";
}

// ||a - b|| / ||b|| over every F32 tensor of two model.safetensors files;
// 1 when their tensor names differ.
double model_file_difference(const std::string& a_path, const std::string& b_path) {
  const SafetensorsFile a = SafetensorsFile::open(a_path), b = SafetensorsFile::open(b_path);
  if (a.tensors().size() != b.tensors().size()) return 1.0;
  double diff = 0, norm = 0;
  for (const TensorInfo& info : b.tensors()) {
    const TensorInfo* other = a.find(info.name);
    if (!other || other->dtype != DType::kF32 || info.dtype != DType::kF32 || other->numel() != info.numel())
      return 1.0;
    const float* x = reinterpret_cast<const float*>(a.data(*other));
    const float* y = reinterpret_cast<const float*>(b.data(info));
    for (int64_t i = 0; i < info.numel(); ++i) {
      diff += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
      norm += double(y[i]) * y[i];
    }
  }
  return std::sqrt(diff / norm);
}

// A spot job that comes back on a smaller instance: stopped by SIGTERM
// with processes_per_host=4 (2 stages x 2 replicas, dropout on), resumed
// on the same /opt/ml tree with processes_per_host=2; it ends with the
// uninterrupted 4-rank job's weights.
TEST(SageMakerLauncher, AJobStoppedOnFourRanksResumesOnTwoToTheSameWeights) {
  TempDir dir;
  const std::string layout =
      R"(, "parallel.pipeline_stages": "2", "model.hidden_dropout": "0.1", "model.attention_dropout": "0.1")";
  FakeOptMl reference(dir, "reference");
  reference.hyperparameters(tiny_hyperparameters(3, 2, layout + R"(, "processes_per_host": "4")"));
  const ProcessResult uninterrupted = launch(host_options(reference, dir.file("run-ref")));
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.err << failure_of(reference);

  FakeOptMl spot(dir, "spot");
  spot.hyperparameters(tiny_hyperparameters(3, 2, layout + R"(, "processes_per_host": "4")"));
  ProcessOptions stopped = host_options(spot, dir.file("run-spot"));
  stopped.signal_on_stdout = "event=train; epoch=1; step=5;";
  stopped.signal_number = SIGTERM;
  const ProcessResult first = launch(stopped);
  ASSERT_EQ(first.exit_code, 143) << first.err;
  ASSERT_TRUE(fs::exists(spot.path("checkpoints/rank-00003")));

  fs::remove(spot.path("output/failure"));  // the platform starts the next job with a fresh output
  spot.hyperparameters(tiny_hyperparameters(3, 2, layout + R"(, "processes_per_host": "2")"));
  const ProcessResult second = launch(host_options(spot, dir.file("run-spot-2")));
  ASSERT_EQ(second.exit_code, 0) << second.err << failure_of(spot);
  const std::regex resumed("resumed step [0-9]+ saved on 4 ranks \\(2x2\\) onto 2 ranks \\(2x1\\)");
  EXPECT_TRUE(std::regex_search(second.err, resumed)) << second.err;
  EXPECT_EQ(second.out.find("event=train; epoch=0; step=1;"), std::string::npos) << "restarted from scratch";
  EXPECT_LE(model_file_difference(spot.path("model/model.safetensors"), reference.path("model/model.safetensors")),
            1e-5)
      << "the job resumed on 2 ranks ended with other weights than the uninterrupted 4-rank job";
}

// An rsh agent for two "hosts" on this machine: each host name runs the
// command locally with that host's tree and scratch dir; unknown names fail
// as ssh does.
std::string write_loopback_agent(const TempDir& dir, const std::map<std::string, std::pair<std::string, std::string>>& hosts) {
  std::string script = "#!/bin/sh\nhost=\"$1\"; shift\ncase \"$host\" in\n";
  // Each fake host also gets its own Open MPI session directory: two orted
  // daemons of one job on one machine sharing /tmp/ompi.<host>.<uid> hang
  // mpirun about one start in seven (never seen on real, separate hosts).
  for (const auto& [host, paths] : hosts) {
    const std::string session_dir = dir.file("ompi-" + host);
    fs::create_directories(session_dir);
    script += "  " + host + ") export SAGEMAKER_BASE_DIR='" + paths.first + "' PIPET_SAGEMAKER_RUN_DIR='" +
              paths.second + "' OMPI_MCA_orte_tmpdir_base='" + session_dir + "' ;;\n";
  }
  script += "  *) echo \"ssh: Could not resolve hostname $host: Name or service not known\" >&2; exit 255 ;;\n"
            "esac\nexec /bin/sh -c \"$*\"\n";
  const std::string path = dir.file("loopback-agent.sh");
  testing::write_text(path, script);
  fs::permissions(path, fs::perms::owner_all);
  return path;
}

TEST(SageMakerLauncher, TwoHostsOnLoopbackTrainToCompletion) {
  TempDir dir;
  FakeOptMl leader(dir, "algo-1"), worker(dir, "algo-2");
  for (FakeOptMl* ml : {&leader, &worker}) {
    ml->platform_resources(ml == &leader ? "algo-1" : "algo-2", R"(["algo-1", "algo-2"])", "lo");
    ml->hyperparameters(tiny_hyperparameters(1));
  }
  const std::string agent = write_loopback_agent(
      dir, {{"algo-1", {leader.root(), dir.file("run-1")}}, {"algo-2", {worker.root(), dir.file("run-2")}}});
  ProcessOptions leader_options = host_options(leader, dir.file("run-1"));
  ProcessOptions worker_options = host_options(worker, dir.file("run-2"));
  for (ProcessOptions* o : {&leader_options, &worker_options})
    o->extra_env.insert(o->extra_env.end(), {"PIPET_SAGEMAKER_RSH=" + agent,
                                             "PIPET_SAGEMAKER_WORKER_TIMEOUT=30",
                                             "PIPET_SAGEMAKER_LEADER_TIMEOUT=30",
                                             "PIPET_SAGEMAKER_PROGRESS_EVERY=1"});
  ProcessResult worker_result;
  std::thread worker_thread([&] { worker_result = launch(worker_options); });
  const ProcessResult leader_result = launch(leader_options);
  worker_thread.join();
  EXPECT_EQ(leader_result.exit_code, 0) << leader_result.err << failure_of(leader);
  EXPECT_EQ(worker_result.exit_code, 0) << worker_result.err << failure_of(worker);
  EXPECT_NE(leader_result.err.find("worker algo-2 is ready"), std::string::npos) << leader_result.err;
  EXPECT_NE(leader_result.err.find("--host algo-1:1,algo-2:1 -np 2"), std::string::npos);
  EXPECT_NE(worker_result.err.find("the job ended with exit code 0"), std::string::npos) << worker_result.err;
  // One writer: rank 0 (on the leader) exports the model; the worker's
  // model directory stays empty so the uploaded archives do not clash.
  EXPECT_TRUE(fs::is_regular_file(leader.path("model/model.safetensors")));
  EXPECT_FALSE(fs::exists(worker.path("model/model.safetensors")))
      << "rank 1 exported a model too: the runtime must export from rank 0 only";
}

TEST(SageMakerLauncher, WorkerThatNeverAppearsFailsTheLeaderInTimeNamingIt) {
  TempDir dir;
  FakeOptMl leader(dir, "algo-1");
  leader.platform_resources("algo-1", R"(["algo-1", "algo-2", "algo-3"])", "lo");
  leader.hyperparameters(tiny_hyperparameters(1));
  FakeOptMl silent(dir, "algo-2");  // reachable, but its launcher never starts
  const std::string agent = write_loopback_agent(dir, {{"algo-1", {leader.root(), dir.file("run-1")}},
                                                       {"algo-2", {silent.root(), dir.file("run-2")}}});
  ProcessOptions options = host_options(leader, dir.file("run-1"), 30);
  options.extra_env.insert(options.extra_env.end(), {"PIPET_SAGEMAKER_RSH=" + agent,
                                                     "PIPET_SAGEMAKER_WORKER_TIMEOUT=3",
                                                     "PIPET_SAGEMAKER_PROGRESS_EVERY=1"});
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r = launch(options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 10) << r.err;
  EXPECT_LT(seconds, 15.0);
  EXPECT_NE(r.err.find("still waiting for 2 worker(s)"), std::string::npos) << r.err;
  const std::string failure = failure_of(leader);
  EXPECT_EQ(failure.rfind("worker host(s) algo-2, algo-3 did not become ready within 3 s", 0), 0u) << failure;
  EXPECT_NE(failure.find("algo-2 (reachable, launcher not ready yet)"), std::string::npos) << failure;
  EXPECT_NE(failure.find("algo-3 (not reachable (exit code 255: ssh: Could not resolve hostname algo-3"),
            std::string::npos) << failure;
  EXPECT_EQ(r.err.find("starting 3 process"), std::string::npos) << "mpirun must not start";
  EXPECT_FALSE(fs::exists(leader.path("model/model.safetensors")));
}

}  // namespace
}  // namespace pipet
