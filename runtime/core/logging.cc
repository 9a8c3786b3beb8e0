#include "runtime/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "runtime/core/errors.h"

namespace pipet {
namespace {
int g_rank = 0;

spdlog::level::level_enum parse_level(const std::string& level, int rank) {
  if (level.empty()) return rank == 0 ? spdlog::level::info : spdlog::level::warn;
  if (level == "debug") return spdlog::level::debug;
  if (level == "info") return spdlog::level::info;
  if (level == "warn") return spdlog::level::warn;
  if (level == "error") return spdlog::level::err;
  throw ConfigError("runtime.log_level: '" + level +
                    "' is not a log level; expected one of debug, info, warn, error");
}
}  // namespace

void init_logging(int rank, const std::string& level) {
  g_rank = rank;
  auto logger = spdlog::get("pipet");
  if (!logger) {
    logger = spdlog::stderr_color_mt("pipet");
  }
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [rank " + std::to_string(rank) + "] %^%l%$ %v");
  logger->set_level(parse_level(level, rank));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

int log_rank() { return g_rank; }

}  // namespace pipet
