// LibTorch's profiler around a few training steps, as ProfiledEvents for
// benchmarks/profile_table.h. The Kineto API (enableProfiler/disableProfiler)
// is the one LibTorch 1.13 and 2.x share; Debian's 1.13 is built without the
// Kineto library, so there it records host ops only and cannot write a trace
// itself (finish() writes one from the events instead).
#pragma once

#include "benchmarks/profile_table.h"

#include <string>
#include <vector>

namespace pipet::bench {

// Records every op run between construction and finish() on this thread and
// on the autograd engine threads its backward passes use; with `with_cuda`
// also the CUDA kernels, memcpys and memsets, each linked to the op that
// launched it. One at a time per thread: constructing a second while one
// records throws an internal Error.
class OpProfiler {
 public:
  explicit OpProfiler(bool with_cuda);
  ~OpProfiler();  // stops recording if finish() was not called; never throws
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // Stops recording and returns the events. When `trace_path` is not empty,
  // writes a Chrome trace there: LibTorch's own where it has Kineto, else
  // chrome_trace_json() of the events. Throws IoError when the trace cannot
  // be written, an internal Error when called twice.
  std::vector<ProfiledEvent> finish(const std::string& trace_path);

 private:
  bool recording_ = false;
};

}  // namespace pipet::bench
