// MpiCommunicator: a Communicator over one MPI communicator (CPU tensors).
// Operations use non-blocking MPI calls; Work::wait polls MPI_Test until the
// request completes or the timeout passes.
//
// NCCL's rules (nccl_rules(); PIPET_NCCL_RULES=1 sets them on the world
// communicator, and groups split from one inherit them): every point-to-point
// message of the communicator carries one tag, so receives match in issue
// order; a send completes only once its receive has started (MPI_Issend);
// and each send, receive or exchange completes before the call returns, as
// operations on one NCCL stream complete in issue order. A schedule that
// could deadlock on NCCL at some message size then deadlocks here at every
// size, and the timeout turns that into a CommError naming the operation.
// Ordinary MPI buffers small sends and matches by tag, so it would pass.
//
// Not copyable; owns its MPI_Comm (freed in the destructor). Must be destroyed
// before the MpiRuntime. All calls come from the thread that created MPI.
#pragma once

#include "runtime/comm/communicator.h"

#include <memory>
#include <string>
#include <vector>

namespace pipet {

class MpiRuntime;

class MpiCommunicator final : public Communicator {
 public:
  struct Impl;  // holds the MPI_Comm; defined in mpi_communicator.cc
  explicit MpiCommunicator(std::unique_ptr<Impl> impl);
  ~MpiCommunicator() override;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;

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
  std::unique_ptr<Work> exchange_async(std::vector<P2POp> ops, const PointToPointOptions& options = {}) override;
  std::unique_ptr<Communicator> subgroup(int color, int key, const std::string& name) override;

  // NCCL's point-to-point rules (above) for this communicator and the groups
  // split from it afterwards.
  bool nccl_rules() const;
  void set_nccl_rules(bool on);

  // Collective over this communicator: every rank must call it. Ranks with the
  // same `color` form one new communicator, ordered by `key` (ties by rank);
  // a negative color opts out and gets nullptr.
  std::unique_ptr<MpiCommunicator> split(int color, int key, const std::string& name);

  // Collective over this communicator with the same `ranks` on every rank:
  // the listed ranks (of this communicator) form a group whose rank i is
  // ranks[i]. Ranks not listed get nullptr. Throws CommError on an empty list,
  // a rank out of range or a duplicate.
  std::unique_ptr<MpiCommunicator> create_group(const std::vector<int>& ranks,
                                                const std::string& name);

 private:
  // Posts one send or receive (the tag and the MPI call as the rules say).
  std::unique_ptr<Work> post(P2POp& op);
  // Under NCCL's rules: waits for `work` before the call returns.
  void complete_under_rules(Work& work, const PointToPointOptions& options) const;
  std::unique_ptr<Impl> impl_;
};

// A duplicate of MPI_COMM_WORLD named "world" (our traffic never mixes with
// other libraries' on MPI_COMM_WORLD itself), under NCCL's rules when
// PIPET_NCCL_RULES is 1 (ConfigError for a value other than 0 or 1).
// Collective over every rank.
std::unique_ptr<MpiCommunicator> make_world_communicator(MpiRuntime& runtime);

// The world communicator fit for this job: LocalCommunicator when there is no
// runtime or a single rank, otherwise make_world_communicator.
std::unique_ptr<Communicator> make_communicator(MpiRuntime* runtime);

}  // namespace pipet
