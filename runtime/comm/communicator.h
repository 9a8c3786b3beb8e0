// Communicator: what the engine holds to talk to the other ranks of one group
// ("world", "pipeline0", "stage2-dp"...). Implementations: LocalCommunicator
// (one process) and MpiCommunicator (CPU tensors over MPI).
//
// Every operation has an async form returning a Work and a blocking form that
// is the async form plus wait() with the options' timeout, or the
// communicator's default timeout when the options leave it unset.
//
// Tensors: CPU, strided. Reductions support float32/float64/float16/bfloat16/
// int64/int32/int16/int8/uint8/bool (float16/bfloat16 reduce in float32; bool
// sum/max are logical or, min is logical and; kAvg needs a floating dtype).
// Transfers (broadcast, all_gather, send/recv) move raw bytes and support every
// dtype. Zero-size tensors are valid. Non-contiguous tensors are staged through
// a contiguous temporary and the result is copied back.
#pragma once

#include "runtime/comm/work.h"
#include "runtime/core/torch_pch.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pipet {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

const char* reduce_op_name(ReduceOp op);

struct AllReduceOptions {
  ReduceOp op = ReduceOp::kSum;
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;  // unset: communicator default
};

struct BroadcastOptions {
  int root = 0;  // rank in this communicator
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

struct AllGatherOptions {
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

struct PointToPointOptions {
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

struct BarrierOptions {
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

// One operation of a point-to-point exchange (Communicator::exchange_async).
struct P2POp {
  enum class Kind { kSend, kRecv };
  Kind kind = Kind::kSend;
  torch::Tensor tensor;  // send: the data; recv: written in place (its shape and dtype)
  int peer = 0;
  int tag = 0;
  std::string what;      // named in errors: "stage 1 -> 2, activation of micro-batch 3"
};
P2POp send_op(torch::Tensor tensor, int peer, int tag, std::string what);
P2POp recv_op(torch::Tensor tensor, int peer, int tag, std::string what);

class Communicator {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{std::chrono::minutes(5)};

  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;

  std::chrono::milliseconds default_timeout() const { return default_timeout_; }
  // Throws CommError when `timeout` is not positive.
  void set_default_timeout(std::chrono::milliseconds timeout);

  // In place on every rank: tensor = op(tensor of every rank).
  virtual std::unique_ptr<Work> all_reduce_async(torch::Tensor& tensor,
                                                 const AllReduceOptions& options = {}) = 0;
  // In place: every rank's tensor becomes the root's. Shapes and dtypes must
  // match on every rank (a size mismatch is reported where MPI detects it).
  virtual std::unique_ptr<Work> broadcast_async(torch::Tensor& tensor,
                                                const BroadcastOptions& options = {}) = 0;
  // Sets `output` to a new contiguous tensor [size(), input.sizes()...] holding
  // every rank's input in rank order; valid once the Work is waited on.
  virtual std::unique_ptr<Work> all_gather_async(const torch::Tensor& input, torch::Tensor& output,
                                                 const AllGatherOptions& options = {}) = 0;
  // Point to point. Messages between one pair with one tag arrive in order.
  // recv checks the received byte count against the tensor's size.
  virtual std::unique_ptr<Work> send_async(const torch::Tensor& tensor, int dst, int tag,
                                           const PointToPointOptions& options = {}) = 0;
  virtual std::unique_ptr<Work> recv_async(torch::Tensor& tensor, int src, int tag,
                                           const PointToPointOptions& options = {}) = 0;
  virtual std::unique_ptr<Work> barrier_async(const BarrierOptions& options = {}) = 0;

  // Point-to-point operations issued together and completed together: no op
  // of the list waits for another (NCCL: one ncclGroupStart/End; MPI: every
  // op posted, then all waited). Under NCCL's rules (a send may block until
  // its receive is posted, receives match in issue order, no tags) this is
  // how a pipeline pairs traffic that crosses: stage s's "send activation
  // m+1, receive gradient m" as one exchange, stage s+1's "send gradient m,
  // receive activation m+1" as its counterpart. Errors name the op's `what`.
  // The default posts each op with send_async / recv_async.
  virtual std::unique_ptr<Work> exchange_async(std::vector<P2POp> ops, const PointToPointOptions& options = {});

  // Collective over this group: ranks passing the same `color` form one new
  // group, ordered by `key` (ties by rank); a negative color opts out and gets
  // nullptr. The new group has this group's default timeout.
  virtual std::unique_ptr<Communicator> subgroup(int color, int key, const std::string& name) = 0;

  // Blocking forms: async + wait.
  void all_reduce(torch::Tensor& tensor, const AllReduceOptions& options = {});
  void broadcast(torch::Tensor& tensor, const BroadcastOptions& options = {});
  torch::Tensor all_gather(const torch::Tensor& input, const AllGatherOptions& options = {});
  void send(const torch::Tensor& tensor, int dst, int tag, const PointToPointOptions& options = {});
  void recv(torch::Tensor& tensor, int src, int tag, const PointToPointOptions& options = {});
  void barrier(const BarrierOptions& options = {});
  void exchange(std::vector<P2POp> ops, const PointToPointOptions& options = {});

 protected:
  std::chrono::milliseconds effective_timeout(
      const std::optional<std::chrono::milliseconds>& timeout) const {
    return timeout ? *timeout : default_timeout_;
  }
  // "all_reduce on group 'world' (rank 1 of 4)": the prefix of every error.
  std::string describe(const std::string& operation) const;
  // Throws CommError unless `tensor` is a defined, strided CPU tensor.
  void check_tensor(const torch::Tensor& tensor, const std::string& operation) const;
  // Throws CommError unless `tensor` can be written in place (no overlap).
  void check_writable(const torch::Tensor& tensor, const std::string& operation) const;
  // Throws CommError unless 0 <= peer < size().
  void check_peer(int peer, const char* role, const std::string& operation) const;
  // One Work for the Works of an exchange's ops, in their order: completed
  // when all are; wait() waits for each within one deadline and names the
  // failing op's `what`.
  static std::unique_ptr<Work> exchange_work(std::vector<std::unique_ptr<Work>> works,
                                             std::vector<std::string> whats);

 private:
  std::chrono::milliseconds default_timeout_ = kDefaultTimeout;
};

}  // namespace pipet
