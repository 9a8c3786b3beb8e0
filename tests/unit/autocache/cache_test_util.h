// Shared helpers of the AutoCache tests: unique job ids, options, a log
// capture, deterministic entry values and shm path checks.
#pragma once

#include "autocache/activation_cache.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace pipet::testing {

// A job id no other test (or concurrent test process) uses.
std::string unique_job(const std::string& label);

// Options with `shm_slots` / `disk_slots` entries of `shape` at every depth
// in `depths` (disk tier in `disk_dir` when disk_slots > 0).
ActivationCacheOptions cache_options(const std::string& job, std::vector<int64_t> shape, uint64_t shm_slots,
                                     uint64_t disk_slots = 0, const std::string& disk_dir = "",
                                     std::vector<int> depths = {1}, CacheDtype dtype = CacheDtype::kF32);

// Values of the entry for `key`: distinct per key, so a torn or recycled
// read shows as a mismatch.
std::vector<float> entry_values(const CacheKey& key, size_t count);

bool shm_exists(const std::string& segment_name);  // "/pipet-cache-x" -> /dev/shm/pipet-cache-x
bool file_exists(const std::string& path);

// Routes spdlog's default logger into a string while alive.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::string text() const { return stream_.str(); }
  int count(const std::string& part) const;

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

}  // namespace pipet::testing
