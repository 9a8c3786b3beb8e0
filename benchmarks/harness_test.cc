// Unit tests of the benchmark harness: the statistics every figure rests on,
// the table layout, and the process/scratch helpers.
#include "benchmarks/harness.h"
#include "runtime/core/files.h"

#include "runtime/core/errors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace pipet::bench {
namespace {

TEST(Summarize, MedianOfOddCountIsTheMiddleSample) {
  const auto stats = summarize({5.0, 1.0, 3.0});
  EXPECT_DOUBLE_EQ(stats.median_ms, 3.0);
  EXPECT_DOUBLE_EQ(stats.min_ms, 1.0);
  EXPECT_DOUBLE_EQ(stats.max_ms, 5.0);
  // Samples keep their measured order.
  EXPECT_EQ(stats.samples_ms, (std::vector<double>{5.0, 1.0, 3.0}));
}

TEST(Summarize, MedianOfEvenCountIsTheMeanOfTheMiddleTwo) {
  EXPECT_DOUBLE_EQ(summarize({4.0, 1.0, 10.0, 2.0}).median_ms, 3.0);
}

TEST(Summarize, RejectsNoSamples) { EXPECT_THROW(summarize({}), ConfigError); }

TEST(TimeIterations, RunsWarmupPlusTimedIterations) {
  int calls = 0;
  const auto stats = time_iterations(2, 5, [&] { ++calls; });
  EXPECT_EQ(calls, 7);
  EXPECT_EQ(stats.samples_ms.size(), 5u);
  EXPECT_GE(stats.min_ms, 0.0);
}

TEST(RelativeDifference, IsScaledByTheLargerMagnitude) {
  EXPECT_DOUBLE_EQ(relative_difference(2.0, 1.0), 0.5);
  EXPECT_DOUBLE_EQ(relative_difference(-1.0, 1.0), 2.0);
  EXPECT_DOUBLE_EQ(relative_difference(0.0, 0.0), 0.0);
  EXPECT_TRUE(std::isinf(relative_difference(std::nan(""), 1.0)));
  EXPECT_TRUE(std::isinf(relative_difference(1.0, std::numeric_limits<double>::infinity())));
}

TEST(ResultTable, AlignsColumnsAndRightAlignsNumbers) {
  ResultTable table({"model", "ms", "check"});
  table.add_row({"vit-tiny", "1.50", "ok"});
  table.add_row({"b", "12.25", "FAILED"});
  std::ostringstream out;
  table.print(out);
  EXPECT_EQ(out.str(),
            "model     ms     check\n"
            "-----------------------\n"
            "vit-tiny   1.50  ok\n"
            "b         12.25  FAILED\n");
}

TEST(ResultTable, RejectsRowsOfTheWrongWidth) {
  ResultTable table({"a", "b"});
  EXPECT_THROW(table.add_row({"only one"}), Error);
}

TEST(FormatFixed, RoundsToTheGivenDecimals) {
  EXPECT_EQ(format_fixed(12.345, 1), "12.3");
  EXPECT_EQ(format_fixed(2.0, 3), "2.000");
}

TEST(ShellQuote, SurvivesTheShell) {
  const std::string word = "it's a \"test\" $HOME `x`";
  const auto result = run_command("printf '%s' " + shell_quote(word));
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.output, word);
}

TEST(RunCommand, ReportsExitStatusAndCapturesStdout) {
  const auto result = run_command("echo hello; exit 7");
  EXPECT_EQ(result.exit_code, 7);
  EXPECT_EQ(result.output, "hello\n");
}

TEST(RunCommand, ReportsDeathBySignal) {
  EXPECT_EQ(run_command("kill -TERM $$").exit_code, 128 + 15);
}

TEST(ScratchDir, IsRemovedWithItsContents) {
  std::string path;
  {
    ScratchDir dir("pipet-harness-test");
    path = dir.path();
    std::ofstream(dir.file("a.txt")) << "x";
    ASSERT_TRUE(std::filesystem::exists(dir.file("a.txt")));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(ScratchDir, KeepLeavesItInPlace) {
  std::string path;
  {
    ScratchDir dir("pipet-harness-test");
    path = dir.path();
    dir.keep();
  }
  EXPECT_TRUE(std::filesystem::is_directory(path));
  remove_tree(path);
}

}  // namespace
}  // namespace pipet::bench
