#include "runtime/core/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace pipet {

void configure_allocator() {
  // A user who tuned malloc through the environment keeps their choice.
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables && std::strstr(tunables, "glibc.malloc")) || std::getenv("MALLOC_MMAP_THRESHOLD_") ||
      std::getenv("MALLOC_TRIM_THRESHOLD_")) {
    return;
  }
  constexpr int kMmapThreshold = 32 << 20;   // blocks above 32 MiB still come from mmap
  constexpr int kTrimThreshold = 256 << 20;  // keep up to 256 MiB of freed heap
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
}

}  // namespace pipet
