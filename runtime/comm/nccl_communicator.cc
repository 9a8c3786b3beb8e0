#include "runtime/comm/nccl_communicator.h"

#include "runtime/comm/cuda_support.h"
#include "runtime/core/errors.h"

#include <spdlog/spdlog.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

// Version-dependent NCCL features (nccl.h before 2.9 lacks NCCL_VERSION_CODE).
#if defined(NCCL_VERSION_CODE) && defined(NCCL_VERSION)
#define PIPET_NCCL_AT_LEAST(x, y, z) (NCCL_VERSION_CODE >= NCCL_VERSION(x, y, z))
#else
#define PIPET_NCCL_AT_LEAST(x, y, z) 0
#endif

namespace pipet {

using cuda_support::check;
using cuda_support::DeviceGuard;
using cuda_support::Event;

namespace {

std::string nccl_text(ncclResult_t code, ncclComm_t comm) {
  std::string text = ncclGetErrorString(code);
#if PIPET_NCCL_AT_LEAST(2, 13, 0)
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') text += ": " + std::string(last);
#endif
  return text;
}

}  // namespace

// Shared by the communicator and its Works, so a Work can outlive it.
struct NcclCommunicator::State {
  // An abandoned Work's completion event and the buffers the GPU may still use.
  struct Retired {
    Event done;
    std::vector<torch::Tensor> buffers;
  };

  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;         // owned; every NCCL operation runs here
  cudaStream_t caller_stream = nullptr;  // not owned; nullptr is the legacy default stream
  void* barrier_scratch = nullptr;       // one float on the device
  int device = -1;
  std::string broken;  // why the communicator can no longer be used; empty while healthy
  std::vector<Retired> retired;

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  ~State() {
    sweep();
    if (comm != nullptr) {
      // Destroy waits for nothing; pending work means a peer is stuck, so abort.
      if (retired.empty() && broken.empty())
        ncclCommDestroy(comm);
      else
        ncclCommAbort(comm);
      comm = nullptr;
    }
    sweep();
    if (!retired.empty()) {
      spdlog::warn("[comm] {} unfinished NCCL operation(s) abandoned at shutdown; their buffers "
                   "are kept alive",
                   retired.size());
      auto* keep = new std::vector<Retired>(std::move(retired));  // intentional leak
      (void)keep;
    }
    if (barrier_scratch != nullptr) cudaFree(barrier_scratch);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Marks the communicator unusable and aborts it; never throws.
  void abort(const std::string& reason) noexcept {
    if (broken.empty()) broken = reason.empty() ? std::string("aborted") : reason;
    if (comm != nullptr) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
  }

  void ensure_healthy(const std::string& what) const {
    if (!broken.empty())
      throw CommError(what + ": the NCCL communicator was aborted earlier (" + broken +
                      "); rebuild the group");
  }

  // Releases the buffers of abandoned Works whose GPU work has finished.
  void sweep() noexcept {
    std::vector<Retired> pending;
    for (Retired& entry : retired) {
      if (cudaEventQuery(entry.done.get()) != cudaErrorNotReady) continue;  // done (or failed): drop
      pending.push_back(std::move(entry));
    }
    retired = std::move(pending);
  }

  // Empty while healthy; otherwise why not (aborting on a fresh async error).
  std::string problem() noexcept {
    if (!broken.empty()) return "the NCCL communicator was aborted (" + broken + ")";
    if (comm == nullptr) return "the NCCL communicator is gone";
    ncclResult_t async = ncclSuccess;
    ncclResult_t code = ncclCommGetAsyncError(comm, &async);
    if (code != ncclSuccess) async = code;
    if (async == ncclSuccess || async == ncclInProgress) return {};
    std::string text = "NCCL reported an asynchronous error: " + nccl_text(async, comm);
    abort(text);
    return text;
  }
};

namespace {

using State = NcclCommunicator::State;

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<State> state, std::string description, Event done,
           std::vector<torch::Tensor> buffers, std::function<void()> finish)
      : state_(std::move(state)), description_(std::move(description)), done_(std::move(done)),
        buffers_(std::move(buffers)), finish_(std::move(finish)) {}

