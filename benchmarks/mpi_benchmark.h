// The end of a multi-rank benchmark's main (run under mpirun): as
// run_benchmark (harness.h), with MPI started after the command line parsed,
// errors naming the rank, and a rank that fails ending the whole job with its
// code, since the others would otherwise wait for it in a collective.
#pragma once

#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/errors.h"

#include <CLI/CLI.hpp>

#include <functional>
#include <iostream>
#include <memory>
#include <string>

namespace pipet::bench {

inline int run_mpi_benchmark(CLI::App& app, int argc, char** argv,
                             const std::function<int(MpiRuntime&)>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ExitCode::kConfig);
  }
  std::unique_ptr<MpiRuntime> runtime;
  int code = 0;
  try {
    runtime = std::make_unique<MpiRuntime>(&argc, &argv);
    return body(*runtime);
  } catch (const Error& e) {
    std::cerr << app.get_name() << ": error"
              << (runtime ? " on rank " + std::to_string(runtime->world_rank()) : "") << ": " << e.what()
              << "\n";
    code = static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::cerr << app.get_name() << ": internal error: " << e.what() << "\n";
    code = static_cast<int>(ExitCode::kInternal);
  }
  if (runtime && runtime->world_size() > 1) runtime->abort(code);
  return code;
}

}  // namespace pipet::bench
