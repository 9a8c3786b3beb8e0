// The launcher's plan in process: contract trees of both shapes, the
// hyperparameter mapping, device detection and golden mpirun command lines.
#include <gtest/gtest.h>
#include "runtime/core/files.h"

#include <filesystem>

#include "container/contract.h"
#include "container/failure.h"
#include "container/job.h"
#include "runtime/core/errors.h"
#include "tests/container/fake_opt_ml.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

namespace pipet::sagemaker {
namespace {

using testing::FakeOptMl;
using testing::TempDir;
namespace fs = std::filesystem;

const std::map<std::string, std::string> kCpuEnv = {{"CUDA_VISIBLE_DEVICES", ""},
                                                    {"PATH", "/usr/bin:/bin"}};

TEST(SageMakerPlan, PlatformTreeMapsHyperparametersChannelsAndOutputs) {
  TempDir dir;
  FakeOptMl ml(dir);
  // As the Python SDK writes them: every value a string, strings JSON-encoded.
  ml.hyperparameters(R"({
    "model.preset": "\"vit-tiny\"", "data.dataset": "\"cifar10\"", "train.lr": "0.0003",
    "train.epochs": "2", "data.augment": "False", "data.hflip": "\"True\"", "train.nesterov": "0",
    "train_channel": "\"images\"", "sagemaker_program": "\"train.py\"",
    "sagemaker_region": "\"us-west-2\"", "_tuning_objective_metric": "eval_accuracy"})");
  ml.platform_resources("algo-2", R"(["algo-1", "algo-2"])", "ens5");
  ml.input_data(R"({"images": {"ContentType": "application/x-cifar", "TrainingInputMode": "File",
      "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
    "validation": {"TrainingInputMode": "FastFile", "S3DistributionType": "FullyReplicated"}})");
  ml.checkpoint(R"({"LocalPath": "/opt/ml/checkpoints/run1", "S3Uri": "s3://bucket/ckpt"})");
  ml.channel_file("images", "data_batch_1.bin", "x");
  ml.channel_file("validation", "test_batch.bin", "y");

  const JobPlan plan = make_job_plan(ContractPaths(ml.root()), kCpuEnv);
  EXPECT_EQ(plan.config.model.preset, "vit-tiny");
  EXPECT_EQ(plan.config.data.dataset, "cifar10");
  EXPECT_DOUBLE_EQ(plan.config.train.lr, 3e-4);
  EXPECT_EQ(plan.config.train.epochs, 2);
  EXPECT_FALSE(plan.config.data.augment);  // "False" is false, not a non-empty string
  EXPECT_TRUE(plan.config.data.hflip);
  EXPECT_FALSE(plan.config.train.nesterov);
  EXPECT_EQ(plan.options.train_channel, "images");
  EXPECT_EQ(plan.config.data.dir, ml.root() + "/input/data/images");
  // A validation channel holding one file maps to that file.
  EXPECT_EQ(plan.config.data.eval_path, ml.root() + "/input/data/validation/test_batch.bin");
  EXPECT_EQ(plan.config.output.dir, ml.root() + "/model");
  EXPECT_EQ(plan.config.output.metrics_file, ml.root() + "/output/data/metrics.jsonl");
  EXPECT_EQ(plan.config.checkpoint.dir, ml.root() + "/checkpoints/run1");  // rebased
  EXPECT_EQ(plan.config.checkpoint.resume, "auto");
  EXPECT_EQ(plan.resources.current_host, "algo-2");
  EXPECT_FALSE(plan.resources.is_leader());
  EXPECT_EQ(plan.resources.network_interface_name, "ens5");
  EXPECT_EQ(plan.processes_per_host, 1);
  EXPECT_EQ(plan.total_processes, 2);
  EXPECT_EQ(plan.config.runtime.device, "cpu");
  EXPECT_EQ(plan.inputs.channels.at("validation").input_mode, "FastFile");
}

TEST(SageMakerPlan, LocalModeTreeUsesDefaults) {
  TempDir dir;
  FakeOptMl ml(dir);
  // Local mode: a random host suffix, no interface, no checkpointconfig.json,
  // a synthetic dataset that needs no channel even though one is given.
  ml.hyperparameters(R"({"train.batch_size": "8", "processes_per_host": "\"3\""})");
  ml.resources(R"({"current_host": "algo-1-x7k2p", "hosts": ["algo-1-x7k2p"]})");
  ml.input_data(R"({"train": {"TrainingInputMode": "File"}})");
  ml.channel_file("train", "ignored.bin", "z");
  const JobPlan plan = make_job_plan(ContractPaths(ml.root() + "/"), kCpuEnv);
  EXPECT_EQ(plan.config.train.batch_size, 8);
  EXPECT_EQ(plan.config.data.dataset, "synthetic-image");
  EXPECT_TRUE(plan.config.data.dir.empty());
  EXPECT_EQ(plan.resources.network_interface_name, "eth0");
  EXPECT_TRUE(plan.resources.is_leader());
  EXPECT_EQ(plan.config.checkpoint.dir, ml.root() + "/checkpoints");
  EXPECT_EQ(plan.processes_per_host, 3);
  EXPECT_EQ(plan.total_processes, 3);
  bool noted = false;
  for (const auto& note : plan.notes) noted |= note.find("channel 'train' is not used") != std::string::npos;
  EXPECT_TRUE(noted);

