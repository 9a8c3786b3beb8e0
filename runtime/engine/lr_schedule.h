// Learning-rate schedules as pure functions of the optimizer step, so the
// position survives checkpoints and layout changes by storing one integer.
#pragma once

#include <cstdint>
#include <string>

namespace pipet {

struct TrainLoopConfig;

class LrSchedule {
 public:
  // `total_steps` >= 1 is the length of the run in optimizer steps.
  LrSchedule(const TrainLoopConfig& config, int64_t total_steps);

  // Learning rate for the update numbered `step` (0-based). Linear warm-up
  // from lr/warmup to lr over the warm-up steps, then cosine or linear decay
  // to min_lr_ratio * lr at total_steps (constant stays at lr).
  double lr_at(int64_t step) const { return lr_at_position(static_cast<double>(step)); }
  // The same curve at a fractional position: with autodp.batch_policy
  // scale_lr a step's size changes with the replica count, so the trainer
  // places each update at (samples consumed before it) / train.batch_size,
  // and the schedule ends at the same point of the data for every layout.
  // Integral positions give exactly lr_at().
  double lr_at_position(double position) const;

  int64_t warmup_steps() const { return warmup_steps_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  std::string kind_;
  double base_lr_;
  double min_ratio_;
  int64_t warmup_steps_;
  int64_t total_steps_;
};

}  // namespace pipet
