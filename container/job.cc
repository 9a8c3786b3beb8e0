#include "container/job.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "container/process.h"
#include "runtime/core/errors.h"
#include "runtime/core/strings.h"

extern char** environ;

namespace pipet::sagemaker {
namespace {

namespace fs = std::filesystem;
const char* const kHyperparameters = "hyperparameters.json";

// Keys whose value is the contract's, not the user's: SageMaker uploads only
// these locations.
const std::map<std::string, std::string> kLauncherOwnedKeys = {
    {"output.dir", "the model directory SageMaker uploads (/opt/ml/model)"},
    {"output.metrics_file", "the metrics file in /opt/ml/output/data"},
    {"checkpoint.dir", "the LocalPath of checkpointconfig.json (synced with checkpoint_s3_uri)"},
};

// Path-valued keys: relative values are resolved in /opt/ml/input/data.
const std::vector<std::string> kPathKeys = {"data.dir", "data.train_path", "data.eval_path",
                                            "data.vocab_file", "model.init_from"};

double env_seconds(const char* name, double fallback) {
  const std::string text = env_or(name, "");
  if (text.empty()) return fallback;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (errno != 0 || end == text.c_str() || *end != '\0' || !(value > 0))
    throw ConfigError(std::string("environment variable ") + name + "='" + text +
                      "': expected a positive number of seconds");
  return value;
}

std::string program_directory() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

std::string* path_member(TrainConfig& config, const std::string& key) {
  if (key == "data.dir") return &config.data.dir;
  if (key == "data.train_path") return &config.data.train_path;
  if (key == "data.eval_path") return &config.data.eval_path;
  if (key == "data.vocab_file") return &config.data.vocab_file;
  if (key == "model.init_from") return &config.model.init_from;
  return nullptr;
}

int parse_positive_int(const std::string& key, const std::string& raw) {
  const std::string text = unquote_json_text(raw, std::string(kHyperparameters) + ": key '" + key + "'");
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), ::isdigit);
  const long value = digits && text.size() < 7 ? std::stol(text) : -1;
  if (value < 1)
    throw ConfigError(std::string(kHyperparameters) + ": key '" + key +
                      "': expected a positive integer, got \"" + raw + "\"");
  return static_cast<int>(value);
}

std::string parse_channel_name(const std::string& key, const std::string& raw) {
  const std::string name = unquote_json_text(raw, std::string(kHyperparameters) + ": key '" + key + "'");
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw ConfigError(std::string(kHyperparameters) + ": key '" + key + "': '" + name +
                      "' is not a channel name");
  return name;
}

std::string channel_list(const InputDataConfig& inputs) {
  if (inputs.channels.empty())
    return inputs.file_present ? "inputdataconfig.json lists no channels"
                               : "there is no inputdataconfig.json (no input channels)";
  std::vector<std::string> names;
  for (const auto& [name, channel] : inputs.channels) names.push_back("'" + name + "'");
  return "inputdataconfig.json lists " + join(names, ", ");
}

// Checks a channel's directory is there, readable and not empty; returns it.
std::string checked_channel_dir(const JobPlan& plan, const Channel& channel) {
  const std::string where = "input channel '" + channel.name + "' on host " + plan.resources.current_host;
  if (channel.input_mode == "Pipe")
    throw DataError(where + " uses TrainingInputMode Pipe (a stream of FIFOs); the runtime reads "
                    "files: use input_mode 'File' or 'FastFile'");
  const std::string dir = plan.paths.channel_dir(channel.name);
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (!fs::exists(status))
    throw DataError(where + ": " + dir +
                    " does not exist (inputdataconfig.json lists the channel, but no data arrived)");
  if (!fs::is_directory(status)) throw DataError(where + ": " + dir + " is not a directory");
  DIR* handle = ::opendir(dir.c_str());
  if (!handle) throw DataError(where + ": cannot read " + dir + ": " + std::strerror(errno));
  std::vector<std::string> entries;
  while (dirent* entry = ::readdir(handle)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    entries.push_back(name);
  }
  ::closedir(handle);
  if (entries.empty())
    throw DataError(where + " is empty: " + dir + " has no files" +
                    (channel.distribution == "ShardedByS3Key"
                         ? " (S3DistributionType ShardedByS3Key gave this host no objects: use at "
                           "least as many S3 objects as hosts, or FullyReplicated)"
                         : " (check the S3 prefix given for the channel)"));
  // Every top-level entry must open: catches dangling links and unreadable
  // files before any process starts. Opening reads nothing (FastFile stays lazy).
  std::sort(entries.begin(), entries.end());
  for (size_t i = 0; i < entries.size() && i < 1000; ++i) {
    const std::string path = dir + "/" + entries[i];
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw DataError(where + ": cannot read " + path + ": " + std::strerror(errno));
    ::close(fd);
  }
  return dir;
}

