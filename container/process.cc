#include "container/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>

#include "runtime/core/logging.h"
#include "runtime/core/strings.h"

extern char** environ;

namespace pipet::sagemaker {
namespace {

using Clock = std::chrono::steady_clock;

sigset_t supervised_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGCHLD, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  return set;
}

sigset_t g_previous_mask;

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

// Waits up to `seconds` for one supervised signal; 0 on timeout.
int take_signal(double seconds) {
  sigset_t set = supervised_signals();
  if (seconds < 0) seconds = 0;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
  siginfo_t info;
  const int sig = sigtimedwait(&set, &info, &ts);
  return sig < 0 ? 0 : sig;
}

bool is_stop_signal(int sig, bool usr_too) {
  return sig == SIGTERM || sig == SIGINT || (usr_too && (sig == SIGUSR1 || sig == SIGUSR2));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

SignalBlock::SignalBlock() {
  sigset_t set = supervised_signals();
  sigprocmask(SIG_BLOCK, &set, &g_previous_mask);
}

SignalBlock::~SignalBlock() { sigprocmask(SIG_SETMASK, &g_previous_mask, nullptr); }

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  for (const std::string& dir : split(env_or("PATH", "/usr/local/bin:/usr/bin:/bin"), ':')) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    default: return "signal " + std::to_string(signal_number);
  }
}

int exit_status_code(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

pid_t spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) throw LaunchError("spawn: empty command");
  const std::string program = find_program(argv[0]);
  if (program.empty())
    throw LaunchError("cannot start '" + argv[0] + "': not found or not executable" +
                      (argv[0].find('/') == std::string::npos ? " (searched PATH)" : ""));

  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> env_storage;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    if (!options.set_env.count(entry.substr(0, entry.find('=')))) env_storage.push_back(entry);
  }
  for (const auto& [name, value] : options.set_env) env_storage.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (auto& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);

  // Reports an exec failure's errno back to the parent.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0)
    throw LaunchError("cannot start '" + argv[0] + "': pipe: " + std::strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(report[0]);
    ::close(report[1]);
    throw LaunchError("cannot start '" + argv[0] + "': fork: " + std::strerror(err));
  }
  if (pid == 0) {
    ::close(report[0]);
    if (options.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
    }
    if (options.new_process_group) ::setpgid(0, 0);
    for (int s = 1; s < NSIG; ++s) {
      if (s == SIGKILL || s == SIGSTOP) continue;
      ::signal(s, SIG_DFL);
    }
    for (int s : options.ignored_signals) ::signal(s, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (options.stdin_null) {
      const int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) {
        ::dup2(null_fd, STDIN_FILENO);
        if (null_fd != STDIN_FILENO) ::close(null_fd);
      }
    }
    if (options.stdout_fd >= 0) ::dup2(options.stdout_fd, STDOUT_FILENO);
    if (options.stderr_fd >= 0) ::dup2(options.stderr_fd, STDERR_FILENO);
    ::execve(program.c_str(), argp.data(), envp.data());
    const int err = errno;
    (void)!::write(report[1], &err, sizeof(err));
    ::_exit(127);
  }
  ::close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    int status;
    ::waitpid(pid, &status, 0);
    throw LaunchError("cannot start '" + program + "': " + std::strerror(child_errno));
  }
  return pid;
}

int reap_finished_children() {
  int reaped = 0;
  int status;
  while (::waitpid(-1, &status, WNOHANG) > 0) ++reaped;
  return reaped;
}

SuperviseResult supervise(pid_t child, const SuperviseOptions& options) {
  SuperviseResult result;
  bool forwarded = false, escalated = false, killed = false;
  Clock::time_point stop_time{};
  while (true) {
    // Reap everything that ended; our child's status is the job's.
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid == child) {
        result.exit_code = exit_status_code(status);
        // Adopted orphans still running are not ours to wait for.
        reap_finished_children();
        return result;
      }
    }
    if (pid < 0 && errno == ECHILD) {
      // Someone else reaped it: should not happen, but never hang on it.
      result.exit_code = 1;
      return result;
    }
    double wait_s = 1.0;
    if (forwarded) {
      const double since = std::chrono::duration<double>(Clock::now() - stop_time).count();
      if (options.escalate_after_s > 0 && !escalated && since >= options.escalate_after_s) {
        spdlog::warn("[sagemaker] {} still running {:.0f} s after {}; sending SIGTERM",
                     options.child_name, since, signal_name(result.stop_signal));
        ::kill(child, SIGTERM);
        escalated = true;
      }
      if (escalated && !killed && since >= options.escalate_after_s + options.kill_after_s) {
        spdlog::warn("[sagemaker] {} ignored SIGTERM; killing it", options.child_name);
        ::kill(-child, SIGKILL);
        ::kill(child, SIGKILL);
        killed = true;
      }
    }
    const int sig = take_signal(wait_s);
    if (sig == 0 || sig == SIGCHLD) continue;
    if (!is_stop_signal(sig, options.stop_on_usr)) continue;
    if (forwarded) {
      spdlog::info("[sagemaker] {} received again; {} is already stopping", signal_name(sig),
                   options.child_name);
      continue;
    }
    forwarded = true;
    result.stop_signal = sig;
    stop_time = Clock::now();
    spdlog::info("[sagemaker] {} received: asking {} to stop ({} to pid {})", signal_name(sig),
                 options.child_name, signal_name(options.forward_as), child);
    ::kill(child, options.forward_as);
  }
}

int wait_for_stop_signal(double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(seconds));
  while (true) {
    reap_finished_children();
    const double left = seconds_left(deadline);
    if (left <= 0) return 0;
    const int sig = take_signal(left < 1.0 ? left : 1.0);
    if (sig == SIGTERM || sig == SIGINT) return sig;
  }
}

CommandResult run_command(const std::vector<std::string>& argv, double timeout_s) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw LaunchError("pipe: " + std::string(std::strerror(errno)));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw LaunchError("pipe: " + std::string(std::strerror(errno)));
  }
  SpawnOptions options;
  options.new_process_group = true;  // a timeout kills the whole command
  options.stdout_fd = out_pipe[1];
  options.stderr_fd = err_pipe[1];
  pid_t pid;
  try {
    pid = spawn(argv, options);
  } catch (...) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    throw;
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);

  CommandResult result;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    const double left = seconds_left(deadline);
    if (left <= 0) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      break;
    }
    const int ready = ::poll(fds, 2, static_cast<int>(left * 1000 < 200 ? left * 1000 + 1 : 200));
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        close_fd(fds[i].fd);
        --open_fds;
        continue;
      }
      (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
    }
  }
  for (auto& fd : fds) close_fd(fd.fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = result.timed_out ? 124 : exit_status_code(status);
  return result;
}

}  // namespace pipet::sagemaker
