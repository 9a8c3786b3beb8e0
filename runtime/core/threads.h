// Per-rank CPU thread budget: torch intra-op threads and OpenBLAS threads, so
// several ranks on one machine do not oversubscribe the cores.
#pragma once

#include <cstdint>

namespace pipet {

// `requested` > 0 is used as is; 0 means hardware cores divided by the ranks
// on this node (OMPI_COMM_WORLD_LOCAL_SIZE), at least 1. Returns the count set.
int configure_threads(int64_t requested);

}  // namespace pipet
