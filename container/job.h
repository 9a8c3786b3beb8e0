// From the SageMaker contract to a runnable job: the runtime's TrainConfig
// (hyperparameters through the same schema and messages as `--set`, channels
// onto data paths, outputs onto /opt/ml), the process count, and the mpirun
// command line. Everything here is checked before any process starts, so a
// bad input fails with nothing written but the failure file.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "container/contract.h"
#include "runtime/core/config.h"

namespace pipet::sagemaker {

// Launcher settings from the environment (tests point them at loopback).
struct LauncherSettings {
  std::string launcher_binary;   // this program (the per-rank wrapper runs it too)
  std::string runtime_binary;    // PIPET_RUNTIME_BIN, else `pipetransformer` next to the launcher
  std::string mpirun = "mpirun"; // PIPET_SAGEMAKER_MPIRUN
  std::string rsh_agent;         // PIPET_SAGEMAKER_RSH: command reaching a host; empty = ssh
  std::vector<std::string> extra_mpirun_args;  // PIPET_SAGEMAKER_MPIRUN_ARGS, space-separated
  std::string run_dir = "/tmp/pipet-sagemaker";  // PIPET_SAGEMAKER_RUN_DIR: per-host scratch
  std::string sshd = "/usr/sbin/sshd";           // PIPET_SAGEMAKER_SSHD; "none" = do not start
  double worker_timeout_s = 600;  // PIPET_SAGEMAKER_WORKER_TIMEOUT: leader waits this long for workers
  double leader_timeout_s = 900;  // PIPET_SAGEMAKER_LEADER_TIMEOUT: worker waits this long for the leader
  double probe_timeout_s = 20;    // PIPET_SAGEMAKER_PROBE_TIMEOUT: one reachability probe
  double stop_grace_s = 100;      // PIPET_SAGEMAKER_STOP_GRACE: after SIGTERM, before forcing the job
  double progress_every_s = 10;   // PIPET_SAGEMAKER_PROGRESS_EVERY: waiting messages
};

// Reads the PIPET_SAGEMAKER_* variables; ConfigError naming a bad one.
LauncherSettings launcher_settings_from_environment();

// Hyperparameters of the launcher itself (everything else is a runtime key).
struct LauncherOptions {
  std::string train_channel = "train";
  std::string validation_channel = "validation";
  int processes_per_host = 0;  // 0 = one per device
};

// The launcher's own hyperparameter names, for messages and docs.
const std::vector<std::string>& launcher_hyperparameter_names();

// Devices per host: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L` when
// it exists, else 1 (CPU: one rank per host). `gpus` is true when the count
// came from CUDA devices.
struct DeviceCount {
  int count = 1;
  bool gpus = false;
  std::string source;  // for the log: "CUDA_VISIBLE_DEVICES=0,1", "nvidia-smi", "no GPU found"
};
DeviceCount detect_devices(const std::map<std::string, std::string>& env);

struct JobPlan {
  ContractPaths paths{"/opt/ml"};
  ResourceConfig resources;
  InputDataConfig inputs;
  CheckpointContract checkpoint;
  LauncherOptions options;
  TrainConfig config;                 // validated
  int processes_per_host = 1;
  int total_processes = 1;
  bool efa = false;                   // /dev/infiniband/uverbs* present
  std::vector<std::string> notes;     // what was mapped, for the log
};

// Reads the whole contract and builds the plan. Throws ConfigError (bad
// hyperparameter or contract file) or DataError (missing, empty or
// unreadable channel), each naming the file, key or channel.
JobPlan make_job_plan(const ContractPaths& paths, const std::map<std::string, std::string>& env);

// The environment as a map (the inputs of the plan and the command line).
std::map<std::string, std::string> current_environment();

// The mpirun command line that starts the job, and the variables the
// launcher adds to mpirun's environment (exported to every rank with -x).
struct MpirunCommand {
  std::vector<std::string> argv;
  std::map<std::string, std::string> set_env;
};
MpirunCommand mpirun_command(const JobPlan& plan, const LauncherSettings& settings,
                             const std::map<std::string, std::string>& env, int cpu_count);

// The runtime's command line for one rank (run by the per-rank wrapper).
std::vector<std::string> runtime_command(const LauncherSettings& settings, int rank);

// Per-host scratch files (outside /opt/ml).
std::string generated_config_path(const LauncherSettings& settings);
std::string rank_error_dir(const LauncherSettings& settings);

}  // namespace pipet::sagemaker
