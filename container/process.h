// Child processes for the launcher, which runs as PID 1 in the container:
// spawning with a clean signal state, supervising a job (forwarding stop
// signals, reaping every child including adopted orphans, escalating when a
// job ignores a stop), and short commands with a timeout (probes,
// nvidia-smi). Signals are received synchronously: the supervised set is
// blocked for the whole process (SignalBlock) and taken with sigtimedwait,
// so no handler runs at an awkward moment and none can be missed.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "runtime/core/errors.h"

namespace pipet::sagemaker {

// A process could not be started (missing binary, fork failure).
class LaunchError : public Error {
 public:
  explicit LaunchError(const std::string& m) : Error(ExitCode::kInternal, m) {}
};

// Blocks SIGTERM, SIGINT, SIGCHLD, SIGUSR1 and SIGUSR2 while alive; the
// previous mask comes back on destruction. Create one at the start of main.
class SignalBlock {
 public:
  SignalBlock();
  ~SignalBlock();
  SignalBlock(const SignalBlock&) = delete;
  SignalBlock& operator=(const SignalBlock&) = delete;
};

struct SpawnOptions {
  std::map<std::string, std::string> set_env;  // added to / replacing the inherited environment
  bool new_process_group = false;  // keeps terminal Ctrl-C and group kills away from it
  bool stdin_null = true;
  bool die_with_parent = false;    // PR_SET_PDEATHSIG: SIGKILL when the launcher dies
  std::vector<int> ignored_signals;  // SIG_IGN survives exec
  int stdout_fd = -1;              // -1 = inherit
  int stderr_fd = -1;              // -1 = inherit
};

// Starts argv[0] (looked up in PATH when it has no '/'). Throws LaunchError
// naming the program and errno when it cannot be executed.
pid_t spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Exit status as a shell reports it: the code, or 128 + signal.
int exit_status_code(int wait_status);

std::string signal_name(int signal_number);

struct SuperviseOptions {
  // First SIGTERM/SIGINT (and SIGUSR1/SIGUSR2 when `stop_on_usr`) received:
  // this signal goes to the child once.
  int forward_as = 15;
  bool stop_on_usr = false;
  // After a stop was forwarded: SIGTERM to the child after `escalate_after_s`
  // (0 = never), SIGKILL to its process group `kill_after_s` later.
  double escalate_after_s = 0;
  double kill_after_s = 15;
  std::string child_name = "job";
};

struct SuperviseResult {
  int exit_code = 0;        // exit code, or 128 + signal
  int stop_signal = 0;      // the stop signal received, 0 if none
};

// Waits for `child`, forwarding stop signals as configured and reaping any
// other process that ends meanwhile (PID 1 adopts orphans).
SuperviseResult supervise(pid_t child, const SuperviseOptions& options);

// Reaps finished children without waiting; returns how many.
int reap_finished_children();

// Waits up to `seconds` for a stop signal (SIGTERM/SIGINT), reaping children
// meanwhile. Returns the signal, or 0 when the time passed.
int wait_for_stop_signal(double seconds);

struct CommandResult {
  int exit_code = -1;   // 128 + signal when killed; 124 on timeout
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs a short command, capturing its output, killed after `timeout_s`.
// Throws LaunchError when it cannot be started.
CommandResult run_command(const std::vector<std::string>& argv, double timeout_s);

// The value of an environment variable, or `fallback` when unset or empty.
std::string env_or(const char* name, const std::string& fallback);

// Absolute path of a program: `name` itself when it contains '/', else the
// first executable match in PATH; empty when not found.
std::string find_program(const std::string& name);

}  // namespace pipet::sagemaker
