#include "runtime/comm/mpi_communicator.h"

#include "runtime/comm/local_communicator.h"
#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/errors.h"

#include <spdlog/spdlog.h>

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <functional>
#include <set>
#include <thread>
#include <utility>

namespace pipet {

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  std::string name;
  int rank = 0;
  int size = 1;
  bool nccl_rules = false;  // see mpi_communicator.h
};

namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

void ensure_mpi_usable(const std::string& what) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) throw CommError(what + ": MPI was already finalised (the MpiRuntime is gone)");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw CommError(what + ": MPI is not initialised; create an MpiRuntime first");
}

int checked_count(int64_t count, const std::string& what) {
  if (count > INT_MAX)
    throw CommError(what + ": " + std::to_string(count) +
                    " items exceed MPI's count limit (INT_MAX); split the tensor");
  return static_cast<int>(count);
}

MPI_Datatype reduce_datatype(at::ScalarType type, const std::string& what) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kBool: return MPI_C_BOOL;
    default:
      throw CommError(what + ": dtype " + std::string(c10::toString(type)) + " cannot be reduced");
  }
}

MPI_Op reduce_mpi_op(ReduceOp op, bool is_bool) {
  if (is_bool) return op == ReduceOp::kMin ? MPI_LAND : MPI_LOR;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

// One non-blocking MPI request plus the tensors it reads or writes (kept alive
// here) and a finish step (copy back, checks) run once it completes.
class MpiWork final : public Work {
 public:
  using Finish = std::function<void(const MPI_Status&)>;

  MpiWork(std::string description, bool point_to_point, std::vector<torch::Tensor> buffers,
          Finish finish)
      : description_(std::move(description)), point_to_point_(point_to_point),
        buffers_(std::move(buffers)), finish_(std::move(finish)) {}

  ~MpiWork() override {
    if (request_ == MPI_REQUEST_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (point_to_point_) {
      // Withdraw the message; a receive cancels at once, a matched send may not.
      MPI_Cancel(&request_);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
      int done = 0;
      while (!done && std::chrono::steady_clock::now() < give_up) {
        if (MPI_Test(&request_, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
        if (!done) std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      if (done) return;
      MPI_Request_free(&request_);  // let MPI finish it in the background
    }
    // A pending collective can be neither cancelled nor freed, and a released
    // send may still read its buffer: keep the buffers alive for the rest of
    // the process so MPI never touches freed memory.
    spdlog::warn("[comm] {} was abandoned before it completed; its buffers are kept alive",
                 description_);
    new std::vector<torch::Tensor>(std::move(buffers_));  // intentional leak
  }

  MPI_Request* request() { return &request_; }

  bool completed() override {
    if (mpi_done_ || error_ != MPI_SUCCESS) return true;
    poll();
    return mpi_done_ || error_ != MPI_SUCCESS;
  }

  void wait(std::chrono::milliseconds timeout) override {
    if (!failure_.empty()) throw CommError(failure_);
    if (finished_) return;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int spins = 0;
    while (!mpi_done_ && error_ == MPI_SUCCESS) {
      poll();
      if (mpi_done_ || error_ != MPI_SUCCESS) break;
      if (std::chrono::steady_clock::now() >= deadline)
        throw CommError(description_ + " did not complete within the timeout of " +
                        std::to_string(timeout.count()) +
                        " ms (a peer is missing, slow, or called a different operation)");
      // Spin briefly for latency, then yield the core to the other ranks.
      if (++spins > 200) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (error_ != MPI_SUCCESS) {
      failure_ = description_ + " failed: " + mpi_error_text(error_);
      throw CommError(failure_);
    }
    buffers_.clear();
    try {
      if (finish_) finish_(status_);
    } catch (const CommError& e) {
      failure_ = e.what();  // a later wait() reports the same failure
      throw;
    }
    finished_ = true;
  }

 private:
  void poll() {
    int flag = 0;
    int code = MPI_Test(&request_, &flag, &status_);
    if (code != MPI_SUCCESS) {
      error_ = code;
      request_ = MPI_REQUEST_NULL;  // an erroneous request is complete and released
      return;
    }
    if (flag) mpi_done_ = true;
  }

  std::string description_;
  bool point_to_point_;
  std::vector<torch::Tensor> buffers_;
  Finish finish_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  MPI_Status status_{};
  bool mpi_done_ = false;
  bool finished_ = false;
  int error_ = MPI_SUCCESS;
  std::string failure_;
};

}  // namespace

MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  PIPET_CHECK(impl_ && impl_->comm != MPI_COMM_NULL, "MpiCommunicator needs a valid MPI_Comm");
}

MpiCommunicator::~MpiCommunicator() {
  if (!impl_ || impl_->comm == MPI_COMM_NULL || impl_->comm == MPI_COMM_WORLD) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // MPI_Finalize already released every communicator
  MPI_Comm_free(&impl_->comm);
}

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::size() const { return impl_->size; }
const std::string& MpiCommunicator::name() const { return impl_->name; }

namespace {

// Under NCCL's rules every message of a communicator carries this tag.
constexpr int kNcclRulesTag = 0;

// Wraps a freshly created MPI_Comm (owned) in an MpiCommunicator.
std::unique_ptr<MpiCommunicator> adopt(MPI_Comm comm, const std::string& name, bool nccl_rules = false) {
  auto impl = std::make_unique<MpiCommunicator::Impl>();
  impl->comm = comm;
  impl->name = name;
  impl->nccl_rules = nccl_rules;
  int code = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  if (code == MPI_SUCCESS) code = MPI_Comm_rank(comm, &impl->rank);
  if (code == MPI_SUCCESS) code = MPI_Comm_size(comm, &impl->size);
  if (code != MPI_SUCCESS) {
    MPI_Comm_free(&comm);
    throw CommError("creating communicator '" + name + "' failed: " + mpi_error_text(code));
  }
  return std::make_unique<MpiCommunicator>(std::move(impl));
}

}  // namespace

std::unique_ptr<Work> MpiCommunicator::all_reduce_async(torch::Tensor& tensor,
                                                        const AllReduceOptions& options) {
  const std::string what = describe(std::string("all_reduce(") + reduce_op_name(options.op) + ")");
  ensure_mpi_usable(what);
  check_tensor(tensor, "all_reduce");
  check_writable(tensor, "all_reduce");
  const at::ScalarType type = tensor.scalar_type();
  if (options.op == ReduceOp::kAvg && !tensor.is_floating_point())
    throw CommError(what + ": avg needs a floating-point tensor, got " + c10::toString(type));
  // MPI has no 16-bit float types: reduce a float32 copy.
  const bool widen = type == at::kHalf || type == at::kBFloat16;
  torch::Tensor buffer = widen ? tensor.to(at::kFloat).contiguous()
                               : (tensor.is_contiguous() ? tensor : tensor.contiguous());
  const MPI_Datatype datatype = reduce_datatype(buffer.scalar_type(), what);
  const int count = checked_count(buffer.numel(), what);
  const bool copy_back = !buffer.is_same(tensor);
  const int group_size = size();
  const ReduceOp op = options.op;
  auto finish = [buffer, target = tensor, copy_back, op, group_size](const MPI_Status&) mutable {
    if (op == ReduceOp::kAvg) buffer.div_(group_size);
    if (copy_back) target.copy_(buffer);
  };
  auto work = std::make_unique<MpiWork>(what, false, std::vector<torch::Tensor>{buffer}, finish);
  int code = MPI_Iallreduce(MPI_IN_PLACE, buffer.data_ptr(), count, datatype,
                            reduce_mpi_op(op, type == at::kBool), impl_->comm, work->request());
  if (code != MPI_SUCCESS) throw CommError(what + " failed to start: " + mpi_error_text(code));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::broadcast_async(torch::Tensor& tensor,
                                                       const BroadcastOptions& options) {
  const std::string what = describe("broadcast from root " + std::to_string(options.root));
  ensure_mpi_usable(what);
  check_tensor(tensor, "broadcast");
  check_writable(tensor, "broadcast");
  check_peer(options.root, "root", "broadcast");
  torch::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  const int count = checked_count(buffer.nbytes(), what);
  const bool copy_back = !buffer.is_same(tensor) && rank() != options.root;
  auto finish = [buffer, target = tensor, copy_back](const MPI_Status&) mutable {
    if (copy_back) target.copy_(buffer);
  };
  auto work = std::make_unique<MpiWork>(what, false, std::vector<torch::Tensor>{buffer}, finish);
  int code = MPI_Ibcast(buffer.data_ptr(), count, MPI_BYTE, options.root, impl_->comm,
                        work->request());
  if (code != MPI_SUCCESS) throw CommError(what + " failed to start: " + mpi_error_text(code));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::all_gather_async(const torch::Tensor& input,
                                                        torch::Tensor& output,
                                                        const AllGatherOptions&) {
  const std::string what = describe("all_gather");
  ensure_mpi_usable(what);
  check_tensor(input, "all_gather");
  torch::Tensor source = input.contiguous();
  std::vector<int64_t> shape{size()};
  shape.insert(shape.end(), input.sizes().begin(), input.sizes().end());
  output = torch::empty(shape, input.options().memory_format(at::MemoryFormat::Contiguous));
  const int count = checked_count(source.nbytes(), what);
  checked_count(output.nbytes(), what);
  auto work = std::make_unique<MpiWork>(what, false, std::vector<torch::Tensor>{source, output},
                                        nullptr);
  int code = MPI_Iallgather(source.data_ptr(), count, MPI_BYTE, output.data_ptr(), count, MPI_BYTE,
                            impl_->comm, work->request());
  if (code != MPI_SUCCESS) throw CommError(what + " failed to start: " + mpi_error_text(code));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::post(P2POp& op) {
  const bool send = op.kind == P2POp::Kind::kSend;
  const std::string peer = std::to_string(op.peer);
  const std::string what =
      describe(std::string(send ? "send to" : "recv from") + " rank " + peer + " tag " + std::to_string(op.tag) +
               (op.what.empty() ? std::string() : " (" + op.what + ")"));
  ensure_mpi_usable(what);
  check_tensor(op.tensor, send ? "send" : "recv");
  if (!send) check_writable(op.tensor, "recv");
  check_peer(op.peer, send ? "destination" : "source", send ? "send" : "recv");
  if (op.tag < 0) throw CommError(what + ": tag must be >= 0");
  const int tag = impl_->nccl_rules ? kNcclRulesTag : op.tag;
  if (send) {
    torch::Tensor buffer = op.tensor.contiguous();
    const int count = checked_count(buffer.nbytes(), what);
    auto work = std::make_unique<MpiWork>(what, true, std::vector<torch::Tensor>{buffer}, nullptr);
    // A synchronous send completes only once its receive has started.
    const int code = impl_->nccl_rules
                         ? MPI_Issend(buffer.data_ptr(), count, MPI_BYTE, op.peer, tag, impl_->comm, work->request())
                         : MPI_Isend(buffer.data_ptr(), count, MPI_BYTE, op.peer, tag, impl_->comm, work->request());
    if (code != MPI_SUCCESS) throw CommError(what + " failed to start: " + mpi_error_text(code));
    return work;
  }
  torch::Tensor buffer = op.tensor.is_contiguous() ? op.tensor : op.tensor.contiguous();
  const int count = checked_count(buffer.nbytes(), what);
  const bool copy_back = !buffer.is_same(op.tensor);
  auto finish = [buffer, target = op.tensor, copy_back, count, what](const MPI_Status& status) mutable {
    int received = 0;
    MPI_Get_count(&status, MPI_BYTE, &received);
    if (received != count)
      throw CommError(what + ": expected " + std::to_string(count) + " bytes (" + std::to_string(target.numel()) +
                      " elements of " + c10::toString(target.scalar_type()) + "), received " +
                      std::to_string(received) + " bytes; sender and receiver disagree on the shape or dtype");
    if (copy_back) target.copy_(buffer);
  };
  auto work = std::make_unique<MpiWork>(what, true, std::vector<torch::Tensor>{buffer}, finish);
  const int code = MPI_Irecv(buffer.data_ptr(), count, MPI_BYTE, op.peer, tag, impl_->comm, work->request());
  if (code != MPI_SUCCESS) throw CommError(what + " failed to start: " + mpi_error_text(code));
  return work;
}

void MpiCommunicator::complete_under_rules(Work& work, const PointToPointOptions& options) const {
  if (!impl_->nccl_rules) return;
  try {
    work.wait(effective_timeout(options.timeout));
  } catch (const CommError& e) {
    throw CommError(std::string(e.what()) +
                    " [under NCCL's rules (PIPET_NCCL_RULES): a send waits until its receive is posted and "
                    "operations complete in issue order; exchanges that cross must be issued together]");
  }
}

std::unique_ptr<Work> MpiCommunicator::send_async(const torch::Tensor& tensor, int dst, int tag,
                                                  const PointToPointOptions& options) {
  P2POp op = send_op(tensor, dst, tag, "");
  std::unique_ptr<Work> work = post(op);
  complete_under_rules(*work, options);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::recv_async(torch::Tensor& tensor, int src, int tag,
                                                  const PointToPointOptions& options) {
  P2POp op = recv_op(tensor, src, tag, "");
  std::unique_ptr<Work> work = post(op);
  complete_under_rules(*work, options);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::exchange_async(std::vector<P2POp> ops, const PointToPointOptions& options) {
  // Every op is posted before any is waited for: none blocks another.
  std::vector<std::unique_ptr<Work>> works;
  std::vector<std::string> whats;
  for (P2POp& op : ops) {
    works.push_back(post(op));
    whats.push_back(op.what);
  }
  std::unique_ptr<Work> work = exchange_work(std::move(works), std::move(whats));
  complete_under_rules(*work, options);
  return work;
}

bool MpiCommunicator::nccl_rules() const { return impl_->nccl_rules; }
void MpiCommunicator::set_nccl_rules(bool on) { impl_->nccl_rules = on; }

std::unique_ptr<Work> MpiCommunicator::barrier_async(const BarrierOptions&) {
  const std::string what = describe("barrier");
  ensure_mpi_usable(what);
  auto work = std::make_unique<MpiWork>(what, false, std::vector<torch::Tensor>{}, nullptr);
  int code = MPI_Ibarrier(impl_->comm, work->request());
  if (code != MPI_SUCCESS) throw CommError(what + " failed to start: " + mpi_error_text(code));
  return work;
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  const std::string what = describe("split into '" + name + "'");
  ensure_mpi_usable(what);
  MPI_Comm child = MPI_COMM_NULL;
  int code = MPI_Comm_split(impl_->comm, color < 0 ? MPI_UNDEFINED : color, key, &child);
  if (code != MPI_SUCCESS) throw CommError(what + " failed: " + mpi_error_text(code));
  if (child == MPI_COMM_NULL) return nullptr;
  return adopt(child, name, impl_->nccl_rules);
}

std::unique_ptr<Communicator> MpiCommunicator::subgroup(int color, int key, const std::string& name) {
  std::unique_ptr<MpiCommunicator> group = split(color, key, name);
  if (group) group->set_default_timeout(default_timeout());
  return group;
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::create_group(const std::vector<int>& ranks,
                                                               const std::string& name) {
  const std::string what = describe("create_group '" + name + "'");
  if (ranks.empty()) throw CommError(what + ": the rank list is empty");
  std::set<int> seen;
  int my_index = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    check_peer(ranks[i], "member", "create_group '" + name + "'");
    if (!seen.insert(ranks[i]).second)
      throw CommError(what + ": rank " + std::to_string(ranks[i]) + " is listed twice");
    if (ranks[i] == rank()) my_index = static_cast<int>(i);
  }
  return split(my_index < 0 ? -1 : 0, my_index, name);
}

std::unique_ptr<MpiCommunicator> make_world_communicator(MpiRuntime& runtime) {
  ensure_mpi_usable("make_world_communicator");
  MPI_Comm world = MPI_COMM_NULL;
  int code = MPI_Comm_dup(MPI_COMM_WORLD, &world);
  if (code != MPI_SUCCESS)
    throw CommError("make_world_communicator (world rank " + std::to_string(runtime.world_rank()) +
                    "): MPI_Comm_dup failed: " + mpi_error_text(code));
  bool nccl_rules = false;
  if (const char* value = std::getenv("PIPET_NCCL_RULES"); value && *value) {
    const std::string text(value);
    if (text != "0" && text != "1") {
      MPI_Comm_free(&world);
      throw ConfigError("PIPET_NCCL_RULES: expected 0 or 1, got '" + text + "'");
    }
    nccl_rules = text == "1";
  }
  return adopt(world, "world", nccl_rules);
}

std::unique_ptr<Communicator> make_communicator(MpiRuntime* runtime) {
  if (runtime == nullptr || runtime->world_size() == 1) return std::make_unique<LocalCommunicator>("world");
  return make_world_communicator(*runtime);
}

}  // namespace pipet
