#include "freeze/gradient_window.h"

#include "freeze/number_text.h"
#include "runtime/core/errors.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <sstream>
#include <string>

namespace pipet {

namespace {

using freeze_detail::number;

}  // namespace

GradientNormWindow::GradientNormWindow(int num_blocks, int window) : num_blocks_(num_blocks), window_(window) {
  if (num_blocks < 1) {
    throw ConfigError("freeze: the model has " + std::to_string(num_blocks)
                      + " transformer blocks; at least 1 is needed");
  }
  if (window < 1) {
    throw ConfigError("freeze.smoothing_window = " + std::to_string(window)
                      + " is below 1 (1 = each decision sees its own interval only)");
  }
}

void GradientNormWindow::check_interval(const Interval& interval, const char* what) const {
  if (static_cast<int>(interval.squared_sums.size()) != num_blocks_) {
    throw ConfigError(std::string("freeze: ") + what + " holds statistics for "
                      + std::to_string(interval.squared_sums.size()) + " blocks, but the model has "
                      + std::to_string(num_blocks_));
  }
  if (interval.steps < 0) {
    throw ConfigError(std::string("freeze: ") + what + " has a negative step count "
                      + std::to_string(interval.steps));
  }
  for (size_t l = 0; l < interval.squared_sums.size(); ++l) {
    if (interval.squared_sums[l] < 0.0) {  // false for NaN: a NaN block is never the argmin
      throw ConfigError(std::string("freeze: ") + what + ": summed squared gradient norm of block "
                        + std::to_string(l) + " = " + number(interval.squared_sums[l]) + " is negative");
    }
  }
}

std::vector<double> GradientNormWindow::add(const std::vector<double>& squared_sums, int64_t steps) {
  Interval latest{squared_sums, steps};
  check_interval(latest, "the decision interval");
  std::vector<double> pooled = latest.squared_sums;
  int64_t pooled_steps = latest.steps;
  for (const Interval& past : history_) {
    for (size_t l = 0; l < pooled.size(); ++l) pooled[l] += past.squared_sums[l];
    pooled_steps += past.steps;
  }
  history_.push_back(std::move(latest));
  while (static_cast<int>(history_.size()) > window_ - 1) history_.pop_front();

  std::vector<double> norms(pooled.size(), std::nan(""));
  if (pooled_steps == 0) return norms;
  for (size_t l = 0; l < pooled.size(); ++l) norms[l] = std::sqrt(pooled[l] / static_cast<double>(pooled_steps));
  return norms;
}

void GradientNormWindow::restore(const std::vector<Interval>& history) {
  for (const Interval& interval : history) check_interval(interval, "a checkpointed decision interval");
  // A resume with a smaller window keeps the newest intervals that fit.
  const size_t kept = std::min(history.size(), static_cast<size_t>(window_ - 1));
  history_.assign(history.end() - static_cast<std::ptrdiff_t>(kept), history.end());
}

}  // namespace pipet
