// The communication benchmark harness (nccl-tests' shape): one sweep over
// message sizes shared by every operation, and one small file per measured
// operation (comm_all_reduce.cc, comm_broadcast.cc, comm_send_recv.cc) that
// says how to fill, run and verify it and what its bus-bandwidth factor is.
//
// Per size and operation: one correctness round (rank-dependent pattern, one
// operation, compared with the closed form on every rank), then --warmup
// untimed and --iterations timed operations back to back. The time of one
// operation is the timed loop's wall time / iterations on each rank, then the
// maximum over ranks. benchmarks/README.md defines every figure.
#pragma once

#include "benchmarks/harness.h"
#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipet {
class Communicator;
class MpiRuntime;
}  // namespace pipet

namespace pipet::bench {

// One measured operation over one communicator. An object lives for the
// whole sweep; resize() is called once per message size before the others.
class CommOperation {
 public:
  virtual ~CommOperation() = default;
  CommOperation() = default;
  CommOperation(const CommOperation&) = delete;
  CommOperation& operator=(const CommOperation&) = delete;

  // "all_reduce", "broadcast", "send_recv".
  virtual const char* name() const = 0;
  // bus bandwidth = algorithm bandwidth x bus_factor(ranks).
  virtual double bus_factor(int ranks) const = 0;
  // (Re)allocates this rank's buffers: `elements` values of `options`.
  virtual void resize(int64_t elements, const torch::TensorOptions& options) = 0;
  // Fills the buffers with the rank-dependent check pattern.
  virtual void fill_check_pattern() = 0;
  // Fills the buffers for the timed loop (values that stay finite and normal
  // however many times the operation repeats).
  virtual void fill_for_timing() = 0;
  // One blocking operation.
  virtual void run() = 0;
  // After fill_check_pattern() + run(): "" when this rank's result matches the
  // closed form, else the first mismatch ("element 17 is 3, expected 5").
  virtual std::string verify() const = 0;
};

// The operations, one file each. `comm` outlives the operation.
std::unique_ptr<CommOperation> make_all_reduce(Communicator& comm);
std::unique_ptr<CommOperation> make_broadcast(Communicator& comm);
std::unique_ptr<CommOperation> make_send_recv(Communicator& comm);

// The names make_operation accepts, in the default order.
const std::vector<std::string>& operation_names();
// Throws ConfigError naming `name` and the valid names.
std::unique_ptr<CommOperation> make_operation(const std::string& name, Communicator& comm);

// Check helpers shared by the operation files.
// Element i of the pattern = (i mod 251) + offset, in `options`' dtype (the
// values are small integers: exact in every supported dtype).
torch::Tensor check_pattern(int64_t elements, double offset, const torch::TensorOptions& options);
// "" when equal, else the first differing element, its value and the expected.
std::string first_mismatch(const torch::Tensor& got, const torch::Tensor& expected);

// A communicator of the chosen backend over every rank of the job, and the
// device its buffers live on. The seam where a GPU backend plugs in: "mpi"
// (CPU tensors over MpiCommunicator) is the only one this build has; "nccl"
// throws ConfigError saying so.
struct CommBackend {
  std::string name;
  std::unique_ptr<Communicator> world;
  torch::Device device = torch::kCPU;
};
CommBackend open_comm_backend(const std::string& name, MpiRuntime& runtime);

// Byte counts with an optional binary suffix: "4096", "1K", "64KiB", "256M",
// "1G". Throws ConfigError naming `flag`.
int64_t parse_byte_count(const std::string& text, const std::string& flag);
// "1 KiB", "256 MiB", "1536 B".
std::string format_bytes(int64_t bytes);

struct CommSweepOptions {
  HarnessOptions harness;              // --warmup, --iterations, --json
  std::string backend = "mpi";
  std::vector<std::string> operations; // empty = every operation
  std::string min_bytes = "1K";
  std::string max_bytes = "256M";
  int step_factor = 2;
  std::string dtype = "float32";
  double min_busbw_gbps = 0.0;         // 0 = off
  std::string log_level = "warn";
};

// Registers every flag of bench_comm on `app`.
void add_comm_flags(CLI::App& app, CommSweepOptions& options);

// The whole benchmark on this rank (collective over every rank of the job):
// prints the table on rank 0, writes --json there, and returns the exit code
// every rank agrees on (0, 20 check failed, 23 below --min-busbw).
int run_comm_benchmark(CommSweepOptions& options, MpiRuntime& runtime);

}  // namespace pipet::bench
