// all_reduce (sum, in place) for bench_comm.
//
// Check: rank r holds pattern(i) + 1000 r, so every rank must end with
// n pattern(i) + 1000 n(n-1)/2 (small integers: exact in every dtype).
// Timing runs on zeros, which stay zero however often they are summed.
// Bus bandwidth factor 2(n-1)/n: a ring all-reduce moves that many bytes per
// byte of the message through each rank's link (reduce-scatter + all-gather).
#include "benchmarks/comm_harness.h"
#include "runtime/comm/communicator.h"

namespace pipet::bench {
namespace {

class AllReduce final : public CommOperation {
 public:
  explicit AllReduce(Communicator& comm) : comm_(comm) {}

  const char* name() const override { return "all_reduce"; }
  double bus_factor(int ranks) const override { return 2.0 * (ranks - 1) / ranks; }

  void resize(int64_t elements, const torch::TensorOptions& options) override {
    buffer_ = torch::empty({elements}, options);
  }
  void fill_check_pattern() override {
    buffer_.copy_(check_pattern(buffer_.numel(), 1000.0 * comm_.rank(), buffer_.options()));
  }
  void fill_for_timing() override { buffer_.zero_(); }
  void run() override { comm_.all_reduce(buffer_, {ReduceOp::kSum}); }

  std::string verify() const override {
    const int n = comm_.size();
    const torch::Tensor expected =
        check_pattern(buffer_.numel(), 0.0, buffer_.options()) * n + 1000.0 * n * (n - 1) / 2;
    return first_mismatch(buffer_, expected.to(buffer_.scalar_type()));
  }

 private:
  Communicator& comm_;
  torch::Tensor buffer_;
};

}  // namespace

std::unique_ptr<CommOperation> make_all_reduce(Communicator& comm) {
  return std::make_unique<AllReduce>(comm);
}

}  // namespace pipet::bench