  // No contract files at all (a plain `docker run`): one host, defaults.
  TempDir empty;
  FakeOptMl bare(empty);
  const JobPlan defaults = make_job_plan(ContractPaths(bare.root()), kCpuEnv);
  EXPECT_EQ(defaults.resources.hosts, std::vector<std::string>{"algo-1"});
  EXPECT_EQ(defaults.config.train.lr, TrainConfig{}.train.lr);
}

TEST(SageMakerPlan, HyperparameterErrorsUseTheSchemaMessages) {
  TempDir dir;
  FakeOptMl ml(dir);
  ml.resources(R"({"current_host": "algo-1", "hosts": ["algo-1"]})");
  auto message = [&](const std::string& hyperparameters) {
    ml.hyperparameters(hyperparameters);
    return testing::error_message<ConfigError>([&] { make_job_plan(ContractPaths(ml.root()), kCpuEnv); });
  };
  // The same text `--set train.lr=fast` gives, with this file as the source.
  TrainConfig scratch;
  const std::string via_set = testing::error_message<ConfigError>(
      [&] { apply_config_text(scratch, "train.lr", "fast", {"hyperparameters.json"}); });
  EXPECT_EQ(message(R"({"train.lr": "fast"})"), via_set);
  EXPECT_NE(via_set.find("train.lr"), std::string::npos);
  const std::string unknown = message(R"({"train.lrr": "0.1"})");
  EXPECT_NE(unknown.find("unknown key 'train.lrr' (did you mean 'train.lr'?)"), std::string::npos) << unknown;
  EXPECT_NE(message(R"({"data.augment": "maybe"})").find("data.augment"), std::string::npos);
  EXPECT_NE(message(R"({"processes_per_host": "0"})").find("processes_per_host"), std::string::npos);
  EXPECT_NE(message(R"({"trian_channel": "x"})").find("did you mean 'train_channel'?"), std::string::npos);
  EXPECT_NE(message(R"({"checkpoint.dir": "/tmp/x"})").find("set by the SageMaker launcher"), std::string::npos);
  // Cross-key validation runs on the final config.
  EXPECT_NE(message(R"({"model.preset": "bert-tiny"})").find("model.preset 'bert-tiny'"), std::string::npos);
}

