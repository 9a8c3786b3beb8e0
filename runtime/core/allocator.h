// Host allocator tuning. glibc's default malloc returns large freed blocks to
// the kernel (mmap threshold, trim threshold) and maps them again on the next
// step: a training step allocates the same activation sizes every time, so
// that churn costs page faults (measured: ~60% more faults, 5-11% slower steps
// than PyTorch eager on vit-small). Raising both thresholds keeps the blocks.
#pragma once

namespace pipet {

// Call once at process start, before the first tensor is allocated. Leaves
// any setting given through GLIBC_TUNABLES / MALLOC_*_ env vars alone.
void configure_allocator();

}  // namespace pipet
