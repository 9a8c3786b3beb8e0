#include "runtime/comm/local_communicator.h"

#include "runtime/core/errors.h"

#include <utility>

namespace pipet {
namespace {

// An operation that finished when it was started.
class DoneWork final : public Work {
 public:
  bool completed() override { return true; }
  void wait(std::chrono::milliseconds) override {}
};

}  // namespace

// A receive from ourselves: completes once a matching send is in the mailbox.
class LocalCommunicator::RecvWork final : public Work {
 public:
  RecvWork(std::shared_ptr<std::map<int, std::deque<torch::Tensor>>> mailbox, torch::Tensor target,
           int tag, std::string description)
      : mailbox_(std::move(mailbox)), target_(std::move(target)), tag_(tag),
        description_(std::move(description)) {}

  bool completed() override { return done_ || has_message(); }

  void wait(std::chrono::milliseconds timeout) override {
    if (done_) return;
    // One process: nothing can arrive while we block, so a missing message is
    // missing for good.
    if (!has_message())
      throw CommError(description_ + ": no message with tag " + std::to_string(tag_) +
                      " was sent to this rank (timeout " + std::to_string(timeout.count()) +
                      " ms)");
    auto& queue = (*mailbox_)[tag_];
    torch::Tensor message = std::move(queue.front());
    queue.pop_front();
    done_ = true;
    if (message.numel() != target_.numel() || message.scalar_type() != target_.scalar_type())
      throw CommError(description_ + ": expected " + std::to_string(target_.numel()) +
                      " elements of " + std::string(c10::toString(target_.scalar_type())) +
                      ", the message holds " + std::to_string(message.numel()) + " elements of " +
                      c10::toString(message.scalar_type()));
    target_.copy_(message.view(target_.sizes()));
  }

 private:
  bool has_message() const {
    auto it = mailbox_->find(tag_);
    return it != mailbox_->end() && !it->second.empty();
  }

  std::shared_ptr<std::map<int, std::deque<torch::Tensor>>> mailbox_;
  torch::Tensor target_;
  int tag_;
  std::string description_;
  bool done_ = false;
};

LocalCommunicator::LocalCommunicator(std::string name)
    : name_(std::move(name)), mailbox_(std::make_shared<std::map<int, std::deque<torch::Tensor>>>()) {}

std::unique_ptr<Work> LocalCommunicator::all_reduce_async(torch::Tensor& tensor,
                                                          const AllReduceOptions& options) {
  check_tensor(tensor, "all_reduce");
  if (options.op == ReduceOp::kAvg && !tensor.is_floating_point())
    throw CommError(describe("all_reduce") + ": avg needs a floating-point tensor, got " +
                    c10::toString(tensor.scalar_type()));
  return std::make_unique<DoneWork>();  // one rank: the reduction is the input
}

std::unique_ptr<Work> LocalCommunicator::broadcast_async(torch::Tensor& tensor,
                                                         const BroadcastOptions& options) {
  check_tensor(tensor, "broadcast");
  check_peer(options.root, "root", "broadcast");
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Work> LocalCommunicator::all_gather_async(const torch::Tensor& input,
                                                          torch::Tensor& output,
                                                          const AllGatherOptions&) {
  check_tensor(input, "all_gather");
  output = input.unsqueeze(0).clone(at::MemoryFormat::Contiguous);
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Work> LocalCommunicator::send_async(const torch::Tensor& tensor, int dst, int tag,
                                                    const PointToPointOptions&) {
  check_tensor(tensor, "send");
  check_peer(dst, "destination", "send");
  if (tag < 0) throw CommError(describe("send") + ": tag must be >= 0, got " + std::to_string(tag));
  (*mailbox_)[tag].push_back(tensor.clone(at::MemoryFormat::Contiguous));
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Work> LocalCommunicator::recv_async(torch::Tensor& tensor, int src, int tag,
                                                    const PointToPointOptions&) {
  check_tensor(tensor, "recv");
  check_writable(tensor, "recv");
  check_peer(src, "source", "recv");
  if (tag < 0) throw CommError(describe("recv") + ": tag must be >= 0, got " + std::to_string(tag));
  return std::make_unique<RecvWork>(mailbox_, tensor, tag,
                                    describe("recv from rank 0 tag " + std::to_string(tag)));
}

std::unique_ptr<Work> LocalCommunicator::barrier_async(const BarrierOptions&) {
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Communicator> LocalCommunicator::subgroup(int color, int /*key*/,
                                                         const std::string& name) {
  if (color < 0) return nullptr;
  auto group = std::make_unique<LocalCommunicator>(name);
  group->set_default_timeout(default_timeout());
  return group;
}

}  // namespace pipet
