#include "runtime/engine/metrics.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"
#include "runtime/core/threads.h"

namespace pipet {
namespace {

std::string format_value(const MetricValue& value) {
  if (auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&value)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.6g", *d);
    return buf;
  }
  return std::get<std::string>(value);
}

nlohmann::json to_json(const MetricValue& value) {
  if (auto* i = std::get_if<int64_t>(&value)) return *i;
  if (auto* d = std::get_if<double>(&value)) {
    return std::isfinite(*d) ? nlohmann::json(*d) : nlohmann::json(format_value(value));
  }
  return std::get<std::string>(value);
}

}  // namespace

MetricsLog::MetricsLog(const std::string& jsonl_path, bool print_to_stdout)
    // mpirun hands rank 0 a pseudo-terminal, but its output is a log that
    // metric scrapers read: no carriage-return progress bars there.
    : print_(print_to_stdout),
      tty_(isatty(STDOUT_FILENO) == 1 && !launched_by_mpi_launcher()) {
  if (!jsonl_path.empty()) {
    file_ = std::fopen(jsonl_path.c_str(), "a");
    if (!file_) {
      throw IoError("output.metrics_file: cannot open '" + jsonl_path +
                    "' for appending: " + std::strerror(errno));
    }
  }
}

MetricsLog::~MetricsLog() {
  clear_progress();
  if (file_) std::fclose(file_);
}

std::string MetricsLog::format_line(const std::string& event, const MetricFields& fields) {
  std::string line = "event=" + event + ";";
  for (const auto& [name, value] : fields) line += " " + name + "=" + format_value(value) + ";";
  return line;
}

void MetricsLog::emit(const std::string& event, const MetricFields& fields) {
  if (print_) {
    clear_progress();
    std::string line = format_line(event, fields) + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }
  if (file_) {
    nlohmann::json record;
    record["event"] = event;
    record["time"] = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    for (const auto& [name, value] : fields) record[name] = to_json(value);
    std::string line = record.dump() + "\n";
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
      throw IoError("output.metrics_file: write failed: " + std::string(std::strerror(errno)));
    }
  }
}

void MetricsLog::progress(int64_t done, int64_t total, const std::string& text) {
  if (!print_ || !tty_ || total <= 0) return;
  const int width = 30;
  const int filled = static_cast<int>(width * std::min<int64_t>(done, total) / total);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stdout, "\r[%s] %lld/%lld %s\033[K", bar.c_str(), static_cast<long long>(done),
               static_cast<long long>(total), text.c_str());
  std::fflush(stdout);
  progress_shown_ = true;
}

void MetricsLog::clear_progress() {
  if (progress_shown_) {
    std::fputs("\r\033[K", stdout);
    progress_shown_ = false;
  }
}

}  // namespace pipet
