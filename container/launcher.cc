#include "container/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "container/contract.h"
#include "container/failure.h"
#include "container/job.h"
#include "container/process.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/strings.h"

namespace pipet::sagemaker {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A failure with one of the launcher's own exit codes.
class LauncherFailure : public Error {
 public:
  LauncherFailure(LauncherExit code, const std::string& m)
      : Error(static_cast<ExitCode>(static_cast<int>(code)), m) {}
};

// Marker files in the per-host run directory (outside /opt/ml).
std::string marker(const LauncherSettings& s, const std::string& name) { return s.run_dir + "/" + name; }

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void use_launcher_log_pattern() {
  init_logging(0);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
}

std::string last_line(const std::string& text) {
  const std::vector<std::string> lines = split(trim(text), '\n');
  return lines.empty() ? "" : trim(lines.back());
}

// Removes what an earlier launcher left in the run directory (a restarted
// container on the same host), then creates it.
void reset_run_dir(const LauncherSettings& s) {
  std::error_code ec;
  for (const char* name : {"config.json", "host", "ready", "failed", "contacted", "done"})
    fs::remove(marker(s, name), ec);
  if (const std::string problem = remove_tree(rank_error_dir(s)); !problem.empty())
    throw IoError("PIPET_SAGEMAKER_RUN_DIR: " + problem);
  ensure_writable_directory(s.run_dir, "PIPET_SAGEMAKER_RUN_DIR");
  ensure_writable_directory(rank_error_dir(s), "PIPET_SAGEMAKER_RUN_DIR/errors");
}

// The failure file for an input that was rejected before anything started.
int fail_before_start(const ContractPaths& paths, const Error& e, const std::string& host) {
  const int code = static_cast<int>(e.exit_code());
  spdlog::error("[sagemaker] {}", e.what());
  write_failure_file(paths, std::string(e.what()) + "\n\n(SageMaker launcher" +
                                (host.empty() ? "" : " on " + host) + ", exit code " +
                                std::to_string(code) + " (" + exit_code_class(code) +
                                "), before training started; nothing else was written)");
  return code;
}

void start_sshd(const LauncherSettings& s) {
  if (s.sshd == "none") return;
  if (::access(s.sshd.c_str(), X_OK) != 0) {
    spdlog::info("[sagemaker] no sshd at {}: hosts are reached with {}", s.sshd,
                 s.rsh_agent.empty() ? "ssh" : s.rsh_agent);
    return;
  }
  const CommandResult r = run_command({s.sshd}, 30);
  if (r.exit_code != 0)
    throw LauncherFailure(LauncherExit::kLaunchFailed,
                          "cannot start " + s.sshd + " (exit code " + std::to_string(r.exit_code) +
                              "): " + last_line(r.err + r.out) +
                              "; multi-host jobs need sshd on every host");
  spdlog::info("[sagemaker] sshd started");
}

std::vector<std::string> agent_command(const LauncherSettings& s, const std::string& host,
                                       const std::vector<std::string>& remote) {
  std::vector<std::string> argv;
  if (s.rsh_agent.empty()) {
    argv = {"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"};
  } else {
    for (const std::string& part : split(s.rsh_agent, ' '))
      if (!part.empty()) argv.push_back(part);
  }
  argv.push_back(host);
  argv.insert(argv.end(), remote.begin(), remote.end());
  return argv;
}

// Leader: waits until every worker answers the probe with "ready". Returns
// 0, or the stop signal that ended the wait.
int wait_for_workers(const JobPlan& plan, const LauncherSettings& s) {
  std::vector<std::string> pending(plan.resources.hosts.begin() + 1, plan.resources.hosts.end());
  std::map<std::string, std::string> state;
  const auto start = Clock::now();
  auto last_progress = start;
  spdlog::info("[sagemaker] leader {}: waiting up to {:.0f} s for {} worker(s): {}",
               plan.resources.current_host, s.worker_timeout_s, pending.size(), join(pending, ", "));
  while (true) {
    for (auto it = pending.begin(); it != pending.end();) {
      const std::string& host = *it;
      CommandResult r;
      try {
        r = run_command(agent_command(s, host, {s.launcher_binary, "probe"}), s.probe_timeout_s);
      } catch (const LaunchError& e) {
        throw LauncherFailure(LauncherExit::kLaunchFailed,
                              std::string(e.what()) + " (the command that reaches worker hosts; "
                                                      "set PIPET_SAGEMAKER_RSH)");
      }
      const std::string answer = trim(r.out);
      if (r.exit_code == 0 && starts_with(answer, "ready")) {
        spdlog::info("[sagemaker] worker {} is ready ({:.1f} s)", host, seconds_since(start));
        it = pending.erase(it);
        continue;
      }
      if (r.exit_code == 0 && starts_with(answer, "failed")) {
        throw LauncherFailure(LauncherExit::kWorkerFailed,
                              "worker " + host + " rejected its inputs: " + trim(answer.substr(6)));
      }
      state[host] = r.timed_out ? "no answer within " + std::to_string(static_cast<int>(s.probe_timeout_s)) + " s"
                    : r.exit_code == 0 ? "reachable, launcher not ready yet"
                                       : "not reachable (exit code " + std::to_string(r.exit_code) +
                                             (last_line(r.err).empty() ? "" : ": " + last_line(r.err)) + ")";
      ++it;
    }
    if (pending.empty()) return 0;
    const double waited = seconds_since(start);
    std::vector<std::string> described;
    for (const auto& host : pending) described.push_back(host + " (" + state[host] + ")");
    if (waited >= s.worker_timeout_s) {
      throw LauncherFailure(
          LauncherExit::kWorkersUnreachable,
          "worker host(s) " + join(pending, ", ") + " did not become ready within " +
              std::to_string(static_cast<int>(s.worker_timeout_s)) + " s: " + join(described, "; ") +
              ". Check that every host runs this image with sshd and can reach the others "
              "(security group, network interface " + plan.resources.network_interface_name + ")");
    }
    if (std::chrono::duration<double>(Clock::now() - last_progress).count() >= s.progress_every_s) {
      spdlog::info("[sagemaker] still waiting for {} worker(s) after {:.0f} s of {:.0f} s: {}",
                   pending.size(), waited, s.worker_timeout_s, join(described, "; "));
      last_progress = Clock::now();
    }
    if (const int sig = wait_for_stop_signal(std::min(1.0, s.worker_timeout_s - waited))) return sig;
  }
}

// Leader: tells each worker the job's code; returns the errors they report.
std::vector<RankError> notify_workers(const JobPlan& plan, const LauncherSettings& s, int code) {
  std::vector<RankError> remote;
  for (size_t i = 1; i < plan.resources.hosts.size(); ++i) {
    const std::string& host = plan.resources.hosts[i];
    try {
      const CommandResult r = run_command(
          agent_command(s, host, {s.launcher_binary, "notify-done", std::to_string(code)}),
          s.probe_timeout_s);
      if (r.exit_code != 0) {
        spdlog::warn("[sagemaker] could not tell worker {} that the job ended (exit code {}): {}",
                     host, r.exit_code, last_line(r.err));
        continue;
      }
      for (const std::string& line : split(r.out, '\n'))
        if (auto e = rank_error_from_json(line)) remote.push_back(*e);
    } catch (const LaunchError& e) {
      spdlog::warn("[sagemaker] could not tell worker {} that the job ended: {}", host, e.what());
    }
  }
  return remote;
}

// The failure message of a job that ended with `code`.
std::string job_failure_message(std::vector<RankError> errors, int code, const std::string& host,
                                int stop_signal) {
  std::stable_sort(errors.begin(), errors.end(), [](const RankError& a, const RankError& b) {
    if (a.interrupted != b.interrupted) return !a.interrupted;
    return a.time_ns < b.time_ns;
  });
  std::string text;
  if (!errors.empty()) {
    text = describe_rank_error(errors.front());
  } else if (stop_signal != 0) {
    text = "stopped by " + signal_name(stop_signal) + " (exit code " + std::to_string(code) +
           ") before any rank reported its checkpoint";
  } else {
    text = "the training job failed with exit code " + std::to_string(code) + " (" +
           exit_code_class(code) + ") and no rank on " + host +
           " reported an error; see the job's log for the failing rank";
  }
  text += "\n\nThe job's exit code: " + std::to_string(code) + " (" + exit_code_class(code) + ").";
  if (errors.size() > 1) {
    text += "\nOther ranks:";
    for (size_t i = 1; i < errors.size() && i < 8; ++i)
      text += "\n  " + describe_rank_error(errors[i]).substr(0, 300);
  }
  return text;
}

struct Contract {
  ContractPaths paths = contract_paths_from_environment();
  std::string host;  // current_host once known
};

int lead(const JobPlan& plan, const LauncherSettings& s) {
  const bool multi_host = plan.resources.hosts.size() > 1;
  if (multi_host) {
    start_sshd(s);
    int sig = 0;
    try {
      sig = wait_for_workers(plan, s);
    } catch (const Error& e) {
      // Workers already contacted would otherwise wait for a job that never comes.
      notify_workers(plan, s, static_cast<int>(e.exit_code()));
      throw;
    }
    if (sig) {
      const std::string message = "stopped by " + signal_name(sig) + " while waiting for the workers";
      write_failure_file(plan.paths, message);
      notify_workers(plan, s, 128 + sig);
      return 128 + sig;
    }
  }
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const MpirunCommand cmd = mpirun_command(plan, s, current_environment(), cpus);
  std::string shown;
  for (const auto& [name, value] : cmd.set_env) shown += name + "=" + value + " ";
  spdlog::info("[sagemaker] starting {} process(es): {}{}", plan.total_processes, shown, join(cmd.argv, " "));
  SpawnOptions options;
  options.set_env = cmd.set_env;
  options.new_process_group = true;  // signals reach the job through the launcher only
  options.die_with_parent = true;    // a killed launcher (a lost instance) takes the job along
  pid_t pid;
  try {
    pid = spawn(cmd.argv, options);
  } catch (const LaunchError& e) {
    if (multi_host) notify_workers(plan, s, static_cast<int>(LauncherExit::kLaunchFailed));
    throw LauncherFailure(LauncherExit::kLaunchFailed,
                          std::string(e.what()) + " (Open MPI's mpirun; PIPET_SAGEMAKER_MPIRUN names another)");
  }
  SuperviseOptions supervise_options;
  supervise_options.forward_as = SIGUSR1;  // mpirun forwards SIGUSR1 to every rank; SIGTERM it would follow with SIGKILL
  supervise_options.escalate_after_s = s.stop_grace_s;
  supervise_options.child_name = "the training job (mpirun)";
  const SuperviseResult result = supervise(pid, supervise_options);
  const int code = result.exit_code;
  spdlog::info("[sagemaker] training job ended with exit code {} ({})", code, exit_code_class(code));
  std::vector<RankError> errors = collect_rank_errors(rank_error_dir(s), plan.resources.current_host);
  if (multi_host) {
    const std::vector<RankError> remote = notify_workers(plan, s, code);
    errors.insert(errors.end(), remote.begin(), remote.end());
  }
  if (code != 0)
    write_failure_file(plan.paths, job_failure_message(errors, code, plan.resources.current_host,
                                                       result.stop_signal));
  return code;
}

int work(const JobPlan& plan, const LauncherSettings& s) {
  const std::string& leader = plan.resources.hosts.front();
  start_sshd(s);
  write_file_atomic(marker(s, "ready"), plan.resources.current_host + "\n");
  spdlog::info("[sagemaker] worker {} ready; waiting up to {:.0f} s for the leader {}",
               plan.resources.current_host, s.leader_timeout_s, leader);
  const auto start = Clock::now();
  auto last_progress = start;
  while (!path_exists(marker(s, "contacted"))) {
    const double waited = seconds_since(start);
    if (waited >= s.leader_timeout_s)
      throw LauncherFailure(LauncherExit::kLeaderLost,
                            "the leader " + leader + " did not contact worker " +
                                plan.resources.current_host + " within " +
                                std::to_string(static_cast<int>(s.leader_timeout_s)) +
                                " s; check the leader's log and that it can reach this host");
    if (seconds_since(last_progress) >= s.progress_every_s) {
      spdlog::info("[sagemaker] worker {}: still waiting for the leader {} ({:.0f} s of {:.0f} s)",
                   plan.resources.current_host, leader, waited, s.leader_timeout_s);
      last_progress = Clock::now();
    }
    if (const int sig = wait_for_stop_signal(0.2)) {
      write_failure_file(plan.paths, "stopped by " + signal_name(sig) + " before the leader " +
                                         leader + " started the job");
      return 128 + sig;
    }
  }
  spdlog::info("[sagemaker] worker {}: the leader {} is starting the job; waiting for it to end",
               plan.resources.current_host, leader);
  int stop = 0;
  Clock::time_point stop_time{};
  while (!path_exists(marker(s, "done"))) {
    if (stop && seconds_since(stop_time) >= s.stop_grace_s) {
      write_failure_file(plan.paths, "stopped by " + signal_name(stop) + "; the leader " + leader +
                                         " did not report the job's end within " +
                                         std::to_string(static_cast<int>(s.stop_grace_s)) + " s");
      return 128 + stop;
    }
    if (const int sig = wait_for_stop_signal(0.2); sig && !stop) {
      spdlog::info("[sagemaker] {} received: the leader stops the job; waiting for it", signal_name(sig));
      stop = sig;
      stop_time = Clock::now();
    }
  }
  int code = 1;
  try {
    code = std::stoi(trim(read_file(marker(s, "done"))));
  } catch (const std::exception&) {
    spdlog::error("[sagemaker] unreadable job status in {}", marker(s, "done"));
  }
  spdlog::info("[sagemaker] worker {}: the job ended with exit code {} ({})",
               plan.resources.current_host, code, exit_code_class(code));
  if (code != 0) {
    const std::vector<RankError> errors = collect_rank_errors(rank_error_dir(s), plan.resources.current_host);
    std::string message = errors.empty()
                              ? "the training job failed with exit code " + std::to_string(code) + " (" +
                                    exit_code_class(code) + ") on another host; the leader " + leader +
                                    " reports the failing rank"
                              : job_failure_message(errors, code, plan.resources.current_host, stop);
    write_failure_file(plan.paths, message);
  }
  return code;
}

int command_train() {
  use_launcher_log_pattern();
  Contract contract;
  LauncherSettings settings;
  JobPlan plan;
  bool worker = false;
  try {
    settings = launcher_settings_from_environment();
    // A worker's leader probes for these markers; stale ones would lie.
    {
      std::error_code ec;
      for (const char* name : {"ready", "failed", "contacted", "done"}) fs::remove(marker(settings, name), ec);
    }
    try {
      const ResourceConfig resources = read_resource_config(contract.paths);
      contract.host = resources.current_host;
      worker = !resources.is_leader();
    } catch (const Error&) {
      // Reported with everything else by make_job_plan below.
    }
    spdlog::info("[sagemaker] reading the SageMaker contract in {}", contract.paths.root);
    plan = make_job_plan(contract.paths, current_environment());
  } catch (const Error& e) {
    if (worker) {
      std::error_code ec;
      fs::create_directories(settings.run_dir, ec);
      try {
        write_file_atomic(marker(settings, "failed"), std::string(e.what()) + "\n");
      } catch (const Error&) {
      }
    }
    return fail_before_start(contract.paths, e, contract.host);
  }
  for (const std::string& note : plan.notes) spdlog::info("[sagemaker] {}", note);
  try {
    reset_run_dir(settings);
    write_file_atomic(generated_config_path(settings), config_to_json(plan.config).dump(2) + "\n");
    // The rank wrapper tells the runtime its host by this name (PIPET_HOST).
    write_file_atomic(marker(settings, "host"), plan.resources.current_host + "\n");
    // SageMaker creates these; local mode and plain `docker run` may not.
    ensure_writable_directory(plan.paths.model_dir(), "/opt/ml/model");
    ensure_writable_directory(plan.paths.output_data_dir(), "/opt/ml/output/data");
    spdlog::info("[sagemaker] host {} ({} of {}), {}; runtime config {}", plan.resources.current_host,
                 plan.resources.host_index() + 1, plan.resources.hosts.size(),
                 plan.resources.is_leader() ? "leader" : "worker", generated_config_path(settings));
    return plan.resources.is_leader() ? lead(plan, settings) : work(plan, settings);
  } catch (const std::exception& caught) {
    const Error* error = dynamic_cast<const Error*>(&caught);
    const Error internal(ExitCode::kInternal, std::string("internal error: ") + caught.what());
    const Error& e = error ? *error : internal;
    const int code = static_cast<int>(e.exit_code());
    spdlog::error("[sagemaker] {}", e.what());
    write_failure_file(plan.paths, std::string(e.what()) + "\n\n(SageMaker launcher on " +
                                       plan.resources.current_host + ", exit code " +
                                       std::to_string(code) + ", " + exit_code_class(code) + ")");
    return code;
  }
}

int command_rank() {
  const std::string rank_text = env_or("OMPI_COMM_WORLD_RANK", "");
  int rank = -1;
  try {
    rank = std::stoi(rank_text);
  } catch (const std::exception&) {
    std::cerr << "pipet-sagemaker rank: OMPI_COMM_WORLD_RANK is not set; this command runs "
                 "under mpirun, started by the launcher\n";
    return static_cast<int>(ExitCode::kConfig);
  }
  init_logging(rank);
  // Started by mpirun or orted: when that dies, so does this rank (and its
  // runtime, through the same signal below), never an orphaned trainer.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const LauncherSettings settings = launcher_settings_from_environment();
  const std::string error_file = rank_error_dir(settings) + "/rank-" + std::to_string(rank) + ".txt";
  auto record = [&](int code, const std::string& message) {
    try {
      write_file_atomic(rank_error_dir(settings) + "/rank-" + std::to_string(rank) + ".exit",
                        std::to_string(code) + "\n");
      if (!message.empty() && !path_exists(error_file)) write_file_atomic(error_file, message + "\n");
    } catch (const Error& e) {
      spdlog::error("[sagemaker] rank {}: cannot record its status: {}", rank, e.what());
    }
  };
  SpawnOptions options;
  if (path_exists(marker(settings, "host")))
    options.set_env["PIPET_HOST"] = trim(read_file(marker(settings, "host")));
  options.die_with_parent = true;
  // mpirun signals the rank's whole process group; the runtime must see
  // SIGUSR1 only as the SIGTERM this wrapper turns it into.
  options.ignored_signals = {SIGUSR1, SIGUSR2};
  pid_t pid;
  try {
    pid = spawn(runtime_command(settings, rank), options);
  } catch (const LaunchError& e) {
    record(static_cast<int>(LauncherExit::kLaunchFailed),
           std::string(e.what()) + " (the runtime; PIPET_RUNTIME_BIN names another)");
    return static_cast<int>(LauncherExit::kLaunchFailed);
  }
  SuperviseOptions supervise_options;
  supervise_options.forward_as = SIGTERM;
  supervise_options.stop_on_usr = true;
  supervise_options.child_name = "rank " + std::to_string(rank);
  const SuperviseResult result = supervise(pid, supervise_options);
  if (result.exit_code != 0) {
    const int code = result.exit_code;
    record(code, code > 128 && code < 160
                     ? "the runtime was killed by " + signal_name(code - 128) +
                           (code - 128 == SIGKILL ? " (out of memory, or the job was aborted)" : "")
                     : "the runtime exited with code " + std::to_string(code) +
                           " without an error message; see the log");
  }
  return result.exit_code;
}

int command_probe() {
  const LauncherSettings s = launcher_settings_from_environment();
  if (path_exists(marker(s, "failed"))) {
    std::cout << "failed " << split(trim(read_file(marker(s, "failed"))), '\n').front() << std::endl;
    return 0;
  }
  if (path_exists(marker(s, "ready"))) {
    write_file_atomic(marker(s, "contacted"), "1\n");
    std::cout << "ready" << std::endl;
    return 0;
  }
  std::cout << "starting" << std::endl;
  return 0;
}

int command_notify_done(const std::string& code_text) {
  const LauncherSettings s = launcher_settings_from_environment();
  const std::string host = path_exists(marker(s, "ready")) ? trim(read_file(marker(s, "ready"))) : "?";
  const std::vector<RankError> errors = collect_rank_errors(rank_error_dir(s), host);
  if (!errors.empty()) std::cout << rank_error_to_json(errors.front()) << std::endl;
  write_file_atomic(marker(s, "done"), trim(code_text) + "\n");
  return 0;
}

void print_usage() {
  std::cout << "usage: pipet-sagemaker [train]            run the SageMaker training job (/opt/ml)\n"
               "       pipet-sagemaker rank               per-rank wrapper (started by mpirun)\n"
               "       pipet-sagemaker probe              worker readiness (run by the leader)\n"
               "       pipet-sagemaker notify-done CODE   the job ended (run by the leader)\n"
               "See container/README.md for the hyperparameters, environment and exit codes.\n";
}

}  // namespace

int run_launcher(int argc, char** argv) {
  SignalBlock signals;  // before any child exists: no signal slips past the supervisor
  const std::string command = argc > 1 ? argv[1] : "train";
  try {
    if (command == "train") return command_train();
    if (command == "rank") return command_rank();
    if (command == "probe") return command_probe();
    if (command == "notify-done" && argc > 2) return command_notify_done(argv[2]);
    if (command == "--help" || command == "-h" || command == "help") {
      print_usage();
      return 0;
    }
  } catch (const Error& e) {
    std::cerr << "pipet-sagemaker " << command << ": " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::cerr << "pipet-sagemaker " << command << ": internal error: " << e.what() << "\n";
    return static_cast<int>(ExitCode::kInternal);
  }
  std::cerr << "pipet-sagemaker: unknown command '" << command << "'\n";
  print_usage();
  return static_cast<int>(ExitCode::kConfig);
}

}  // namespace pipet::sagemaker
