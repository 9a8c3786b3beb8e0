// LocalCommunicator: the group of one process. Collectives are local no-ops or
// copies; send/recv to rank 0 go through an in-process mailbox per tag.
#pragma once

#include "runtime/comm/communicator.h"

#include <deque>
#include <map>
#include <memory>
#include <string>

namespace pipet {

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name = "world");

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }

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
  std::unique_ptr<Communicator> subgroup(int color, int key, const std::string& name) override;

 private:
  class RecvWork;
  std::string name_;
  // Messages sent to ourselves, oldest first, per tag. Shared with pending
  // RecvWork objects so they stay valid even if they outlive nothing else.
  std::shared_ptr<std::map<int, std::deque<torch::Tensor>>> mailbox_;
};

}  // namespace pipet
