#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/core/errors.h"
#include "runtime/engine/metrics.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

TEST(MetricsLog, LineIsNameValueSemicolonSeparated) {
  EXPECT_EQ(MetricsLog::format_line("train", {{"step", int64_t{3}}, {"train_loss", 0.5}, {"tag", std::string("x")}}),
            "event=train; step=3; train_loss=0.5; tag=x;");
}

TEST(MetricsLog, AppendsOneJsonObjectPerEvent) {
  testing::TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path, /*print_to_stdout=*/false);
    log.emit("train", {{"step", int64_t{1}}, {"train_loss", 2.25}});
  }
  {
    MetricsLog log(path, false);  // a resumed run appends
    log.emit("eval", {{"eval_accuracy", 0.5}});
  }
  std::istringstream lines(testing::read_text(path));
  std::string line;
  std::vector<nlohmann::json> records;
  while (std::getline(lines, line)) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["event"], "train");
  EXPECT_EQ(records[0]["step"], 1);
  EXPECT_DOUBLE_EQ(records[0]["train_loss"].get<double>(), 2.25);
  EXPECT_EQ(records[1]["event"], "eval");
  EXPECT_TRUE(records[1].contains("time"));
}

TEST(MetricsLog, UnopenablePathIsAnIoError) {
  testing::TempDir dir;
  EXPECT_THROW(MetricsLog(dir.file("missing/metrics.jsonl"), false), IoError);
}

}  // namespace
}  // namespace pipet
