#include "runtime/comm/host_staged_communicator.h"

#include "runtime/comm/cuda_support.h"
#include "runtime/core/errors.h"

#include <functional>
#include <utility>

namespace pipet {

namespace {

using cuda_support::check_cuda_tensor;
using cuda_support::copy_device_to_host;
using cuda_support::copy_host_to_device;
using cuda_support::pinned_empty;

// The inner Work plus the copy back to the device once it has completed.
class StagedWork final : public Work {
 public:
  StagedWork(std::unique_ptr<Work> inner, std::function<void()> finish)
      : inner_(std::move(inner)), finish_(std::move(finish)) {}

  bool completed() override { return finished_ || !failure_.empty() || inner_->completed(); }

  void wait(std::chrono::milliseconds timeout) override {
    if (!failure_.empty()) throw CommError(failure_);
    if (finished_) return;
    inner_->wait(timeout);  // a timeout here leaves the Work retryable, as the inner one is
    try {
      if (finish_) finish_();
    } catch (const CommError& e) {
      failure_ = e.what();
      throw;
    }
    finish_ = nullptr;
    finished_ = true;
  }

 private:
  std::unique_ptr<Work> inner_;
  std::function<void()> finish_;
  bool finished_ = false;
  std::string failure_;
};

}  // namespace

HostStagedCommunicator::HostStagedCommunicator(std::unique_ptr<Communicator> inner)
    : inner_(std::move(inner)) {
  PIPET_CHECK(inner_ != nullptr, "HostStagedCommunicator needs an inner communicator");
  set_default_timeout(inner_->default_timeout());
}

HostStagedCommunicator::~HostStagedCommunicator() = default;

std::unique_ptr<Work> HostStagedCommunicator::all_reduce_async(torch::Tensor& tensor,
                                                               const AllReduceOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda()) return inner_->all_reduce_async(tensor, options);
  const std::string what = describe(std::string("all_reduce(") + reduce_op_name(options.op) + ")");
  check_cuda_tensor(tensor, what);
  check_writable(tensor, "all_reduce");
  torch::Tensor device_buffer = tensor.contiguous();
  torch::Tensor host = pinned_empty(device_buffer.sizes(), device_buffer.scalar_type(), what);
  copy_device_to_host(host, device_buffer, caller_stream_, what);
  auto inner_work = inner_->all_reduce_async(host, options);
  auto finish = [stream = caller_stream_, host, device_buffer, target = tensor, what]() mutable {
    copy_host_to_device(device_buffer, host, stream, what);
    if (!device_buffer.is_same(target)) target.copy_(device_buffer);
  };
  return std::make_unique<StagedWork>(std::move(inner_work), finish);
}

std::unique_ptr<Work> HostStagedCommunicator::broadcast_async(torch::Tensor& tensor,
                                                              const BroadcastOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda()) return inner_->broadcast_async(tensor, options);
  const std::string what = describe("broadcast from root " + std::to_string(options.root));
  check_cuda_tensor(tensor, what);
  check_writable(tensor, "broadcast");
  check_peer(options.root, "root", "broadcast");
  torch::Tensor device_buffer = tensor.contiguous();
  torch::Tensor host = pinned_empty(device_buffer.sizes(), device_buffer.scalar_type(), what);
  const bool is_root = rank() == options.root;
  if (is_root) copy_device_to_host(host, device_buffer, caller_stream_, what);
  auto inner_work = inner_->broadcast_async(host, options);
  auto finish = [stream = caller_stream_, host, device_buffer, target = tensor, is_root, what]() mutable {
    if (is_root) return;  // the root's data did not change
    copy_host_to_device(device_buffer, host, stream, what);
    if (!device_buffer.is_same(target)) target.copy_(device_buffer);
  };
  return std::make_unique<StagedWork>(std::move(inner_work), finish);
}

std::unique_ptr<Work> HostStagedCommunicator::all_gather_async(const torch::Tensor& input,
                                                               torch::Tensor& output,
                                                               const AllGatherOptions& options) {
  if (!input.defined() || !input.device().is_cuda())
    return inner_->all_gather_async(input, output, options);
  const std::string what = describe("all_gather");
  check_cuda_tensor(input, what);
  torch::Tensor source = input.contiguous();
  torch::Tensor host = pinned_empty(source.sizes(), source.scalar_type(), what);
  copy_device_to_host(host, source, caller_stream_, what);
  // The inner gather fills a host tensor; the caller's output lives on the device.
  auto host_output = std::make_shared<torch::Tensor>();
  auto inner_work = inner_->all_gather_async(host, *host_output, options);
  std::vector<int64_t> shape{size()};
  shape.insert(shape.end(), input.sizes().begin(), input.sizes().end());
  output = torch::empty(shape, input.options().memory_format(at::MemoryFormat::Contiguous));
  auto finish = [stream = caller_stream_, host, host_output, target = output, what]() mutable {
    copy_host_to_device(target, host_output->contiguous(), stream, what);
  };
  return std::make_unique<StagedWork>(std::move(inner_work), finish);
}

std::unique_ptr<Work> HostStagedCommunicator::send_async(const torch::Tensor& tensor, int dst, int tag,
                                                         const PointToPointOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda())
    return inner_->send_async(tensor, dst, tag, options);
  const std::string what =
      describe("send to rank " + std::to_string(dst) + " tag " + std::to_string(tag));
  check_cuda_tensor(tensor, what);
  check_peer(dst, "destination", "send");
  torch::Tensor device_buffer = tensor.contiguous();
  torch::Tensor host = pinned_empty(device_buffer.sizes(), device_buffer.scalar_type(), what);
  copy_device_to_host(host, device_buffer, caller_stream_, what);
  auto inner_work = inner_->send_async(host, dst, tag, options);
  // The inner Work keeps `host` alive until the message has left.
  return std::make_unique<StagedWork>(std::move(inner_work), nullptr);
}

std::unique_ptr<Work> HostStagedCommunicator::recv_async(torch::Tensor& tensor, int src, int tag,
                                                         const PointToPointOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda())
    return inner_->recv_async(tensor, src, tag, options);
  const std::string what =
      describe("recv from rank " + std::to_string(src) + " tag " + std::to_string(tag));
  check_cuda_tensor(tensor, what);
  check_writable(tensor, "recv");
  check_peer(src, "source", "recv");
  torch::Tensor device_buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  torch::Tensor host = pinned_empty(device_buffer.sizes(), device_buffer.scalar_type(), what);
  auto inner_work = inner_->recv_async(host, src, tag, options);
  auto finish = [stream = caller_stream_, host, device_buffer, target = tensor, what]() mutable {
    copy_host_to_device(device_buffer, host, stream, what);
    if (!device_buffer.is_same(target)) target.copy_(device_buffer);
  };
  return std::make_unique<StagedWork>(std::move(inner_work), finish);
}

std::unique_ptr<Work> HostStagedCommunicator::barrier_async(const BarrierOptions& options) {
  return inner_->barrier_async(options);
}

std::unique_ptr<Communicator> HostStagedCommunicator::subgroup(int color, int key,
                                                               const std::string& name) {
  std::unique_ptr<Communicator> child = inner_->subgroup(color, key, name);
  if (!child) return nullptr;
  auto staged = std::make_unique<HostStagedCommunicator>(std::move(child));
  staged->set_default_timeout(default_timeout());
  staged->set_caller_stream(caller_stream_);
  return staged;
}

}  // namespace pipet