// The single regular file of a folder, or the folder itself: a validation
// channel often holds one file (dev.tsv, a CIFAR test batch).
std::string file_or_folder(const std::string& dir) {
  std::string only;
  int count = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (++count > 1 || !entry.is_regular_file()) return dir;
    only = entry.path().string();
  }
  return count == 1 ? only : dir;
}

bool has_efa_device() {
  glob_t found{};
  const bool any = ::glob("/dev/infiniband/uverbs*", 0, nullptr, &found) == 0 && found.gl_pathc > 0;
  ::globfree(&found);
  return any;
}

std::string find_in_path(const std::string& name, const std::map<std::string, std::string>& env) {
  auto path = env.find("PATH");
  if (path == env.end()) return "";
  for (const std::string& dir : split(path->second, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

bool exported_name(const std::string& name) {
  static const std::set<std::string> exact = {"PATH", "LD_LIBRARY_PATH", "LD_PRELOAD",
                                              "PIPET_RUNTIME_BIN"};
  static const std::vector<std::string> prefixes = {"NCCL_", "FI_",    "OMP_",   "OPENBLAS_",
                                                    "MKL_",  "RDMAV_", "TORCH_", "CUDA_"};
  if (name == "CUDA_VISIBLE_DEVICES") return false;  // each host has its own devices
  if (exact.count(name)) return true;
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return starts_with(name, p); });
}

}  // namespace

const std::vector<std::string>& launcher_hyperparameter_names() {
  static const std::vector<std::string> names = {"train_channel", "validation_channel",
                                                 "processes_per_host"};
  return names;
}

LauncherSettings launcher_settings_from_environment() {
  LauncherSettings s;
  const std::string here = program_directory();
  {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    s.launcher_binary = ec ? std::string("pipet-sagemaker") : self.string();
  }
  s.runtime_binary = env_or("PIPET_RUNTIME_BIN", here + "/pipetransformer");
  s.mpirun = env_or("PIPET_SAGEMAKER_MPIRUN", "mpirun");
  s.rsh_agent = env_or("PIPET_SAGEMAKER_RSH", "");
  for (const std::string& arg : split(env_or("PIPET_SAGEMAKER_MPIRUN_ARGS", ""), ' '))
    if (!arg.empty()) s.extra_mpirun_args.push_back(arg);
  s.run_dir = env_or("PIPET_SAGEMAKER_RUN_DIR", s.run_dir);
  s.sshd = env_or("PIPET_SAGEMAKER_SSHD", s.sshd);
  s.worker_timeout_s = env_seconds("PIPET_SAGEMAKER_WORKER_TIMEOUT", s.worker_timeout_s);
  s.leader_timeout_s = env_seconds("PIPET_SAGEMAKER_LEADER_TIMEOUT", s.leader_timeout_s);
  s.probe_timeout_s = env_seconds("PIPET_SAGEMAKER_PROBE_TIMEOUT", s.probe_timeout_s);
  s.stop_grace_s = env_seconds("PIPET_SAGEMAKER_STOP_GRACE", s.stop_grace_s);
  s.progress_every_s = env_seconds("PIPET_SAGEMAKER_PROGRESS_EVERY", s.progress_every_s);
  return s;
}

std::map<std::string, std::string> current_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}

DeviceCount detect_devices(const std::map<std::string, std::string>& env) {
  DeviceCount out;
  auto visible = env.find("CUDA_VISIBLE_DEVICES");
  if (visible != env.end()) {
    const std::string value = trim(visible->second);
    int count = 0;
    for (const std::string& part : split(value, ','))
      if (!trim(part).empty()) ++count;
    if (value.empty() || value == "NoDevFiles" || starts_with(value, "-1")) count = 0;
    out.source = "CUDA_VISIBLE_DEVICES='" + value + "'";
    if (count > 0) {
      out.count = count;
      out.gpus = true;
    }
    return out;
  }
  const std::string smi = find_in_path("nvidia-smi", env);
  if (smi.empty()) {
    out.source = "no CUDA_VISIBLE_DEVICES and no nvidia-smi: one CPU process per host";
    return out;
  }
  const CommandResult listed = run_command({smi, "-L"}, 30);
  int gpus = 0;
  for (const std::string& line : split(listed.out, '\n'))
    if (starts_with(line, "GPU ")) ++gpus;
  if (listed.exit_code != 0 || gpus == 0) {
    out.source = smi + " -L found no GPU (exit code " + std::to_string(listed.exit_code) +
                 "): one CPU process per host";
    return out;
  }
  out.count = gpus;
  out.gpus = true;
  out.source = smi + " -L";
  return out;
}