TEST(SageMakerPlan, DeviceCountFromCudaVisibleDevicesOrNvidiaSmi) {
  EXPECT_EQ(detect_devices({{"CUDA_VISIBLE_DEVICES", "0,1,2"}}).count, 3);
  EXPECT_TRUE(detect_devices({{"CUDA_VISIBLE_DEVICES", "0,1,2"}}).gpus);
  EXPECT_EQ(detect_devices({{"CUDA_VISIBLE_DEVICES", ""}}).count, 1);
  EXPECT_FALSE(detect_devices({{"CUDA_VISIBLE_DEVICES", "-1"}}).gpus);
  TempDir dir;
  EXPECT_FALSE(detect_devices({{"PATH", dir.path()}}).gpus);  // no nvidia-smi: CPU, 1 per host
  testing::write_text(dir.file("nvidia-smi"),
                      "#!/bin/sh\n[ \"$1\" = -L ] || exit 9\n"
                      "for i in 0 1 2 3; do echo \"GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)\"; done\n");
  fs::permissions(dir.file("nvidia-smi"), fs::perms::owner_all);
  const DeviceCount smi = detect_devices({{"PATH", dir.path()}});
  EXPECT_EQ(smi.count, 4);
  EXPECT_TRUE(smi.gpus);

  // GPUs found and runtime.device unset: the runtime is told to use them.
  FakeOptMl ml(dir);
  const JobPlan plan = make_job_plan(ContractPaths(ml.root()), {{"CUDA_VISIBLE_DEVICES", "0,1"}});
  EXPECT_EQ(plan.processes_per_host, 2);
  EXPECT_EQ(plan.config.runtime.device, "cuda");
}

LauncherSettings golden_settings() {
  LauncherSettings s;
  s.launcher_binary = "/usr/local/bin/train";
  s.runtime_binary = "/usr/local/bin/pipetransformer";
  return s;
}

TEST(SageMakerPlan, GoldenMpirunCommandSingleHost) {
  TempDir dir;
  FakeOptMl ml(dir);
  const JobPlan plan = make_job_plan(ContractPaths(ml.root()), {{"CUDA_VISIBLE_DEVICES", "0,1,2,3"}});
  const std::map<std::string, std::string> env = {
      {"PATH", "/usr/bin"}, {"LD_LIBRARY_PATH", "/opt/torch/lib"}, {"OMP_NUM_THREADS", "4"},
      {"CUDA_VISIBLE_DEVICES", "0,1,2,3"}, {"HOME", "/root"}, {"SAGEMAKER_BASE_DIR", "/x"}};
  const MpirunCommand cmd = mpirun_command(plan, golden_settings(), env, /*cpu_count=*/96);
  const std::vector<std::string> expected = {
      "mpirun", "--allow-run-as-root", "-np", "4", "--bind-to", "none", "--map-by", "slot",
      "-x", "LD_LIBRARY_PATH", "-x", "OMP_NUM_THREADS", "-x", "PATH",
      "/usr/local/bin/train", "rank"};
  EXPECT_EQ(cmd.argv, expected);
  EXPECT_TRUE(cmd.set_env.empty());
  // More processes than cores: oversubscription must be allowed explicitly.
  EXPECT_EQ(mpirun_command(plan, golden_settings(), env, 2).argv[8], "--oversubscribe");
  EXPECT_EQ(runtime_command(golden_settings(), 3),
            (std::vector<std::string>{"/usr/local/bin/pipetransformer", "--error-file",
                                      "/tmp/pipet-sagemaker/errors/rank-3.txt", "train", "--config",
                                      "/tmp/pipet-sagemaker/config.json"}));
}

