#include "runtime/core/threads.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "runtime/core/torch_pch.h"

namespace pipet {
namespace {

// Marks a policy we set ourselves, so the log can tell it from the user's.
constexpr const char* kPolicySetMarker = "PIPET_SET_OMP_WAIT_POLICY";

// OpenBLAS keeps its own pool; torch's set_num_threads does not reach it.
// Looked up at run time so the build does not depend on which BLAS is chosen.
void set_openblas_threads(int threads) {
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
}

}  // namespace

int ranks_on_this_node() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* value = std::getenv(var)) {
      int n = std::atoi(value);
      if (n > 0) return n;
    }
  }
  return 1;
}

int local_rank_on_this_node() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    if (const char* value = std::getenv(var)) {
      const int rank = std::atoi(value);
      if (rank >= 0) return rank;
    }
  }
  return 0;
}

bool launched_by_mpi_launcher() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(var)) return true;
  return false;
}

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

void prefer_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  setenv(kPolicySetMarker, "1", 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc?): carry on with libgomp's default policy.
  unsetenv("OMP_WAIT_POLICY");
  unsetenv(kPolicySetMarker);
}

std::string openmp_wait_policy_description() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (policy == nullptr) return "libgomp default (busy-wait)";
  return std::string(policy) +
         (std::getenv(kPolicySetMarker) ? " (set by pipetransformer)" : " (from the environment)");
}

}  // namespace pipet
