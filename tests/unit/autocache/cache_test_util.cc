#include "tests/unit/autocache/cache_test_util.h"

#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace pipet::testing {

std::string unique_job(const std::string& label) {
  static std::atomic<int> counter{0};
  return "test-" + label + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

ActivationCacheOptions cache_options(const std::string& job, std::vector<int64_t> shape, uint64_t shm_slots,
                                     uint64_t disk_slots, const std::string& disk_dir, std::vector<int> depths,
                                     CacheDtype dtype) {
  ActivationCacheOptions options;
  options.job_id = job;
  options.dtype = dtype;
  uint64_t elements = 1;
  for (int64_t d : shape) elements *= static_cast<uint64_t>(d);
  const uint64_t slot = (elements * cache_dtype_size(dtype) + 63) / 64 * 64;
  for (int depth : depths) options.depth_shapes.push_back({depth, shape});
  options.shm_capacity_bytes = shm_slots * slot;
  options.disk_capacity_bytes = disk_slots * slot;
  options.disk_dir = disk_dir;
  return options;
}

std::vector<float> entry_values(const CacheKey& key, size_t count) {
  std::vector<float> values(count);
  uint64_t state = key.sample * 1000003ull + static_cast<uint64_t>(key.depth) * 7919ull + static_cast<uint64_t>(key.view) * 31ull + 1;
  for (size_t i = 0; i < count; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    values[i] = static_cast<float>(static_cast<int32_t>(state >> 40)) / 1024.0f;
  }
  return values;
}

bool shm_exists(const std::string& segment_name) { return file_exists("/dev/shm" + segment_name); }

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

LogCapture::LogCapture() : previous_(spdlog::default_logger()) {
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

LogCapture::~LogCapture() { spdlog::set_default_logger(previous_); }

int LogCapture::count(const std::string& part) const {
  const std::string all = stream_.str();
  int n = 0;
  for (size_t at = all.find(part); at != std::string::npos; at = all.find(part, at + part.size())) ++n;
  return n;
}

}  // namespace pipet::testing
