// bench_comm: bandwidth of all-reduce, broadcast and send/recv over message
// sizes, through our Communicator, under mpirun (see benchmarks/README.md).
// The sweep lives in comm_harness.cc, each operation in its own comm_*.cc.
#include "benchmarks/comm_harness.h"
#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/errors.h"

#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <memory>

int main(int argc, char** argv) {
  pipet::bench::CommSweepOptions options;
  CLI::App app{"Bandwidth of all-reduce, broadcast and send/recv through the Communicator "
               "(run under mpirun; see benchmarks/README.md)",
               "bench_comm"};
  pipet::bench::add_comm_flags(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(pipet::ExitCode::kConfig);
  }
  std::unique_ptr<pipet::MpiRuntime> runtime;
  int code = 0;
  try {
    runtime = std::make_unique<pipet::MpiRuntime>(&argc, &argv);
    return pipet::bench::run_comm_benchmark(options, *runtime);
  } catch (const pipet::Error& e) {
    std::cerr << "bench_comm: error" << (runtime ? " on rank " + std::to_string(runtime->world_rank()) : "")
              << ": " << e.what() << "\n";
    code = static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::cerr << "bench_comm: internal error: " << e.what() << "\n";
    code = static_cast<int>(pipet::ExitCode::kInternal);
  }
  // A rank that fails alone would leave the others waiting in a collective:
  // end the whole job with its code.
  if (runtime && runtime->world_size() > 1) runtime->abort(code);
  return code;
}
