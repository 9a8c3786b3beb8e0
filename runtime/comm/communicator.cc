#include "runtime/comm/communicator.h"

#include "runtime/core/errors.h"

#include <ATen/MemoryOverlap.h>

#include <utility>

namespace pipet {
namespace {

class ExchangeWork final : public Work {
 public:
  ExchangeWork(std::vector<std::unique_ptr<Work>> works, std::vector<std::string> whats)
      : works_(std::move(works)), whats_(std::move(whats)) {}

  bool completed() override {
    for (auto& work : works_)
      if (!work->completed()) return false;
    return true;
  }

  void wait(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (size_t i = 0; i < works_.size(); ++i) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      try {
        works_[i]->wait(std::max(left, std::chrono::milliseconds(1)));
      } catch (const CommError& e) {
        const std::string& what = whats_[i];
        if (what.empty() || std::string(e.what()).find(what) != std::string::npos) throw;
        throw CommError(what + ": " + e.what());
      }
    }
  }

 private:
  std::vector<std::unique_ptr<Work>> works_;
  std::vector<std::string> whats_;
};

}  // namespace

P2POp send_op(torch::Tensor tensor, int peer, int tag, std::string what) {
  return P2POp{P2POp::Kind::kSend, std::move(tensor), peer, tag, std::move(what)};
}

P2POp recv_op(torch::Tensor tensor, int peer, int tag, std::string what) {
  return P2POp{P2POp::Kind::kRecv, std::move(tensor), peer, tag, std::move(what)};
}

std::unique_ptr<Work> Communicator::exchange_work(std::vector<std::unique_ptr<Work>> works,
                                                  std::vector<std::string> whats) {
  return std::make_unique<ExchangeWork>(std::move(works), std::move(whats));
}

std::unique_ptr<Work> Communicator::exchange_async(std::vector<P2POp> ops, const PointToPointOptions& options) {
  std::vector<std::unique_ptr<Work>> works;
  std::vector<std::string> whats;
  for (P2POp& op : ops) {
    try {
      works.push_back(op.kind == P2POp::Kind::kSend ? send_async(op.tensor, op.peer, op.tag, options)
                                                    : recv_async(op.tensor, op.peer, op.tag, options));
    } catch (const CommError& e) {
      throw CommError(op.what.empty() ? std::string(e.what()) : op.what + ": " + e.what());
    }
    whats.push_back(std::move(op.what));
  }
  return exchange_work(std::move(works), std::move(whats));
}

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

void Communicator::exchange(std::vector<P2POp> ops, const PointToPointOptions& options) {
  exchange_async(std::move(ops), options)->wait(effective_timeout(options.timeout));
}

}  // namespace pipet