  ~NcclWork() override {
    if (finished_ || cudaEventQuery(done_.get()) != cudaErrorNotReady) return;
    // The GPU may still read or write the buffers: the shared state keeps them
    // until the event completes (or until shutdown, which aborts).
    try {
      state_->retired.push_back(State::Retired{std::move(done_), std::move(buffers_)});
    } catch (...) {
      new std::vector<torch::Tensor>(std::move(buffers_));  // intentional leak; never free in use
    }
  }

  bool completed() override {
    if (finished_ || !failure_.empty() || !state_->broken.empty()) return true;
    return cudaEventQuery(done_.get()) != cudaErrorNotReady;
  }

  void wait(std::chrono::milliseconds timeout) override {
    if (!failure_.empty()) throw CommError(failure_);
    if (finished_) return;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int spins = 0;
    while (true) {
      const cudaError_t query = cudaEventQuery(done_.get());
      if (query == cudaSuccess) break;
      if (query != cudaErrorNotReady) {
        state_->abort(description_ + " failed on the device");
        fail(description_ + " failed on the device: " + cuda_support::error_text(query));
      }
      const std::string problem = state_->problem();
      if (!problem.empty()) fail(description_ + " failed: " + problem);
      if (std::chrono::steady_clock::now() >= deadline) {
        state_->abort(description_ + " timed out");
        fail(description_ + " did not complete within the timeout of " +
             std::to_string(timeout.count()) +
             " ms (a peer is missing, slow, or called a different operation); the NCCL "
             "communicator was aborted, rebuild the group");
      }
      // Spin briefly for latency, then yield the core.
      if (++spins > 200) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    buffers_.clear();
    try {
      if (finish_) finish_();
    } catch (const std::exception& e) {
      fail(description_ + ": copying the result back failed: " + e.what());
    }
    finish_ = nullptr;
    finished_ = true;
  }

 private:
  [[noreturn]] void fail(const std::string& message) {
    failure_ = message;  // a later wait() reports the same failure
    throw CommError(message);
  }

  std::shared_ptr<State> state_;
  std::string description_;
  Event done_;
  std::vector<torch::Tensor> buffers_;
  std::function<void()> finish_;
  bool finished_ = false;
  std::string failure_;
};

using Enqueue = std::function<ncclResult_t(ncclComm_t, cudaStream_t)>;

// Orders the communicator's stream after the caller's, enqueues the NCCL call
// (none for zero bytes) and returns a Work completing with the stream.
std::unique_ptr<Work> launch(const std::shared_ptr<State>& state, const std::string& what,
                             std::vector<torch::Tensor> buffers, const Enqueue& enqueue,
                             std::function<void()> finish) {
  state->ensure_healthy(what);
  state->sweep();
  DeviceGuard guard(state->device, what);
  Event ready(what);
  Event done(what);
  check(cudaEventRecord(ready.get(), state->caller_stream), what, "cudaEventRecord (caller stream)");
  check(cudaStreamWaitEvent(state->stream, ready.get(), 0), what, "cudaStreamWaitEvent");
  if (enqueue) {
    const ncclResult_t code = enqueue(state->comm, state->stream);
    if (code != ncclSuccess) {
      const std::string message = what + " failed to start: " + nccl_text(code, state->comm);
      // A rejected argument leaves NCCL consistent; anything else may not.
      if (code != ncclInvalidArgument && code != ncclInvalidUsage) state->abort(message);
      throw CommError(message);
    }
  }
  const cudaError_t recorded = cudaEventRecord(done.get(), state->stream);
  if (recorded != cudaSuccess) {
    state->abort(what + ": cudaEventRecord failed");
    check(recorded, what, "cudaEventRecord (communicator stream)");
  }
  return std::make_unique<NcclWork>(state, what, std::move(done), std::move(buffers),
                                    std::move(finish));
}

ncclDataType_t reduce_type(at::ScalarType type, const std::string& what) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
#if PIPET_NCCL_AT_LEAST(2, 10, 0)
    case at::kBFloat16: return ncclBfloat16;
#endif
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    case at::kBool: return ncclUint8;  // 0/1 bytes: max is or, min is and
    default:
      throw CommError(what + ": dtype " + std::string(c10::toString(type)) +
                      " cannot be reduced with NCCL");
  }
}

