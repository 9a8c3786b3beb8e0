// Work: the handle of one asynchronous communication operation (c10d style).
//
// Contract: every rank of the group must start the same collectives in the same
// order. An operation's tensors must stay untouched until wait() returns; the
// Work keeps its own references, so the caller may drop theirs. After wait()
// returns, outputs hold the result (including any copy back into a
// non-contiguous or reduced-precision output).
//
// Destroying a Work that has not completed (e.g. after a timeout) withdraws a
// point-to-point operation (MPI_Cancel); a collective cannot be withdrawn, so
// its buffers stay allocated for the rest of the process and the job should
// be aborted.
#pragma once

#include <chrono>

namespace pipet {

class Work {
 public:
  virtual ~Work() = default;
  Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // True once the transfer has finished (successfully or not). Never throws;
  // a failure is reported by wait().
  virtual bool completed() = 0;

  // Blocks until the operation finishes and its outputs are written. Throws
  // CommError naming the operation, the group and the rank when it fails or
  // does not finish within `timeout`. Calling wait() again after success is a
  // no-op.
  virtual void wait(std::chrono::milliseconds timeout) = 0;
};

}  // namespace pipet
