#include "runtime/engine/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "runtime/core/config.h"
#include "runtime/core/errors.h"

namespace pipet {

LrSchedule::LrSchedule(const TrainLoopConfig& config, int64_t total_steps)
    : kind_(config.schedule), base_lr_(config.lr), min_ratio_(config.min_lr_ratio),
      total_steps_(std::max<int64_t>(1, total_steps)) {
  if (kind_ != "cosine" && kind_ != "linear" && kind_ != "constant") {
    throw ConfigError("train.schedule: unknown schedule '" + kind_ +
                      "'; expected cosine, linear or constant");
  }
  warmup_steps_ = config.warmup_steps > 0
                      ? config.warmup_steps
                      : static_cast<int64_t>(std::floor(config.warmup_ratio * total_steps_));
  warmup_steps_ = std::min(warmup_steps_, total_steps_);
}

double LrSchedule::lr_at_position(double position) const {
  const auto warmup = static_cast<double>(warmup_steps_);
  if (position < warmup) {
    // Update k of the warm-up uses (k + 1) / warmup of the peak; a position
    // between warmup - 1 and warmup already has it.
    return position + 1.0 <= warmup ? base_lr_ * (position + 1.0) / warmup : base_lr_;
  }
  if (kind_ == "constant") return base_lr_;
  const double decay_steps = static_cast<double>(total_steps_ - warmup_steps_);
  const double progress =
      decay_steps <= 0 ? 1.0 : std::clamp((position - warmup) / decay_steps, 0.0, 1.0);
  const double factor = kind_ == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return base_lr_ * (min_ratio_ + (1.0 - min_ratio_) * factor);
}

}  // namespace pipet