ncclRedOp_t reduce_op(ReduceOp op, bool is_bool) {
  if (is_bool) return op == ReduceOp::kMin ? ncclMin : ncclMax;
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
#if PIPET_NCCL_AT_LEAST(2, 10, 0)
    case ReduceOp::kAvg: return ncclAvg;
#else
    case ReduceOp::kAvg: return ncclSum;  // divided by the group size afterwards
#endif
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

ncclResult_t grouped(const std::function<ncclResult_t()>& call) {
  ncclResult_t code = ncclGroupStart();
  if (code != ncclSuccess) return code;
  const ncclResult_t inner = call();
  const ncclResult_t end = ncclGroupEnd();
  return inner != ncclSuccess ? inner : end;
}

// Wraps a fresh NCCL communicator (owned from the first line) with its stream.
std::shared_ptr<State> adopt(ncclComm_t comm, int device, const Communicator& host,
                             cudaStream_t caller_stream, const std::string& what) {
  auto state = std::make_shared<State>();
  state->comm = comm;
  state->device = device;
  state->caller_stream = caller_stream;
  DeviceGuard guard(device, what);
  check(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking), what,
        "cudaStreamCreateWithFlags");
  check(cudaMalloc(&state->barrier_scratch, sizeof(float)), what, "cudaMalloc");
  check(cudaMemset(state->barrier_scratch, 0, sizeof(float)), what, "cudaMemset");
  int nccl_rank = -1;
  int nccl_size = -1;
  ncclResult_t code = ncclCommUserRank(comm, &nccl_rank);
  if (code == ncclSuccess) code = ncclCommCount(comm, &nccl_size);
  if (code != ncclSuccess) throw CommError(what + ": querying the NCCL communicator failed: " + nccl_text(code, comm));
  if (nccl_rank != host.rank() || nccl_size != host.size())
    throw CommError(what + ": NCCL placed this process at rank " + std::to_string(nccl_rank) +
                    " of " + std::to_string(nccl_size) + " but the host group at rank " +
                    std::to_string(host.rank()) + " of " + std::to_string(host.size()));
  return state;
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host_group,
                                   std::shared_ptr<State> state)
    : host_(std::move(host_group)), state_(std::move(state)) {
  PIPET_CHECK(host_ != nullptr && state_ != nullptr, "NcclCommunicator needs a host group and state");
  set_default_timeout(host_->default_timeout());
}

NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::device() const { return state_->device; }

void NcclCommunicator::set_caller_stream(CUstream_st* stream) { state_->caller_stream = stream; }

void NcclCommunicator::abort() { state_->abort("aborted by the caller on rank " + std::to_string(rank())); }

int NcclCommunicator::library_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return 0;
  return version;
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(std::unique_ptr<Communicator> host_group,
                                                           int device) {
  if (!host_group) throw CommError("creating an NCCL communicator: no host group was given");
  const std::string what = "creating the NCCL communicator of group '" + host_group->name() +
                           "' (rank " + std::to_string(host_group->rank()) + " of " +
                           std::to_string(host_group->size()) + ", cuda:" +
                           std::to_string(device) + ")";
  // Every member takes part in both host collectives even when it cannot go
  // on, so no peer is left waiting in ncclCommInitRank for it.
  std::string local_problem;
  const int devices = cuda_support::device_count();
  if (device < 0 || device >= devices)
    local_problem = "device cuda:" + std::to_string(device) + " does not exist (this process sees " +
                    std::to_string(devices) + " CUDA device(s))";
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  // Byte 0: 1 when rank 0 made an id; then the id's bytes.
  torch::Tensor message = torch::zeros({static_cast<int64_t>(1 + sizeof(id))}, torch::kByte);
  if (host_group->rank() == 0 && local_problem.empty()) {
    const ncclResult_t code = ncclGetUniqueId(&id);
    if (code == ncclSuccess) {
      message.data_ptr<uint8_t>()[0] = 1;
      std::memcpy(message.data_ptr<uint8_t>() + 1, &id, sizeof(id));
    } else {
      local_problem = "ncclGetUniqueId failed: " + nccl_text(code, nullptr);
    }
  }
  host_group->broadcast(message, BroadcastOptions{0});
  torch::Tensor ready = torch::full({1}, local_problem.empty() ? 1 : 0, torch::kInt);
  host_group->all_reduce(ready, AllReduceOptions{ReduceOp::kMin});
  if (!local_problem.empty()) throw CommError(what + ": " + local_problem);
  if (ready.item<int>() == 0 || message.data_ptr<uint8_t>()[0] != 1)
    throw CommError(what + ": another member of the group could not take part (see its error)");
  std::memcpy(&id, message.data_ptr<uint8_t>() + 1, sizeof(id));

  ncclComm_t comm = nullptr;
  {
    DeviceGuard guard(device, what);
    const ncclResult_t code = ncclCommInitRank(&comm, host_group->size(), id, host_group->rank());
    if (code != ncclSuccess)
      throw CommError(what + ": ncclCommInitRank failed: " + nccl_text(code, nullptr) +
                      " (each member needs its own GPU; ranks sharing one use the MPI backend)");
  }
  std::shared_ptr<State> state = adopt(comm, device, *host_group, nullptr, what);
  spdlog::info("[comm] group '{}': NCCL {} on cuda:{} (rank {} of {})", host_group->name(),
               library_version(), device, host_group->rank(), host_group->size());
  return std::make_unique<NcclCommunicator>(std::move(host_group), std::move(state));
}

