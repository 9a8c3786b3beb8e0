// broadcast (from rank 0, in place) for bench_comm.
//
// Check: the root holds pattern(i) + 1000 and every other rank -1; every rank
// must end with the root's values. Bus bandwidth factor 1: each non-root rank
// receives the whole message once (a pipelined tree or chain moves each byte
// over every link once).
#include "benchmarks/comm_harness.h"
#include "runtime/comm/communicator.h"

namespace pipet::bench {
namespace {

constexpr int kRoot = 0;

class Broadcast final : public CommOperation {
 public:
  explicit Broadcast(Communicator& comm) : comm_(comm) {}

  const char* name() const override { return "broadcast"; }
  double bus_factor(int) const override { return 1.0; }

  void resize(int64_t elements, const torch::TensorOptions& options) override {
    buffer_ = torch::empty({elements}, options);
  }
  void fill_check_pattern() override {
    if (comm_.rank() == kRoot) {
      buffer_.copy_(check_pattern(buffer_.numel(), 1000.0, buffer_.options()));
    } else {
      buffer_.fill_(-1);
    }
  }
  // Broadcast only copies bytes: any values time the same.
  void fill_for_timing() override { buffer_.zero_(); }
  void run() override { comm_.broadcast(buffer_, {kRoot}); }

  std::string verify() const override {
    return first_mismatch(buffer_, check_pattern(buffer_.numel(), 1000.0, buffer_.options()));
  }

 private:
  Communicator& comm_;
  torch::Tensor buffer_;
};

}  // namespace

std::unique_ptr<CommOperation> make_broadcast(Communicator& comm) {
  return std::make_unique<Broadcast>(comm);
}

}  // namespace pipet::bench
