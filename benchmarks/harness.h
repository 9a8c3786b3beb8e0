// The shared benchmark harness: a timing loop (warm-up, then N timed
// iterations summarised by median/min/max), the flags every benchmark takes,
// an aligned result table, a JSON result file, and the small process and
// scratch-directory helpers the PyTorch comparisons need. Each benchmark is
// one file on top of this (benchmarks/README.md lists them and their formulas).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace pipet::bench {

// Flags shared by every benchmark program.
struct HarnessOptions {
  int warmup = 3;          // untimed iterations before timing
  int iterations = 10;     // timed iterations
  std::string json_path;   // where to write the JSON results; empty = none
};

// The end of every single-process benchmark's main: parses the command line
// (--help exits 0, a bad flag exits with the config code), then runs `body`.
// A pipet::Error prints "<program>: error: ..." and exits with its code,
// anything else "<program>: internal error: ..." with the internal code;
// <program> is the app's name.
int run_benchmark(CLI::App& app, int argc, char** argv, const std::function<int()>& body);

// Registers --warmup, --iterations and --json on `app` (defaults shown in --help).
void add_harness_flags(CLI::App& app, HarnessOptions& options);
// Throws ConfigError naming the flag for values out of range.
void validate_harness_options(const HarnessOptions& options);

// Wall-clock times of the timed iterations, in milliseconds.
struct TimingStats {
  std::vector<double> samples_ms;
  double median_ms = 0.0;
  double min_ms = 0.0;
  double max_ms = 0.0;

  nlohmann::json to_json() const;
};

// Summarises samples (median of an even count = mean of the middle two).
// Throws ConfigError when `samples_ms` is empty.
TimingStats summarize(std::vector<double> samples_ms);

// Runs `body` `warmup` times untimed, then `iterations` times, each timed on
// the steady clock on its own.
TimingStats time_iterations(int warmup, int iterations, const std::function<void()>& body);

// Milliseconds on the steady clock since an arbitrary origin, for timing parts
// of an iteration.
double now_ms();

// A text table with columns aligned to their widest cell; numbers are
// right-aligned, text left-aligned.
class ResultTable {
 public:
  explicit ResultTable(std::vector<std::string> headers);
  // Throws an internal Error when the cell count differs from the headers.
  void add_row(std::vector<std::string> cells);
  void print(std::ostream& out) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "12.35" for format_fixed(12.345, 2).
std::string format_fixed(double value, int decimals);

// Machine facts for the result header and JSON: CPU model, cores, load
// average, LibTorch version, BLAS, OS, OMP_WAIT_POLICY.
nlohmann::json environment_json();
// One line: "cpu: ... | cores: 2 | load: 0.31 | libtorch 1.13.1 | Debian GNU/Linux 12".
std::string environment_line(const nlohmann::json& environment);

// Writes `document` (pretty-printed) to `path` atomically. Throws IoError.
void write_json_results(const std::string& path, const nlohmann::json& document);

// |a - b| / max(|a|, |b|), 0 when both are 0; infinity when either is not finite.
double relative_difference(double a, double b);

// Quotes `word` for /bin/sh: 'it'\''s'.
std::string shell_quote(const std::string& word);

struct CommandResult {
  int exit_code = -1;   // the exit status, or 128 + signal when killed by one
  std::string output;   // everything the command wrote on stdout
};

// Runs `command` through /bin/sh, capturing stdout (stderr passes through to
// ours). Throws IoError when the shell cannot be started.
CommandResult run_command(const std::string& command);


// A private temporary directory, removed with its contents on destruction
// unless keep() was called.
class ScratchDir {
 public:
  // `prefix` names the directory under $TMPDIR (or /tmp). Throws IoError.
  explicit ScratchDir(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

}  // namespace pipet::bench