std::unique_ptr<Work> NcclCommunicator::all_reduce_async(torch::Tensor& tensor,
                                                         const AllReduceOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda()) return host_->all_reduce_async(tensor, options);
  const std::string what = describe(std::string("all_reduce(") + reduce_op_name(options.op) + ")");
  const int index = cuda_support::check_cuda_tensor(tensor, what);
  if (index != state_->device)
    throw CommError(what + ": the tensor is on cuda:" + std::to_string(index) +
                    " but this communicator uses cuda:" + std::to_string(state_->device));
  check_writable(tensor, "all_reduce");
  const at::ScalarType type = tensor.scalar_type();
  if (options.op == ReduceOp::kAvg && !tensor.is_floating_point())
    throw CommError(what + ": avg needs a floating-point tensor, got " + c10::toString(type));
  // NCCL has no int16: reduce an int32 copy.
  torch::Tensor buffer = type == at::kShort ? tensor.to(at::kInt)
                                            : (tensor.is_contiguous() ? tensor : tensor.contiguous());
  const ncclDataType_t datatype = reduce_type(buffer.scalar_type(), what);
  const ncclRedOp_t op = reduce_op(options.op, type == at::kBool);
  const bool divide_after = options.op == ReduceOp::kAvg && op == ncclSum;
  const size_t count = static_cast<size_t>(buffer.numel());
  void* data = buffer.data_ptr();
  Enqueue enqueue;
  if (count > 0)
    enqueue = [=](ncclComm_t comm, cudaStream_t stream) {
      return ncclAllReduce(data, data, count, datatype, op, comm, stream);
    };
  const bool copy_back = !buffer.is_same(tensor);
  const int group_size = size();
  auto finish = [buffer, target = tensor, copy_back, divide_after, group_size]() mutable {
    if (divide_after) buffer.div_(group_size);
    if (copy_back) target.copy_(buffer);
  };
  return launch(state_, what, {buffer}, enqueue, finish);
}

std::unique_ptr<Work> NcclCommunicator::broadcast_async(torch::Tensor& tensor,
                                                        const BroadcastOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda()) return host_->broadcast_async(tensor, options);
  const std::string what = describe("broadcast from root " + std::to_string(options.root));
  const int index = cuda_support::check_cuda_tensor(tensor, what);
  if (index != state_->device)
    throw CommError(what + ": the tensor is on cuda:" + std::to_string(index) +
                    " but this communicator uses cuda:" + std::to_string(state_->device));
  check_writable(tensor, "broadcast");
  check_peer(options.root, "root", "broadcast");
  torch::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  const size_t bytes = buffer.nbytes();
  void* data = buffer.data_ptr();
  const int root = options.root;
  Enqueue enqueue;
  if (bytes > 0)
    enqueue = [=](ncclComm_t comm, cudaStream_t stream) {
      return ncclBroadcast(data, data, bytes, ncclUint8, root, comm, stream);
    };
  const bool copy_back = !buffer.is_same(tensor) && rank() != root;
  auto finish = [buffer, target = tensor, copy_back]() mutable {
    if (copy_back) target.copy_(buffer);
  };
  return launch(state_, what, {buffer}, enqueue, finish);
}