JobPlan make_job_plan(const ContractPaths& paths, const std::map<std::string, std::string>& env) {
  JobPlan plan;
  plan.paths = paths;
  const Hyperparameters hyperparameters = read_hyperparameters(paths);
  plan.resources = read_resource_config(paths);
  plan.inputs = read_input_data_config(paths);
  plan.checkpoint = read_checkpoint_config(paths);
  if (!hyperparameters.ignored.empty())
    plan.notes.push_back("platform hyperparameters ignored: " + join(hyperparameters.ignored, ", "));

  // Hyperparameters: the launcher's own first, then the runtime's schema
  // through the same function as `--set` (same parsing, same messages).
  std::vector<std::string> known = config_keys();
  for (const auto& name : launcher_hyperparameter_names()) known.push_back(name);
  std::set<std::string> explicit_keys;
  bool validation_named = false, train_named = false;
  const ConfigSource source{kHyperparameters};
  for (const auto& [key, value] : hyperparameters.values) {
    if (key == "train_channel") {
      plan.options.train_channel = parse_channel_name(key, value);
      train_named = true;
    } else if (key == "validation_channel") {
      plan.options.validation_channel = parse_channel_name(key, value);
      validation_named = true;
    } else if (key == "processes_per_host") {
      plan.options.processes_per_host = parse_positive_int(key, value);
    } else if (kLauncherOwnedKeys.count(key)) {
      throw ConfigError(std::string(kHyperparameters) + ": key '" + key +
                        "' is set by the SageMaker launcher to " + kLauncherOwnedKeys.at(key) +
                        "; remove it");
    } else if (std::find(known.begin(), known.end(), key) == known.end()) {
      throw ConfigError(std::string(kHyperparameters) + ": unknown key '" + key + "'" +
                        did_you_mean(key, known) +
                        "; hyperparameters are the runtime's config keys (`pipetransformer config "
                        "--describe`) or the launcher's own: " +
                        join(launcher_hyperparameter_names(), ", "));
    } else {
      apply_config_text(plan.config, key, value, source);
      explicit_keys.insert(key);
    }
  }
  TrainConfig& config = plan.config;

  // Paths given as hyperparameters: relative ones live in /opt/ml/input/data.
  for (const std::string& key : kPathKeys) {
    std::string* value = path_member(config, key);
    if (!explicit_keys.count(key) || value->empty()) continue;
    *value = (*value)[0] == '/' ? paths.rebase(*value) : paths.data_dir() + "/" + *value;
    std::error_code ec;
    if (!fs::exists(*value, ec))
      throw DataError(std::string(kHyperparameters) + ": key '" + key + "': " + *value +
                      " does not exist on host " + plan.resources.current_host);
  }

  // Channels onto data paths.
  auto channel = [&](const std::string& name) -> const Channel* {
    auto it = plan.inputs.channels.find(name);
    return it == plan.inputs.channels.end() ? nullptr : &it->second;
  };
  const Channel* train = channel(plan.options.train_channel);
  const Channel* validation = channel(plan.options.validation_channel);
  const bool synthetic = starts_with(config.data.dataset, "synthetic-");
  if (synthetic) {
    for (const Channel* c : {train, validation})
      if (c)
        plan.notes.push_back("channel '" + c->name + "' is not used: data.dataset '" +
                             config.data.dataset + "' generates its data");
  } else {
    const bool explicit_data = explicit_keys.count("data.dir") || explicit_keys.count("data.train_path");
    if (!explicit_data) {
      if (!train)
        throw DataError("input channel '" + plan.options.train_channel +
                        "' is missing: data.dataset '" + config.data.dataset +
                        "' reads files, but " + channel_list(plan.inputs) +
                        (train_named ? ""
                                     : "; pass it to fit({'" + plan.options.train_channel +
                                           "': 's3://...'}), name another channel with the "
                                           "train_channel hyperparameter, or set data.dir"));
      config.data.dir = checked_channel_dir(plan, *train);
      plan.notes.push_back("channel '" + train->name + "' -> data.dir " + config.data.dir);
    } else if (train) {
      checked_channel_dir(plan, *train);
    }
    if (validation && !explicit_keys.count("data.eval_path")) {
      config.data.eval_path = file_or_folder(checked_channel_dir(plan, *validation));
      plan.notes.push_back("channel '" + validation->name + "' -> data.eval_path " +
                           config.data.eval_path);
    }
  }
  if (validation_named && !validation)
    throw DataError("input channel '" + plan.options.validation_channel +
                    "' (hyperparameter validation_channel) is missing: " + channel_list(plan.inputs));
  if (train_named && !train && !synthetic && (explicit_keys.count("data.dir") || explicit_keys.count("data.train_path")))
    throw DataError("input channel '" + plan.options.train_channel +
                    "' (hyperparameter train_channel) is missing: " + channel_list(plan.inputs));

  // Outputs onto the contract.
  config.output.dir = paths.model_dir();
  config.output.metrics_file = paths.output_data_dir() + "/metrics.jsonl";
  config.checkpoint.dir = plan.checkpoint.local_path;
  plan.notes.push_back("checkpoints in " + config.checkpoint.dir + " (resume " + config.checkpoint.resume + ")");

  // Processes.
  const DeviceCount devices = detect_devices(env);
  plan.processes_per_host = plan.options.processes_per_host > 0 ? plan.options.processes_per_host : devices.count;
  plan.total_processes = plan.processes_per_host * static_cast<int>(plan.resources.hosts.size());
  if (devices.gpus && !explicit_keys.count("runtime.device")) config.runtime.device = "cuda";
  plan.notes.push_back("devices: " + devices.source + "; " + std::to_string(plan.processes_per_host) +
                       " process(es) per host on " + std::to_string(plan.resources.hosts.size()) +
                       " host(s), runtime.device " + config.runtime.device);
  plan.efa = has_efa_device();

  try {
    validate_config(config);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("invalid configuration from ") + kHyperparameters +
                      " and the input channels: " + e.what());
  }
  return plan;
}

