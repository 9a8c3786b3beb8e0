#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/core/allocator.h"

namespace pipet {
namespace {

TEST(Allocator, EnvironmentFormMatchesTheThresholds) {
  const auto env = allocator_environment();
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env[0], "MALLOC_MMAP_THRESHOLD_=33554432");
  EXPECT_EQ(env[1], "MALLOC_TRIM_THRESHOLD_=1073741824");
}

TEST(Allocator, AppliesUnlessTheEnvironmentAlreadyTunesMalloc) {
  unsetenv("MALLOC_MMAP_THRESHOLD_");
  unsetenv("MALLOC_TRIM_THRESHOLD_");
  unsetenv("GLIBC_TUNABLES");
  EXPECT_TRUE(configure_allocator());
  setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1", 1);
  EXPECT_FALSE(configure_allocator());
  unsetenv("GLIBC_TUNABLES");
}

}  // namespace
}  // namespace pipet