std::unique_ptr<Work> NcclCommunicator::all_gather_async(const torch::Tensor& input,
                                                         torch::Tensor& output,
                                                         const AllGatherOptions& options) {
  if (!input.defined() || !input.device().is_cuda())
    return host_->all_gather_async(input, output, options);
  const std::string what = describe("all_gather");
  const int index = cuda_support::check_cuda_tensor(input, what);
  if (index != state_->device)
    throw CommError(what + ": the tensor is on cuda:" + std::to_string(index) +
                    " but this communicator uses cuda:" + std::to_string(state_->device));
  torch::Tensor source = input.contiguous();
  std::vector<int64_t> shape{size()};
  shape.insert(shape.end(), input.sizes().begin(), input.sizes().end());
  output = torch::empty(shape, input.options().memory_format(at::MemoryFormat::Contiguous));
  const size_t bytes = source.nbytes();
  const void* send = source.data_ptr();
  void* receive = output.data_ptr();
  Enqueue enqueue;
  if (bytes > 0)
    enqueue = [=](ncclComm_t comm, cudaStream_t stream) {
      return ncclAllGather(send, receive, bytes, ncclUint8, comm, stream);
    };
  return launch(state_, what, {source, output}, enqueue, nullptr);
}

std::unique_ptr<Work> NcclCommunicator::send_async(const torch::Tensor& tensor, int dst, int tag,
                                                   const PointToPointOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda())
    return host_->send_async(tensor, dst, tag, options);
  const std::string what =
      describe("send to rank " + std::to_string(dst) + " tag " + std::to_string(tag));
  const int index = cuda_support::check_cuda_tensor(tensor, what);
  if (index != state_->device)
    throw CommError(what + ": the tensor is on cuda:" + std::to_string(index) +
                    " but this communicator uses cuda:" + std::to_string(state_->device));
  check_peer(dst, "destination", "send");
  if (tag < 0) throw CommError(what + ": tag must be >= 0");
  if (dst == rank())
    throw CommError(what + ": NCCL cannot send to the sending rank itself (the send would wait "
                    "forever for its own receive)");
  torch::Tensor buffer = tensor.contiguous();
  const size_t bytes = buffer.nbytes();
  const void* data = buffer.data_ptr();
  Enqueue enqueue;
  if (bytes > 0)
    enqueue = [=](ncclComm_t comm, cudaStream_t stream) {
      return grouped([&] { return ncclSend(data, bytes, ncclUint8, dst, comm, stream); });
    };
  return launch(state_, what, {buffer}, enqueue, nullptr);
}

std::unique_ptr<Work> NcclCommunicator::recv_async(torch::Tensor& tensor, int src, int tag,
                                                   const PointToPointOptions& options) {
  if (!tensor.defined() || !tensor.device().is_cuda())
    return host_->recv_async(tensor, src, tag, options);
  const std::string what =
      describe("recv from rank " + std::to_string(src) + " tag " + std::to_string(tag));
  const int index = cuda_support::check_cuda_tensor(tensor, what);
  if (index != state_->device)
    throw CommError(what + ": the tensor is on cuda:" + std::to_string(index) +
                    " but this communicator uses cuda:" + std::to_string(state_->device));
  check_writable(tensor, "recv");
  check_peer(src, "source", "recv");
  if (tag < 0) throw CommError(what + ": tag must be >= 0");
  if (src == rank())
    throw CommError(what + ": NCCL cannot receive from the receiving rank itself (the receive "
                    "would wait forever for its own send)");
  torch::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  const size_t bytes = buffer.nbytes();
  void* data = buffer.data_ptr();
  Enqueue enqueue;
  if (bytes > 0)
    enqueue = [=](ncclComm_t comm, cudaStream_t stream) {
      return grouped([&] { return ncclRecv(data, bytes, ncclUint8, src, comm, stream); });
    };
  const bool copy_back = !buffer.is_same(tensor);
  auto finish = [buffer, target = tensor, copy_back]() mutable {
    if (copy_back) target.copy_(buffer);
  };
  return launch(state_, what, {buffer}, enqueue, finish);
}

