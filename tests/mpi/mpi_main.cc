// Shared main of the multi-rank gtest binaries: every rank runs every test;
// rank 0 prints gtest's usual report, other ranks print only their failures
// (prefixed with the rank). The exit code is non-zero on every rank when any
// rank failed, so mpirun and CTest see one verdict.
#include "tests/mpi/mpi_test_env.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>

namespace {

pipet::MpiRuntime* g_runtime = nullptr;

// Prints each failed assertion as "[rank R] file:line: message" on stderr.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestStart(const testing::TestInfo& info) override {
    test_name_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestEnd(const testing::TestInfo&) override { test_name_ = "(outside a test)"; }

  // gtest holds its own lock here: do not call back into UnitTest.
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure in %s\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "unknown", result.line_number(),
                 test_name_.c_str(), result.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_name_ = "(outside a test)";
};

}  // namespace

pipet::MpiRuntime& test_runtime() { return *g_runtime; }

int main(int argc, char** argv) {
  try {
    pipet::MpiRuntime runtime(&argc, &argv);
    g_runtime = &runtime;
    testing::InitGoogleTest(&argc, argv);
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    if (runtime.world_rank() != 0) {
      delete listeners.Release(listeners.default_result_printer());
    }
    listeners.Append(new RankFailurePrinter(runtime.world_rank()));
    const int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    int any_failed = local_failed;
    if (MPI_Allreduce(&local_failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
      any_failed = 1;
    if (runtime.world_rank() == 0 && any_failed && !local_failed)
      std::fprintf(stderr, "[rank 0] passed, but another rank failed (see its [rank N] lines)\n");
    return any_failed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi test main: %s\n", e.what());
    return 1;
  }
}
