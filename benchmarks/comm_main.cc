// bench_comm: bandwidth of all-reduce, broadcast and send/recv over message
// sizes, through our Communicator, under mpirun (see benchmarks/README.md).
// The sweep lives in comm_harness.cc, each operation in its own comm_*.cc.
#include "benchmarks/comm_harness.h"
#include "benchmarks/mpi_benchmark.h"
#include "runtime/comm/mpi_runtime.h"

#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  pipet::bench::CommSweepOptions options;
  CLI::App app{"Bandwidth of all-reduce, broadcast and send/recv through the Communicator "
               "(run under mpirun; see benchmarks/README.md)",
               "bench_comm"};
  pipet::bench::add_comm_flags(app, options);
  return pipet::bench::run_mpi_benchmark(app, argc, argv, [&](pipet::MpiRuntime& runtime) {
    return pipet::bench::run_comm_benchmark(options, runtime);
  });
}