std::string generated_config_path(const LauncherSettings& settings) {
  return settings.run_dir + "/config.json";
}

std::string rank_error_dir(const LauncherSettings& settings) { return settings.run_dir + "/errors"; }

std::vector<std::string> runtime_command(const LauncherSettings& settings, int rank) {
  return {settings.runtime_binary, "--error-file",
          rank_error_dir(settings) + "/rank-" + std::to_string(rank) + ".txt",
          "train", "--config", generated_config_path(settings)};
}

MpirunCommand mpirun_command(const JobPlan& plan, const LauncherSettings& settings,
                             const std::map<std::string, std::string>& env, int cpu_count) {
  MpirunCommand cmd;
  const bool multi_host = plan.resources.hosts.size() > 1;
  const std::string& interface = plan.resources.network_interface_name;
  auto add_default = [&](const std::string& name, const std::string& value) {
    if (!env.count(name)) cmd.set_env[name] = value;
  };
  std::vector<std::string>& a = cmd.argv;
  a = {settings.mpirun, "--allow-run-as-root"};
  if (multi_host) {
    std::vector<std::string> slots;
    for (const auto& host : plan.resources.hosts)  // list order: the leader first
      slots.push_back(host + ":" + std::to_string(plan.processes_per_host));
    a.insert(a.end(), {"--host", join(slots, ",")});
  }
  a.insert(a.end(), {"-np", std::to_string(plan.total_processes), "--bind-to", "none",
                     "--map-by", "slot"});
  if (!multi_host && plan.total_processes > cpu_count) a.push_back("--oversubscribe");
  if (multi_host) {
    // The leader reaches every worker itself (no tree spawn through workers),
    // over the interface SageMaker names.
    a.insert(a.end(), {"-mca", "plm_rsh_no_tree_spawn", "1", "-mca", "btl_tcp_if_include",
                       interface, "-mca", "oob_tcp_if_include", interface});
    if (!settings.rsh_agent.empty()) a.insert(a.end(), {"-mca", "plm_rsh_agent", settings.rsh_agent});
    add_default("NCCL_SOCKET_IFNAME", interface);
  }
  if (plan.efa) {
    add_default("FI_PROVIDER", "efa");
    add_default("RDMAV_FORK_SAFE", "1");
  }
  std::set<std::string> exported;
  for (const auto& [name, value] : env)
    if (exported_name(name)) exported.insert(name);
  for (const auto& [name, value] : cmd.set_env) exported.insert(name);
  for (const auto& name : exported) a.insert(a.end(), {"-x", name});
  a.insert(a.end(), settings.extra_mpirun_args.begin(), settings.extra_mpirun_args.end());
  a.insert(a.end(), {settings.launcher_binary, "rank"});
  return cmd;
}

}  // namespace pipet::sagemaker
