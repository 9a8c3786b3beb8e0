#include "benchmarks/harness.h"

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/strings.h"

#include <pipet/build_config.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <ostream>
#include <sstream>
#include <thread>

namespace pipet::bench {
namespace {

// True for cells that read as numbers ("12.5", "-3", "1.2e-05", "0.98x").
bool looks_numeric(const std::string& cell) {
  if (cell.empty()) return false;
  char* end = nullptr;
  std::strtod(cell.c_str(), &end);
  return end != cell.c_str() && (*end == '\0' || std::strcmp(end, "x") == 0);
}

// The value of `key` in a "key: value" or KEY=value file, or "" when absent.
std::string read_key(const std::string& path, const std::string& key, char separator) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find(separator);
    if (at == std::string::npos || trim(line.substr(0, at)) != key) continue;
    std::string value = trim(line.substr(at + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    return value;
  }
  return "";
}

double load_average() {
  std::ifstream in("/proc/loadavg");
  double one_minute = -1.0;
  in >> one_minute;
  return in ? one_minute : -1.0;
}

// Which BLAS libtorch resolves to: Debian switches libblas.so.3 between
// implementations with update-alternatives.
std::string blas_name() {
  std::error_code error;
  const auto target =
      std::filesystem::canonical("/usr/lib/x86_64-linux-gnu/libblas.so.3", error).string();
  if (error) return "unknown";
  if (target.find("openblas") != std::string::npos) return "OpenBLAS (" + target + ")";
  if (target.find("blis") != std::string::npos) return "BLIS (" + target + ")";
  if (target.find("atlas") != std::string::npos) return "ATLAS (" + target + ")";
  return target;
}

}  // namespace

int run_benchmark(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ExitCode::kConfig);
  }
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << app.get_name() << ": error: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::cerr << app.get_name() << ": internal error: " << e.what() << "\n";
    return static_cast<int>(ExitCode::kInternal);
  }
}

void add_harness_flags(CLI::App& app, HarnessOptions& options) {
  app.add_option("--warmup", options.warmup, "Untimed iterations before timing")
      ->capture_default_str();
  app.add_option("--iterations", options.iterations, "Timed iterations (median/min/max over them)")
      ->capture_default_str();
  app.add_option("--json", options.json_path, "Also write the results as JSON to this file")
      ->capture_default_str();
}

void validate_harness_options(const HarnessOptions& options) {
  if (options.warmup < 0) {
    throw ConfigError("--warmup must be >= 0, got " + std::to_string(options.warmup));
  }
  if (options.iterations < 1) {
    throw ConfigError("--iterations must be >= 1, got " + std::to_string(options.iterations));
  }
}

nlohmann::json TimingStats::to_json() const {
  return nlohmann::json{{"median_ms", median_ms},
                        {"min_ms", min_ms},
                        {"max_ms", max_ms},
                        {"samples_ms", samples_ms}};
}

TimingStats summarize(std::vector<double> samples_ms) {
  if (samples_ms.empty()) throw ConfigError("no timed iterations to summarise (--iterations 0?)");
  TimingStats stats;
  stats.samples_ms = samples_ms;
  std::sort(samples_ms.begin(), samples_ms.end());
  const size_t n = samples_ms.size();
  stats.median_ms = n % 2 == 1 ? samples_ms[n / 2] : 0.5 * (samples_ms[n / 2 - 1] + samples_ms[n / 2]);
  stats.min_ms = samples_ms.front();
  stats.max_ms = samples_ms.back();
  return stats;
}

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

TimingStats time_iterations(int warmup, int iterations, const std::function<void()>& body) {
  for (int i = 0; i < warmup; ++i) body();
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(std::max(iterations, 0)));
  for (int i = 0; i < iterations; ++i) {
    const double start = now_ms();
    body();
    samples.push_back(now_ms() - start);
  }
  return summarize(std::move(samples));
}

