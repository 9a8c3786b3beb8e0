// Host allocator tuning. glibc's default malloc returns large freed blocks to
// the kernel (mmap threshold, heap trim) and the next training step, which
// allocates the same activation sizes again, page-faults them back in
// (measured on bert-tiny: 15,200 vs 16 faults per step, 18% of the step
// time). Raising both thresholds keeps the blocks in the heap. Both must be
// set: setting either switches off glibc's dynamic threshold.
#pragma once

#include <string>
#include <vector>

namespace pipet {

// Call once at process start, before the first tensor is allocated. Returns
// false (and changes nothing) where the C library is not glibc or the user
// already tuned malloc through GLIBC_TUNABLES / MALLOC_*_ variables.
bool configure_allocator();

// The same settings as MALLOC_*_ environment variables, for child processes
// (a reference implementation, ranks started by mpirun).
std::vector<std::string> allocator_environment();

}  // namespace pipet
