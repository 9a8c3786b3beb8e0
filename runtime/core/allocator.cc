#include "runtime/core/allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <cstring>

namespace pipet {
namespace {
constexpr int kMmapThresholdBytes = 32 << 20;  // glibc's largest accepted value
constexpr int kTrimThresholdBytes = 1 << 30;   // keep up to 1 GiB of freed heap
}  // namespace

bool configure_allocator() {
#if defined(__GLIBC__)
  // A user who tuned malloc through the environment keeps their choice.
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables && std::strstr(tunables, "glibc.malloc")) || std::getenv("MALLOC_MMAP_THRESHOLD_") ||
      std::getenv("MALLOC_TRIM_THRESHOLD_")) {
    return false;
  }
  return mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes) == 1 &&
         mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes) == 1;
#else
  return false;
#endif
}

std::vector<std::string> allocator_environment() {
  return {"MALLOC_MMAP_THRESHOLD_=" + std::to_string(kMmapThresholdBytes),
          "MALLOC_TRIM_THRESHOLD_=" + std::to_string(kTrimThresholdBytes)};
}

}  // namespace pipet
