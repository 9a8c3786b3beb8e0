#include "runtime/comm/mpi_runtime.h"

#include "runtime/core/errors.h"

#include <mpi.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace pipet {
namespace {

std::atomic<bool> g_runtime_active{false};

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

void check_mpi(int code, const char* call) {
  if (code != MPI_SUCCESS) throw CommError(std::string("MPI runtime: ") + call + " failed: " + mpi_error_text(code));
}

}  // namespace

MpiRuntime::MpiRuntime() { init(nullptr, nullptr); }

MpiRuntime::MpiRuntime(int* argc, char*** argv) { init(argc, argv); }

void MpiRuntime::init(int* argc, char*** argv) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    throw CommError("MPI runtime: MPI was already finalised in this process and cannot be initialised again");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized)
    throw CommError("MPI runtime: MPI is already initialised in this process; create exactly one MpiRuntime (in main)");

  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    throw CommError("MPI runtime: the MPI library provides thread level " + std::to_string(provided) +
                    ", below the MPI_THREAD_FUNNELED this engine needs");
  }
  try {
    check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size");
    // The ranks sharing memory with us are the ranks on this node.
    MPI_Comm node = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
    int rank_code = MPI_Comm_rank(node, &local_rank_);
    int size_code = MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    check_mpi(rank_code, "MPI_Comm_rank(node)");
    check_mpi(size_code, "MPI_Comm_size(node)");
  } catch (...) {
    MPI_Finalize();
    throw;
  }
  g_runtime_active = true;
}

MpiRuntime::~MpiRuntime() {
  g_runtime_active = false;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort should not return; never continue if it does
}

bool MpiRuntime::active() { return g_runtime_active; }

}  // namespace pipet
