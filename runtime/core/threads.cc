#include "runtime/core/threads.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "runtime/core/torch_pch.h"

namespace pipet {
namespace {

int ranks_on_this_node() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* value = std::getenv(var)) {
      int n = std::atoi(value);
      if (n > 0) return n;
    }
  }
  return 1;
}

// OpenBLAS keeps its own pool; torch's set_num_threads does not reach it.
// Looked up at run time so the build does not depend on which BLAS is chosen.
void set_openblas_threads(int threads) {
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
}

}  // namespace

int configure_threads(int64_t requested) {
  int threads = static_cast<int>(requested);
  if (threads <= 0) {
    int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, cores / ranks_on_this_node());
  }
  at::set_num_threads(threads);
  set_openblas_threads(threads);
  return threads;
}

}  // namespace pipet