ResultTable::ResultTable(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void ResultTable::add_row(std::vector<std::string> cells) {
  PIPET_CHECK(cells.size() == headers_.size(),
              "a table row has " + std::to_string(cells.size()) + " cells for " +
                  std::to_string(headers_.size()) + " columns");
  rows_.push_back(std::move(cells));
}

void ResultTable::print(std::ostream& out) const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) {
    widths[c] = headers_[c].size();
    for (const auto& row : rows_) widths[c] = std::max(widths[c], row[c].size());
  }
  const auto print_row = [&](const std::vector<std::string>& cells, bool header) {
    for (size_t c = 0; c < cells.size(); ++c) {
      out << (c == 0 ? "" : "  ");
      const bool right = !header && looks_numeric(cells[c]);
      const bool last = c + 1 == cells.size();
      // The last column is not padded on the right (no trailing blanks).
      const int width = (last && !right) ? 0 : static_cast<int>(widths[c]);
      out << (right ? std::right : std::left) << std::setw(width) << cells[c];
    }
    out << std::left << '\n';
  };
  print_row(headers_, true);
  size_t total = 0;
  for (size_t w : widths) total += w;
  out << std::string(total + 2 * (widths.size() - 1), '-') << '\n';
  for (const auto& row : rows_) print_row(row, false);
}

std::string format_fixed(double value, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << value;
  return out.str();
}

nlohmann::json environment_json() {
  nlohmann::json env;
  env["cpu"] = read_key("/proc/cpuinfo", "model name", ':');
  env["cores"] = std::thread::hardware_concurrency();
  env["load_average_1min"] = load_average();
  env["libtorch"] = PIPET_TORCH_VERSION;
  env["blas"] = blas_name();
  env["os"] = read_key("/etc/os-release", "PRETTY_NAME", '=');
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  env["omp_wait_policy"] = wait_policy != nullptr ? wait_policy : "";
  utsname names{};
  if (uname(&names) == 0) env["kernel"] = std::string(names.release);
  return env;
}

std::string environment_line(const nlohmann::json& env) {
  const auto wait_policy = env.value("omp_wait_policy", std::string());
  return "cpu: " + env.value("cpu", std::string("unknown")) +
         " | cores: " + std::to_string(env.value("cores", 0)) +
         " | load: " + format_fixed(env.value("load_average_1min", -1.0), 2) +
         " | libtorch " + env.value("libtorch", std::string("?")) +
         " | blas: " + env.value("blas", std::string("?")) +
         " | " + env.value("os", std::string("unknown OS")) + " | OMP_WAIT_POLICY=" +
         (wait_policy.empty() ? std::string("(unset: libgomp spins)") : wait_policy);
}

void write_json_results(const std::string& path, const nlohmann::json& document) {
  write_file_atomic(path, document.dump(2) + "\n");
}

double relative_difference(double a, double b) {
  if (!std::isfinite(a) || !std::isfinite(b)) return std::numeric_limits<double>::infinity();
  const double scale = std::max(std::fabs(a), std::fabs(b));
  return scale == 0.0 ? 0.0 : std::fabs(a - b) / scale;
}

std::string shell_quote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

namespace {

// popen/pclose as an owned handle, so an exception while reading still reaps
// the child.
class Pipe {
 public:
  explicit Pipe(FILE* stream) : stream_(stream) {}
  ~Pipe() {
    if (stream_ != nullptr) pclose(stream_);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  FILE* get() const { return stream_; }
  // Waits for the child; returns its wait status.
  int close() {
    const int status = pclose(stream_);
    stream_ = nullptr;
    return status;
  }

 private:
  FILE* stream_;
};

}  // namespace

CommandResult run_command(const std::string& command) {
  std::fflush(nullptr);  // our buffered output must not interleave with the child's
  Pipe pipe(popen(command.c_str(), "r"));
  if (pipe.get() == nullptr) {
    throw IoError("cannot start /bin/sh for: " + command + " (" + std::strerror(errno) + ")");
  }
  CommandResult result;
  std::array<char, 4096> buffer{};
  size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe.get())) > 0) {
    result.output.append(buffer.data(), got);
  }
  const int status = pipe.close();
  if (status == -1) {
    throw IoError("cannot collect the exit status of: " + command + " (" + std::strerror(errno) + ")");
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

ScratchDir::ScratchDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + prefix +
                        "-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) {
    throw IoError("cannot create a scratch directory " + pattern + ": " + std::strerror(errno) +
                  " (set TMPDIR to a writable directory)");
  }
  path_ = buffer.data();
}

ScratchDir::~ScratchDir() {
  if (keep_) return;
  remove_tree(path_);  // never throws; a leftover temp dir is harmless (runtime/core/files.h)
}

}  // namespace pipet::bench
