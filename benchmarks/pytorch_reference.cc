#include "benchmarks/pytorch_reference.h"

#include "benchmarks/harness.h"
#include "runtime/core/strings.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cctype>

namespace pipet::bench {
namespace {

std::string thread_environment(int threads) {
  const std::string n = std::to_string(threads);
  return "OMP_NUM_THREADS=" + n + " OPENBLAS_NUM_THREADS=" + n + " MKL_NUM_THREADS=" + n + " ";
}

// NAME='value' for /bin/sh: only the value may be quoted, or the shell takes
// the word for a command name.
std::string shell_assignment(const std::string& assignment) {
  const auto equals = assignment.find('=');
  const std::string name = assignment.substr(0, equals);
  const bool valid = equals != std::string::npos && !name.empty() &&
                     std::isdigit(static_cast<unsigned char>(name[0])) == 0 &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
                     });
  PIPET_CHECK(valid, "not an environment assignment NAME=value: '" + assignment + "'");
  return name + "=" + shell_quote(assignment.substr(equals + 1));
}

// The last non-empty line of `text`.
std::string last_line(const std::string& text) {
  const auto lines = split(text, '\n');
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    const auto line = trim(*it);
    if (!line.empty()) return line;
  }
  return "";
}

}  // namespace

PythonTorch probe_python_torch(const std::string& python) {
  PythonTorch probe;
  probe.python = python;
  if (access(python.c_str(), X_OK) != 0) {
    probe.reason = python + " is not an executable file";
    return probe;
  }
  const auto result = run_command(shell_quote(python) +
                                  " -c 'import torch; print(torch.__version__)' 2>/dev/null");
  if (result.exit_code != 0) {
    probe.reason = python + " cannot import torch (install python3-torch)";
    return probe;
  }
  probe.available = true;
  probe.version = last_line(result.output);
  return probe;
}

nlohmann::json run_python_reference(const PythonTorch& python, const std::string& script,
                                    const std::vector<std::string>& args, int threads,
                                    const std::vector<std::string>& environment) {
  PIPET_CHECK(python.available, "run_python_reference called without torch: " + python.reason);
  std::string command = thread_environment(threads);
  for (const auto& assignment : environment) command += shell_assignment(assignment) + " ";
  command += shell_quote(python.python) + " " + shell_quote(script);
  for (const auto& arg : args) command += " " + shell_quote(arg);
  const auto result = run_command(command);
  if (result.exit_code != 0) {
    throw ReferenceFailed("the PyTorch reference exited with status " +
                          std::to_string(result.exit_code) + " (its stderr is above): " + command);
  }
  const std::string line = last_line(result.output);
  nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    throw ReferenceFailed("the PyTorch reference printed no JSON object on its last stdout line ('" +
                          line.substr(0, 200) + "'): " + command);
  }
  return parsed;
}

}  // namespace pipet::bench
