#include <gtest/gtest.h>

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/engine/lr_schedule.h"

namespace pipet {
namespace {

TrainLoopConfig schedule_config(const std::string& kind, int64_t warmup, double min_ratio = 0.0) {
  TrainLoopConfig c;
  c.schedule = kind;
  c.lr = 1.0;
  c.warmup_steps = warmup;
  c.min_lr_ratio = min_ratio;
  return c;
}

TEST(LrSchedule, WarmupRisesLinearlyToTheBaseRate) {
  LrSchedule s(schedule_config("cosine", 4), 20);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 0.5);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(4), 1.0);  // first decay step starts at the peak
}

TEST(LrSchedule, CosineReachesHalfAtMidpointAndTheFloorAtTheEnd) {
  LrSchedule s(schedule_config("cosine", 0, 0.1), 100);
  EXPECT_NEAR(s.lr_at(50), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(s.lr_at(100), 0.1, 1e-12);
  EXPECT_NEAR(s.lr_at(500), 0.1, 1e-12);  // past the end: stays at the floor
}

TEST(LrSchedule, LinearDecaysToZero) {
  LrSchedule s(schedule_config("linear", 10), 110);
  EXPECT_NEAR(s.lr_at(60), 0.5, 1e-12);
  EXPECT_NEAR(s.lr_at(110), 0.0, 1e-12);
}

TEST(LrSchedule, WarmupRatioIsAFractionOfTotalSteps) {
  TrainLoopConfig c = schedule_config("constant", 0);
  c.warmup_ratio = 0.06;
  LrSchedule s(c, 100);
  EXPECT_EQ(s.warmup_steps(), 6);
  EXPECT_DOUBLE_EQ(s.lr_at(50), 1.0);
}

TEST(LrSchedule, UnknownKindIsAConfigError) {
  EXPECT_THROW(LrSchedule(schedule_config("step", 0), 10), ConfigError);
}

}  // namespace
}  // namespace pipet
