// send_recv (ring exchange) for bench_comm: every rank r sends its message to
// rank (r+1) mod n and at the same time receives one from rank (r-1) mod n
// (nccl-tests' sendrecv). All n transfers run concurrently, so the figure is
// the point-to-point bandwidth of one link while every link is busy; with 2
// ranks it is a simultaneous exchange in both directions.
//
// Check: rank r sends pattern(i) + 1000 r into a receive buffer of -1 and
// must receive pattern(i) + 1000 ((r-1) mod n). Bus bandwidth factor 1: each
// rank's link carries the message once.
#include "benchmarks/comm_harness.h"
#include "runtime/comm/communicator.h"

#include <vector>

namespace pipet::bench {
namespace {

constexpr int kTag = 7;

class SendRecv final : public CommOperation {
 public:
  explicit SendRecv(Communicator& comm) : comm_(comm) {}

  const char* name() const override { return "send_recv"; }
  double bus_factor(int) const override { return 1.0; }

  void resize(int64_t elements, const torch::TensorOptions& options) override {
    send_ = torch::empty({elements}, options);
    recv_ = torch::empty({elements}, options);
  }
  void fill_check_pattern() override {
    send_.copy_(check_pattern(send_.numel(), 1000.0 * comm_.rank(), send_.options()));
    recv_.fill_(-1);
  }
  void fill_for_timing() override {
    send_.zero_();
    recv_.zero_();
  }
  void run() override {
    const int n = comm_.size();
    const int next = (comm_.rank() + 1) % n;
    const int previous = (comm_.rank() + n - 1) % n;
    // Receive first so the matching send never waits for a posted buffer.
    std::unique_ptr<Work> receiving = comm_.recv_async(recv_, previous, kTag);
    std::unique_ptr<Work> sending = comm_.send_async(send_, next, kTag);
    receiving->wait(comm_.default_timeout());
    sending->wait(comm_.default_timeout());
  }

  std::string verify() const override {
    const int n = comm_.size();
    const int previous = (comm_.rank() + n - 1) % n;
    return first_mismatch(recv_, check_pattern(recv_.numel(), 1000.0 * previous, recv_.options()));
  }

 private:
  Communicator& comm_;
  torch::Tensor send_;
  torch::Tensor recv_;
};

}  // namespace

std::unique_ptr<CommOperation> make_send_recv(Communicator& comm) {
  return std::make_unique<SendRecv>(comm);
}

}  // namespace pipet::bench
