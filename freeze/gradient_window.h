// Smoothing of the freeze rule's gradient statistics across decisions.
//
// The adaptive rule compares the blocks' gradient norms; a norm measured over
// one short decision interval is noisy (a few mini-batches), and the argmin
// of noisy norms jumps between blocks. GradientNormWindow pools the last
// `window` intervals: the norm a decision sees is the root mean square over
// every step of those intervals, each step weighing the same (an interval of
// 10 steps does not count as much as one of 300). window = 1 is the interval
// alone.
//
// The inputs are the statistics after the all-reduce over the ranks (what
// every rank holds identically), so every rank's window, and so every rank's
// decision, is the same. The public reference code decides from per-process
// statistics instead (REFERENCE.md); that is not repeated here.
//
// Only blocks still active are compared, and a block is active in every
// interval before it freezes (frozen prefixes only grow), so a block's pooled
// norm never mixes frozen and active steps.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

namespace pipet {

class GradientNormWindow {
 public:
  // One decision interval's statistics, reduced over the ranks.
  struct Interval {
    std::vector<double> squared_sums;  // per block: sum over the interval's steps of ||g_l||^2
    int64_t steps = 0;                 // optimizer steps in the interval
    bool operator==(const Interval& o) const { return squared_sums == o.squared_sums && steps == o.steps; }
  };

  // Throws ConfigError unless num_blocks >= 1 and window >= 1 (named
  // freeze.smoothing_window in the message).
  GradientNormWindow(int num_blocks, int window);

  // Adds the interval that ends at this decision and returns, per block, the
  // RMS norm over it and the window - 1 intervals before it: sqrt(sum of
  // squared sums / sum of steps). All NaN when the pooled step count is 0
  // (the rule then freezes nothing new). Throws ConfigError for a wrong size
  // or a negative value.
  std::vector<double> add(const std::vector<double>& squared_sums, int64_t steps);

  // The intervals the next decisions will pool (the newest window - 1),
  // oldest first. This is what a checkpoint must keep; empty for window 1.
  const std::deque<Interval>& history() const { return history_; }

  // Continues from a checkpointed history(), keeping its newest window - 1
  // intervals (a resume with a smaller window). Throws ConfigError for a
  // wrong block count or a negative value.
  void restore(const std::vector<Interval>& history);

  int window() const { return window_; }
  int num_blocks() const { return num_blocks_; }

 private:
  void check_interval(const Interval& interval, const char* what) const;

  int num_blocks_;
  int window_;
  std::deque<Interval> history_;
};

}  // namespace pipet
