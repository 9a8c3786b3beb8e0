// Metrics: one flushed `name=value;` line per event on stdout (what a
// SageMaker metric regex captures; never carriage-return progress in that
// stream unless stdout is a terminal), and the same event as a JSON line in a
// file that survives the run.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace pipet {

using MetricValue = std::variant<int64_t, double, std::string>;
using MetricFields = std::vector<std::pair<std::string, MetricValue>>;

class MetricsLog {
 public:
  // `jsonl_path` empty = no file. The file is appended to (a resumed run
  // continues it). Throws IoError naming the path if it cannot be opened.
  MetricsLog(const std::string& jsonl_path, bool print_to_stdout);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void emit(const std::string& event, const MetricFields& fields);

  // A live progress line, only when stdout is a terminal.
  void progress(int64_t done, int64_t total, const std::string& text);

  // The stdout form of an event: "event=train; step=3; train_loss=0.5;".
  static std::string format_line(const std::string& event, const MetricFields& fields);

 private:
  void clear_progress();
  std::FILE* file_ = nullptr;
  bool print_;
  bool tty_;
  bool progress_shown_ = false;
};

}  // namespace pipet
