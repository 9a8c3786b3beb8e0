// NcclCommunicator: a Communicator whose CUDA tensors travel over NCCL, for a
// group whose members each own a distinct GPU (DESIGN.md §1). Built only with
// PIPET_WITH_NCCL; this header includes neither nccl.h nor CUDA headers.
//
// Each communicator owns a host group (an MpiCommunicator or LocalCommunicator
// with the same members in the same rank order): it bootstraps the NCCL
// communicator (the unique id is broadcast over it), carries CPU tensors (so
// engine code may reduce CPU scalars on any group), and backs subgroup().
//
// Streams: every NCCL operation is enqueued on a stream owned by the
// communicator, which first waits (through an event) on the caller stream:
// set_caller_stream, default the legacy default stream, where LibTorch runs
// unless a stream guard is active. Staging copies (non-contiguous or int16
// tensors) run on LibTorch's current stream, so it must be that caller stream.
// Work::wait polls the operation's completion event and the communicator's
// asynchronous NCCL error; when the timeout passes it aborts the NCCL
// communicator (ncclCommAbort) and throws CommError naming the operation,
// group and rank. After an abort or an NCCL error every later operation on
// this communicator throws; rebuild the group.
//
// Point to point: NCCL has no tags and no size check. Tags must be >= 0 but do
// not select messages: sends and receives between a pair match in the order
// they are issued, and a receive whose size differs from the send's is
// undefined (it usually ends in the timeout). A send blocks the stream until
// the peer's receive runs, so two ranks that each send to the other before
// receiving deadlock; exchange in a consistent order (lower rank sends first).
// Sending to oneself is rejected.
//
// Not copyable. Work handles keep the shared NCCL state alive, so a Work may
// outlive its communicator. All calls come from one thread.
#pragma once

#include "runtime/comm/communicator.h"

#include <memory>
#include <string>

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace pipet {

class NcclCommunicator final : public Communicator {
 public:
  struct State;  // ncclComm_t, stream, error state; defined in nccl_communicator.cc

  // Collective over `host_group` (not null; every member calls it with its own
  // CUDA device): rank 0 creates the NCCL unique id and broadcasts it over the
  // host group, then every rank joins with ncclCommInitRank. The result takes
  // the host group's name and default timeout. Throws CommError when the
  // device is out of range or NCCL fails (two ranks on one GPU, for example).
  static std::unique_ptr<NcclCommunicator> create(std::unique_ptr<Communicator> host_group,
                                                  int device);

  NcclCommunicator(std::unique_ptr<Communicator> host_group, std::shared_ptr<State> state);
  // ncclCommDestroy, or ncclCommAbort when an error happened or operations
  // are still pending; never throws.
  ~NcclCommunicator() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::string& name() const override { return host_->name(); }

  int device() const;
  Communicator& host_group() const { return *host_; }
  void set_caller_stream(CUstream_st* stream);
  // Aborts the NCCL communicator: pending operations end, later ones throw.
  void abort();
  // The NCCL library version this process runs with (e.g. 22809 for 2.28.9).
  static int library_version();

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
  // Every op in one ncclGroupStart/ncclGroupEnd, completing with one event:
  // all CUDA tensors on this communicator's device (all CPU tensors go to
  // the host group; a mix is a CommError). Tags are ignored, as by NCCL.
  std::unique_ptr<Work> exchange_async(std::vector<P2POp> ops, const PointToPointOptions& options = {}) override;
  // A one-element all-reduce on the device; complete once every member's
  // earlier operations on this communicator have run.
  std::unique_ptr<Work> barrier_async(const BarrierOptions& options = {}) override;
  // Collective over this group: splits the host group and the NCCL
  // communicator (ncclCommSplit on NCCL >= 2.18, else a fresh unique id over
  // the new host group) with the same color and key, so ranks agree.
  std::unique_ptr<Communicator> subgroup(int color, int key, const std::string& name) override;

 private:
  std::unique_ptr<Communicator> host_;
  std::shared_ptr<State> state_;
};

}  // namespace pipet