TEST(SageMakerPlan, GoldenMpirunCommandMultiHostKeepsHostOrderAndExportsEfa) {
  TempDir dir;
  FakeOptMl ml(dir);
  // Twelve hosts: algo-10 must follow algo-9 (list order, never sorted),
  // and the leader is the first listed.
  std::string hosts = "[";
  std::string expected_hosts;
  for (int i = 1; i <= 12; ++i) {
    hosts += std::string(i > 1 ? ", " : "") + "\"algo-" + std::to_string(i) + "\"";
    expected_hosts += std::string(i > 1 ? "," : "") + "algo-" + std::to_string(i) + ":8";
  }
  hosts += "]";
  ml.platform_resources("algo-10", hosts);
  JobPlan plan = make_job_plan(ContractPaths(ml.root()), {{"CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7"}});
  EXPECT_EQ(plan.resources.host_index(), 9u);
  EXPECT_FALSE(plan.resources.is_leader());
  EXPECT_EQ(plan.resources.hosts.front(), "algo-1");
  plan.efa = true;
  LauncherSettings settings = golden_settings();
  settings.rsh_agent = "ssh -p 2222";
  settings.extra_mpirun_args = {"-mca", "btl_base_verbose", "1"};
  const std::map<std::string, std::string> env = {{"PATH", "/usr/bin"}, {"NCCL_DEBUG", "INFO"},
                                                  {"FI_PROVIDER", "efa-direct"}};
  const MpirunCommand cmd = mpirun_command(plan, settings, env, 96);
  const std::vector<std::string> expected = {
      "mpirun", "--allow-run-as-root", "--host", expected_hosts, "-np", "96", "--bind-to", "none",
      "--map-by", "slot", "-mca", "plm_rsh_no_tree_spawn", "1", "-mca", "btl_tcp_if_include", "eth0",
      "-mca", "oob_tcp_if_include", "eth0", "-mca", "plm_rsh_agent", "ssh -p 2222",
      "-x", "FI_PROVIDER", "-x", "NCCL_DEBUG", "-x", "NCCL_SOCKET_IFNAME", "-x", "PATH",
      "-x", "RDMAV_FORK_SAFE", "-mca", "btl_base_verbose", "1", "/usr/local/bin/train", "rank"};
  EXPECT_EQ(cmd.argv, expected);
  // The user's FI_PROVIDER wins; the launcher adds only what is unset.
  const std::map<std::string, std::string> added = {{"NCCL_SOCKET_IFNAME", "eth0"}, {"RDMAV_FORK_SAFE", "1"}};
  EXPECT_EQ(cmd.set_env, added);

  // A list that is not in name order: its first host still leads.
  ml.platform_resources("algo-1", R"(["algo-2", "algo-10", "algo-1"])");
  const JobPlan unordered = make_job_plan(ContractPaths(ml.root()), kCpuEnv);
  EXPECT_FALSE(unordered.resources.is_leader());
  EXPECT_EQ(mpirun_command(unordered, golden_settings(), {}, 4).argv[3], "algo-2:1,algo-10:1,algo-1:1");
}

TEST(SageMakerPlan, RankErrorsAreOrderedAndDescribed) {
  TempDir dir;
  testing::write_text(dir.file("rank-2.txt"), "interrupted: stopped by signal 15 at step 4\n");
  testing::write_text(dir.file("rank-1.txt"), "data.dir '/x': truncated file data_batch_1.bin\n");
  testing::write_text(dir.file("rank-1.exit"), "3\n");
  testing::write_text(dir.file("rank-0.txt"), "comm timeout waiting for rank 1\n");
  testing::write_text(dir.file("notes.txt"), "not a rank file");
  // rank-0 was written after rank-1: rank 1's error caused it.
  const auto later = fs::last_write_time(dir.file("rank-1.txt")) + std::chrono::seconds(2);
  fs::last_write_time(dir.file("rank-0.txt"), later);
  const std::vector<RankError> errors = collect_rank_errors(dir.path(), "algo-2");
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].rank, 1);
  EXPECT_EQ(errors[1].rank, 0);
  EXPECT_EQ(errors[2].rank, 2);
  EXPECT_TRUE(errors[2].interrupted);
  EXPECT_EQ(describe_rank_error(errors[0]),
            "rank 1 on algo-2 failed (exit code 3, data error): data.dir '/x': truncated file data_batch_1.bin");
  const auto round_trip = rank_error_from_json(rank_error_to_json(errors[0]));
  ASSERT_TRUE(round_trip.has_value());
  EXPECT_EQ(round_trip->message, errors[0].message);
  EXPECT_EQ(round_trip->time_ns, errors[0].time_ns);
  EXPECT_FALSE(rank_error_from_json("not json").has_value());

  // The failure file is written once and never replaced.
  FakeOptMl ml(dir);
  remove_tree(ml.path("output"));
  const ContractPaths paths(ml.root());
  EXPECT_TRUE(write_failure_file(paths, "first"));
  EXPECT_FALSE(write_failure_file(paths, "second"));
  EXPECT_EQ(testing::read_text(paths.failure_file()), "first\n");
}

}  // namespace
}  // namespace pipet::sagemaker
