// Logging: spdlog on stderr (stdout is reserved for the metrics stream), the
// rank in every line, rank 0 at info and other ranks at warn by default.
// Messages carry a subsystem tag: PIPET_LOG_INFO("[data] {} samples", n).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace pipet {

// Installs the process-wide logger. `level` is "debug", "info", "warn" or
// "error"; empty means the default for the rank (info on 0, warn elsewhere).
// Safe to call again (e.g. once the rank is known).
void init_logging(int rank, const std::string& level = "");

// The rank given to init_logging (0 before it is called).
int log_rank();

}  // namespace pipet
