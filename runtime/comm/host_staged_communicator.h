// HostStagedCommunicator: lets a CPU communicator (MpiCommunicator,
// LocalCommunicator) carry CUDA tensors by staging them through page-locked
// host memory: device -> pinned host copy, the inner operation on the host
// copy, and on wait() the result copied back to the device. CPU tensors pass
// straight to the inner communicator, unchanged.
//
// This is the MPI backend for groups whose members share a GPU (DESIGN.md §1),
// e.g. several test ranks on one device; groups with one GPU per member use
// NcclCommunicator. A wrapper rather than code inside MpiCommunicator keeps the
// CPU path untouched and works over any CPU communicator.
//
// Stream contract: the device-to-host copy is ordered after the work queued on
// the caller stream (set_caller_stream; default the legacy default stream,
// where LibTorch runs unless a stream guard is active). After wait() returns
// the device tensor holds the result. Built only with PIPET_WITH_CUDA.
#pragma once

#include "runtime/comm/communicator.h"

#include <memory>
#include <string>

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace pipet {

class HostStagedCommunicator final : public Communicator {
 public:
  // Takes ownership of `inner` (not null); inherits its default timeout.
  explicit HostStagedCommunicator(std::unique_ptr<Communicator> inner);
  ~HostStagedCommunicator() override;

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  Communicator& inner() const { return *inner_; }

  // The stream the staging copies are ordered after (nullptr: legacy default).
  void set_caller_stream(CUstream_st* stream) { caller_stream_ = stream; }

  std::unique_ptr<Work> all_reduce_async(torch::Tensor& tensor,
                                         const AllReduceOptions& options = {}) override;
  std::unique_ptr<Work> broadcast_async(torch::Tensor& tensor,
                                        const BroadcastOptions& options = {}) override;
  std::unique_ptr<Work> all_gather_async(const torch::Tensor& input, torch::Tensor& output,
                                         const AllGatherOptions& options = {}) override;
  std::unique_ptr<Work> send_async(const torch::Tensor& tensor, int dst, int tag,
                                   const PointToPointOptions& options = {}) override;
  std::unique_ptr<Work> recv_async(torch::Tensor& tensor, int src, int tag,
                                   const PointToPointOptions& options = {}) override;
  std::unique_ptr<Work> barrier_async(const BarrierOptions& options = {}) override;
  // The inner communicator's subgroup, staged the same way.
  std::unique_ptr<Communicator> subgroup(int color, int key, const std::string& name) override;

 private:
  std::unique_ptr<Communicator> inner_;
  CUstream_st* caller_stream_ = nullptr;
};

}  // namespace pipet
