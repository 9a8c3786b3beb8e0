// Runs a real child process for end-to-end tests: captures stdout and stderr,
// enforces a timeout, and can send a signal once a marker appears on stdout.
#pragma once

#include <string>
#include <vector>

namespace pipet::testing {

struct ProcessResult {
  int exit_code = -1;     // exit status, or 128 + signal when killed by one
  std::string out;
  std::string err;
  bool timed_out = false;
};

struct ProcessOptions {
  double timeout_seconds = 120.0;
  std::vector<std::string> extra_env;  // "NAME=value", replacing an inherited NAME
  std::vector<std::string> unset_env;  // names removed from the inherited environment
  // When non-empty: send `signal_number` once stdout contains this text.
  std::string signal_on_stdout;
  int signal_number = 15;
};

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

}  // namespace pipet::testing