std::unique_ptr<Work> NcclCommunicator::exchange_async(std::vector<P2POp> ops, const PointToPointOptions& options) {
  size_t on_device = 0;
  for (const P2POp& op : ops) on_device += op.tensor.defined() && op.tensor.device().is_cuda() ? 1 : 0;
  if (on_device == 0) return host_->exchange_async(std::move(ops), options);
  std::string what = describe("exchange of " + std::to_string(ops.size()) + " operations");
  if (on_device != ops.size())
    throw CommError(what + ": mixes CUDA and CPU tensors; an exchange moves one kind");
  struct Planned {
    bool send = true;
    void* data = nullptr;
    size_t bytes = 0;
    int peer = 0;
  };
  std::vector<Planned> planned;
  std::vector<torch::Tensor> buffers;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copy_backs;  // (received buffer, target)
  for (const P2POp& op : ops) {
    const bool send = op.kind == P2POp::Kind::kSend;
    const std::string op_what =
        describe(std::string(send ? "send to" : "recv from") + " rank " + std::to_string(op.peer) +
                 (op.what.empty() ? std::string() : " (" + op.what + ")"));
    const int index = cuda_support::check_cuda_tensor(op.tensor, op_what);
    if (index != state_->device)
      throw CommError(op_what + ": the tensor is on cuda:" + std::to_string(index) +
                      " but this communicator uses cuda:" + std::to_string(state_->device));
    check_peer(op.peer, send ? "destination" : "source", send ? "send" : "recv");
    if (op.peer == rank())
      throw CommError(op_what + ": NCCL cannot exchange with the calling rank itself");
    if (!send) check_writable(op.tensor, "recv");
    torch::Tensor buffer = send || !op.tensor.is_contiguous() ? op.tensor.contiguous() : op.tensor;
    if (!send && !buffer.is_same(op.tensor)) copy_backs.emplace_back(buffer, op.tensor);
    planned.push_back(Planned{send, buffer.data_ptr(), buffer.nbytes(), op.peer});
    buffers.push_back(buffer);
    if (!op.what.empty()) what += (planned.size() == 1 ? ": " : "; ") + op.what;
  }
  Enqueue enqueue = [planned](ncclComm_t comm, cudaStream_t stream) {
    return grouped([&] {
      for (const Planned& p : planned) {
        if (p.bytes == 0) continue;
        const ncclResult_t code = p.send ? ncclSend(p.data, p.bytes, ncclUint8, p.peer, comm, stream)
                                         : ncclRecv(p.data, p.bytes, ncclUint8, p.peer, comm, stream);
        if (code != ncclSuccess) return code;
      }
      return ncclSuccess;
    });
  };
  auto finish = [copy_backs]() mutable {
    for (auto& [buffer, target] : copy_backs) target.copy_(buffer);
  };
  return launch(state_, what, std::move(buffers), enqueue, finish);
}

std::unique_ptr<Work> NcclCommunicator::barrier_async(const BarrierOptions&) {
  const std::string what = describe("barrier");
  void* scratch = state_->barrier_scratch;
  Enqueue enqueue = [scratch](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, comm, stream);
  };
  return launch(state_, what, {}, enqueue, nullptr);
}

std::unique_ptr<Communicator> NcclCommunicator::subgroup(int color, int key, const std::string& name) {
  const std::string what = describe("subgroup '" + name + "' (color " + std::to_string(color) + ")");
  state_->ensure_healthy(what);
  // Same color and key on both sides: MPI and NCCL both order by key, then by
  // parent rank, so the ranks agree (adopt() checks it).
  std::unique_ptr<Communicator> host_child = host_->subgroup(color, key, name);
#if PIPET_NCCL_AT_LEAST(2, 18, 0)
  ncclComm_t child = nullptr;
  {
    DeviceGuard guard(state_->device, what);
    const ncclResult_t code =
        ncclCommSplit(state_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr);
    if (code != ncclSuccess) {
      const std::string message = what + ": ncclCommSplit failed: " + nccl_text(code, state_->comm);
      state_->abort(message);
      throw CommError(message);
    }
  }
  if (!host_child) {
    if (child != nullptr) ncclCommDestroy(child);
    return nullptr;
  }
  if (child == nullptr)
    throw CommError(what + ": ncclCommSplit gave no communicator although the host group has one");
  std::shared_ptr<State> state = adopt(child, state_->device, *host_child, state_->caller_stream, what);
  auto result = std::make_unique<NcclCommunicator>(std::move(host_child), std::move(state));
#else
  if (!host_child) return nullptr;
  std::unique_ptr<NcclCommunicator> result = create(std::move(host_child), state_->device);
  result->set_caller_stream(state_->caller_stream);
#endif
  result->set_default_timeout(default_timeout());
  return result;
}

}  // namespace pipet
