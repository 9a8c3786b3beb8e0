#include "container/failure.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/strings.h"

namespace pipet::sagemaker {
namespace {

namespace fs = std::filesystem;

bool parse_int(const std::string& text, int& out) {
  const std::string t = trim(text);
  if (t.empty() || t.size() > 9 || !std::all_of(t.begin(), t.end(), ::isdigit)) return false;
  out = std::stoi(t);
  return true;
}

}  // namespace

std::string exit_code_class(int code) {
  switch (code) {
    case 0: return "success";
    case 1: return "internal error";
    case 2: return "configuration error";
    case 3: return "data error";
    case 4: return "filesystem or file format error";
    case 5: return "model or checkpoint mismatch";
    case 6: return "communication failure";
    case 7: return "training diverged";
    case 10: return "worker unreachable";
    case 11: return "leader lost";
    case 12: return "launch failed";
    case 13: return "worker rejected its inputs";
    case 143: return "interrupted";
    default:
      if (code > 128 && code < 160) return "killed by signal " + std::to_string(code - 128);
      return "failed";
  }
}

bool write_failure_file(const ContractPaths& paths, const std::string& message) {
  std::error_code ec;
  fs::create_directories(paths.output_dir(), ec);
  const std::string path = paths.failure_file();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST)
      spdlog::warn("[sagemaker] {} already exists; keeping the first failure reason", path);
    else
      spdlog::error("[sagemaker] cannot write {}: {}", path, std::strerror(errno));
    return false;
  }
  std::string text = message;
  if (text.empty() || text.back() != '\n') text += '\n';
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  return left == 0;
}

std::vector<RankError> collect_rank_errors(const std::string& error_dir, const std::string& host) {
  std::vector<RankError> errors;
  std::error_code ec;
  if (!fs::is_directory(error_dir, ec)) return errors;
  for (const auto& entry : fs::directory_iterator(error_dir, ec)) {
    const std::string name = entry.path().filename().string();
    int rank = -1;
    if (!starts_with(name, "rank-") || !ends_with(name, ".txt") ||
        !parse_int(name.substr(5, name.size() - 9), rank))
      continue;
    RankError error;
    error.rank = rank;
    error.host = host;
    try {
      error.message = trim(read_file(entry.path().string(), "rank error file"));
    } catch (const Error&) {
      continue;  // vanished or unreadable: nothing to report from it
    }
    struct stat st {};
    if (::stat(entry.path().c_str(), &st) == 0)
      error.time_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    const std::string exit_path = error_dir + "/rank-" + std::to_string(rank) + ".exit";
    if (path_exists(exit_path)) {
      try {
        parse_int(read_file(exit_path), error.exit_code);
      } catch (const Error&) {
      }
    }
    // The runtime prefixes "rank R of N on host H: " in multi-rank jobs; the
    // composed message says it first already.
    static const std::regex runtime_prefix("^rank [0-9]+ of [0-9]+ on host [^:]*: ");
    error.message = std::regex_replace(error.message, runtime_prefix, "");
    error.interrupted = starts_with(error.message, "interrupted:") || error.exit_code == 143;
    errors.push_back(error);
  }
  std::sort(errors.begin(), errors.end(), [](const RankError& a, const RankError& b) {
    if (a.interrupted != b.interrupted) return !a.interrupted;
    if (a.time_ns != b.time_ns) return a.time_ns < b.time_ns;
    return a.rank < b.rank;
  });
  return errors;
}

std::string describe_rank_error(const RankError& error) {
  std::string head = "rank " + std::to_string(error.rank) + " on " + error.host;
  if (error.interrupted) return head + " stopped: " + error.message;
  if (error.exit_code != 0)
    head += " failed (exit code " + std::to_string(error.exit_code) + ", " +
            exit_code_class(error.exit_code) + ")";
  else
    head += " failed";
  return head + ": " + error.message;
}

std::string rank_error_to_json(const RankError& error) {
  return nlohmann::json{{"rank", error.rank},
                        {"host", error.host},
                        {"message", error.message},
                        {"exit_code", error.exit_code},
                        {"time_ns", error.time_ns},
                        {"interrupted", error.interrupted}}
      .dump();
}

std::optional<RankError> rank_error_from_json(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(trim(text));
    RankError e;
    e.rank = j.at("rank").get<int>();
    e.host = j.at("host").get<std::string>();
    e.message = j.at("message").get<std::string>();
    e.exit_code = j.at("exit_code").get<int>();
    e.time_ns = j.at("time_ns").get<int64_t>();
    e.interrupted = j.at("interrupted").get<bool>();
    return e;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace pipet::sagemaker
