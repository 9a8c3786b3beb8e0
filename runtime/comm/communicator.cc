#include "runtime/comm/communicator.h"

#include "runtime/core/errors.h"

#include <ATen/MemoryOverlap.h>

namespace pipet {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "unknown";
}

void Communicator::set_default_timeout(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0)
    throw CommError("communicator '" + name() + "': default timeout must be positive, got " +
                    std::to_string(timeout.count()) + " ms");
  default_timeout_ = timeout;
}

std::string Communicator::describe(const std::string& operation) const {
  return operation + " on group '" + name() + "' (rank " + std::to_string(rank()) + " of " +
         std::to_string(size()) + ")";
}

void Communicator::check_tensor(const torch::Tensor& tensor, const std::string& operation) const {
  if (!tensor.defined()) throw CommError(describe(operation) + ": the tensor is undefined");
  if (!tensor.device().is_cpu())
    throw CommError(describe(operation) + ": only CPU tensors are supported, got a tensor on " +
                    tensor.device().str());
  if (tensor.layout() != torch::kStrided)
    throw CommError(describe(operation) + ": only dense (strided) tensors are supported");
}

void Communicator::check_writable(const torch::Tensor& tensor, const std::string& operation) const {
  if (at::has_internal_overlap(tensor) == at::MemOverlap::Yes)
    throw CommError(describe(operation) +
                    ": the output tensor has overlapping elements (an expanded view); pass a "
                    "tensor whose elements are distinct");
}

void Communicator::check_peer(int peer, const char* role, const std::string& operation) const {
  if (peer < 0 || peer >= size())
    throw CommError(describe(operation) + ": " + role + " rank " + std::to_string(peer) +
                    " is outside the group [0, " + std::to_string(size()) + ")");
}

void Communicator::all_reduce(torch::Tensor& tensor, const AllReduceOptions& options) {
  all_reduce_async(tensor, options)->wait(effective_timeout(options.timeout));
}

void Communicator::broadcast(torch::Tensor& tensor, const BroadcastOptions& options) {
  broadcast_async(tensor, options)->wait(effective_timeout(options.timeout));
}

torch::Tensor Communicator::all_gather(const torch::Tensor& input, const AllGatherOptions& options) {
  torch::Tensor output;
  all_gather_async(input, output, options)->wait(effective_timeout(options.timeout));
  return output;
}

void Communicator::send(const torch::Tensor& tensor, int dst, int tag,
                        const PointToPointOptions& options) {
  send_async(tensor, dst, tag, options)->wait(effective_timeout(options.timeout));
}

void Communicator::recv(torch::Tensor& tensor, int src, int tag, const PointToPointOptions& options) {
  recv_async(tensor, src, tag, options)->wait(effective_timeout(options.timeout));
}

void Communicator::barrier(const BarrierOptions& options) {
  barrier_async(options)->wait(effective_timeout(options.timeout));
}

}  // namespace pipet
