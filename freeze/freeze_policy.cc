#include "freeze/freeze_policy.h"

#include "freeze/number_text.h"
#include "runtime/core/errors.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

namespace pipet {

namespace {

// Absorbs the rounding of b(T) so that, e.g., 12 * (1/3) = 3.9999... counts as 4.
constexpr double kBoundRoundingSlack = 1e-9;

using freeze_detail::number;

void check_num_blocks(int num_blocks) {
  if (num_blocks < 1) {
    throw ConfigError("freeze: the model has " + std::to_string(num_blocks)
                      + " transformer blocks; at least 1 is needed");
  }
}

int frozen_cap(const FreezeOptions& options, int num_blocks) {
  const int cap = static_cast<int>(std::floor(options.max_frozen_fraction * num_blocks + kBoundRoundingSlack));
  return std::clamp(cap, 0, num_blocks);
}

int ceil_bound(double bound, int num_blocks) {
  const int f = static_cast<int>(std::ceil(bound - kBoundRoundingSlack));
  return std::clamp(f, 0, num_blocks);
}

void check_norms(const std::vector<double>& norms, int num_blocks, bool required) {
  if (norms.empty() && !required) return;
  if (static_cast<int>(norms.size()) != num_blocks) {
    throw ConfigError("freeze: got " + std::to_string(norms.size())
                      + " block gradient norms for a model of " + std::to_string(num_blocks) + " blocks");
  }
  for (size_t l = 0; l < norms.size(); ++l) {
    if (norms[l] < 0.0) {  // false for NaN, which is allowed
      throw ConfigError("freeze: block_grad_norms[" + std::to_string(l) + "] = " + number(norms[l])
                        + " is negative");
    }
  }
}

// kAdaptive: each block's run of settled decisions after this one.
std::vector<int> settled_runs(const std::vector<double>& norms, const std::vector<double>& reference,
                              const std::vector<int>& runs, double tolerance) {
  std::vector<int> out(norms.size(), 0);
  if (reference.size() != norms.size()) return out;
  for (size_t l = 0; l < norms.size(); ++l) {
    const double now = norms[l];
    const double before = reference[l];
    const bool settled = std::isfinite(now) && std::isfinite(before) && before > 0.0 &&
                         std::fabs(now - before) < tolerance * before;
    out[l] = settled ? (l < runs.size() ? runs[l] : 0) + 1 : 0;
  }
  return out;
}

// kAdaptive's evidence term as a count: first_active plus the run of
// blocks settled for `patience` decisions, starting there.
int settled_prefix(const std::vector<int>& runs, int first_active, int patience) {
  int f = first_active;
  while (f < static_cast<int>(runs.size()) && runs[f] >= patience) ++f;
  return f;
}

// The gradient term as a count: lowest block with the smallest finite norm
// in [first_active, L), plus one; first_active when none is finite.
int gradient_term(const std::vector<double>& norms, int first_active) {
  int best = -1;
  for (int l = first_active; l < static_cast<int>(norms.size()); ++l) {
    if (!std::isfinite(norms[l])) continue;
    if (best < 0 || norms[l] < norms[best]) best = l;
  }
  return best < 0 ? first_active : best + 1;
}

}  // namespace

const char* to_string(FreezeMode mode) {
  switch (mode) {
    case FreezeMode::kNone: return "none";
    case FreezeMode::kSchedule: return "schedule";
    case FreezeMode::kPaper: return "paper";
    case FreezeMode::kAdaptive: return "adaptive";
    case FreezeMode::kManual: return "manual";
  }
  return "unknown";
}

FreezeMode freeze_mode_from_string(const std::string& name, const std::string& what) {
  for (FreezeMode mode :
       {FreezeMode::kNone, FreezeMode::kSchedule, FreezeMode::kPaper, FreezeMode::kAdaptive, FreezeMode::kManual}) {
    if (name == to_string(mode)) return mode;
  }
  throw ConfigError(what + ": unknown freeze mode '" + name
                    + "' (expected 'none', 'schedule', 'paper', 'adaptive' or 'manual')");
}

void validate_freeze_options(const FreezeOptions& options, int num_blocks) {
  check_num_blocks(num_blocks);
  if (!(options.alpha > 0.0 && options.alpha <= 1.0)) {  // also rejects NaN
    throw ConfigError("freeze: alpha = " + number(options.alpha) + " is outside (0, 1]");
  }
  if (options.warmup_decisions < 0) {
    throw ConfigError("freeze: warmup_decisions = " + std::to_string(options.warmup_decisions)
                      + " is negative");
  }
  if (!(options.max_frozen_fraction >= 0.0 && options.max_frozen_fraction <= 1.0)) {
    throw ConfigError("freeze: max_frozen_fraction = " + number(options.max_frozen_fraction)
                      + " is outside [0, 1]");
  }
  if (!(options.tolerance > 0.0 && options.tolerance < 1.0)) {
    throw ConfigError("freeze: tolerance = " + number(options.tolerance) + " is outside (0, 1)");
  }
  if (options.patience < 1) {
    throw ConfigError("freeze: patience = " + std::to_string(options.patience) + " must be at least 1");
  }
  if (options.mode != FreezeMode::kManual) return;
  if (options.manual_schedule.empty()) {
    throw ConfigError("freeze: mode 'manual' needs a non-empty manual_schedule");
  }
  const int cap = frozen_cap(options, num_blocks);
  for (size_t i = 0; i < options.manual_schedule.size(); ++i) {
    const int f = options.manual_schedule[i];
    const std::string where = "freeze: manual_schedule[" + std::to_string(i) + "] = " + std::to_string(f);
    if (f < 0 || f > num_blocks) {
      throw ConfigError(where + " is outside [0, " + std::to_string(num_blocks) + "] (the model's block count)");
    }
    if (f > cap) {
      throw ConfigError(where + " exceeds max_frozen_fraction * L = " + std::to_string(cap));
    }
  }
}

void validate_freeze_state(const FreezeState& state, int num_blocks) {
  check_num_blocks(num_blocks);
  const bool references_fit =
      (state.reference_norms.empty() || static_cast<int>(state.reference_norms.size()) == num_blocks) &&
      (state.settled_decisions.empty() || static_cast<int>(state.settled_decisions.size()) == num_blocks) &&
      std::all_of(state.settled_decisions.begin(), state.settled_decisions.end(), [](int n) { return n >= 0; });
  if (state.decisions < 0 || state.frozen < 0 || state.frozen > num_blocks || !std::isfinite(state.bound)
      || state.bound < 0.0 || state.bound > num_blocks || !references_fit) {
    throw ConfigError("freeze: state {decisions " + std::to_string(state.decisions) + ", frozen "
                      + std::to_string(state.frozen) + ", bound " + number(state.bound)
                      + "} does not fit a model of " + std::to_string(num_blocks) + " blocks");
  }
}

FreezeState next_freeze_state(const FreezeOptions& options, int num_blocks, const FreezeState& previous,
                              const std::vector<double>& block_grad_norms) {
  validate_freeze_options(options, num_blocks);
  validate_freeze_state(previous, num_blocks);
  const bool needs_norms = options.mode == FreezeMode::kPaper || options.mode == FreezeMode::kAdaptive;
  check_norms(block_grad_norms, num_blocks, needs_norms);

  FreezeState next = previous;
  next.decisions = previous.decisions + 1;
  const int after_warmup = next.decisions - options.warmup_decisions;
  if (options.mode == FreezeMode::kAdaptive) {
    next.settled_decisions =
        settled_runs(block_grad_norms, previous.reference_norms, previous.settled_decisions, options.tolerance);
    next.reference_norms = block_grad_norms;
  }
  if (options.mode == FreezeMode::kNone || after_warmup <= 0) return next;

  int target = previous.frozen;
  switch (options.mode) {
    case FreezeMode::kManual: {
      const size_t index = std::min(static_cast<size_t>(after_warmup - 1), options.manual_schedule.size() - 1);
      target = options.manual_schedule[index];
      break;
    }
    case FreezeMode::kSchedule:
    case FreezeMode::kPaper:
    case FreezeMode::kAdaptive: {
      const double base = std::min(previous.bound, static_cast<double>(previous.frozen));
      next.bound = std::min(static_cast<double>(num_blocks), base + options.alpha * (num_blocks - base));
      target = ceil_bound(next.bound, num_blocks);
      if (options.mode == FreezeMode::kPaper) {
        target = std::min(target, gradient_term(block_grad_norms, previous.frozen));
      } else if (options.mode == FreezeMode::kAdaptive) {
        target = std::min(target, settled_prefix(next.settled_decisions, previous.frozen, options.patience));
      }
      break;
    }
    case FreezeMode::kNone: break;
  }
  target = std::min(target, frozen_cap(options, num_blocks));
  // Only a manual list unfreezes; the rules grow the prefix or hold it.
  next.frozen = options.mode == FreezeMode::kManual ? target : std::max(previous.frozen, target);
  return next;
}

std::vector<int> freeze_bound_schedule(double alpha, int num_blocks, int decisions) {
  FreezeOptions options;
  options.mode = FreezeMode::kSchedule;
  options.alpha = alpha;
  validate_freeze_options(options, num_blocks);
  if (decisions < 0) {
    throw ConfigError("freeze: number of decisions = " + std::to_string(decisions) + " is negative");
  }
  std::vector<int> schedule = {0};
  FreezeState state;
  for (int t = 0; t < decisions; ++t) {
    state = next_freeze_state(options, num_blocks, state, {});
    schedule.push_back(state.frozen);
  }
  return schedule;
}

FreezePolicy::FreezePolicy(FreezeOptions options, int num_blocks)
    : options_(std::move(options)), num_blocks_(num_blocks) {
  validate_freeze_options(options_, num_blocks_);
}

int FreezePolicy::decide(const std::vector<double>& block_grad_norms) {
  state_ = next_freeze_state(options_, num_blocks_, state_, block_grad_norms);
  return state_.frozen;
}

void FreezePolicy::revoke(int frozen) {
  FreezeState next = state_;
  next.frozen = frozen;
  next.bound = std::min(next.bound, static_cast<double>(frozen));
  std::fill(next.settled_decisions.begin(), next.settled_decisions.end(), 0);
  validate_freeze_state(next, num_blocks_);
  state_ = next;
}

void FreezePolicy::restore(const FreezeState& state) {
  validate_freeze_state(state, num_blocks_);
  state_ = state;
}

GradientNormTracker::GradientNormTracker(int num_blocks) {
  check_num_blocks(num_blocks);
  squared_sums_.assign(num_blocks, 0.0);
}

void GradientNormTracker::add_step(const std::vector<double>& block_squared_norms) {
  if (block_squared_norms.size() != squared_sums_.size()) {
    throw ConfigError("freeze: gradient statistics for " + std::to_string(block_squared_norms.size())
                      + " blocks, but the tracker has " + std::to_string(squared_sums_.size()));
  }
  for (size_t l = 0; l < block_squared_norms.size(); ++l) {
    if (block_squared_norms[l] < 0.0) {
      throw ConfigError("freeze: squared gradient norm of block " + std::to_string(l) + " = "
                        + number(block_squared_norms[l]) + " is negative");
    }
  }
  for (size_t l = 0; l < block_squared_norms.size(); ++l) squared_sums_[l] += block_squared_norms[l];
  ++steps_;
}

std::vector<double> GradientNormTracker::norms() const { return rms_block_norms(squared_sums_, steps_); }

void GradientNormTracker::reset() {
  std::fill(squared_sums_.begin(), squared_sums_.end(), 0.0);
  steps_ = 0;
}

void GradientNormTracker::restore(const std::vector<double>& squared_sums, int64_t steps) {
  if (steps < 0) throw ConfigError("freeze: checkpointed step count " + std::to_string(steps) + " is negative");
  add_step(squared_sums);  // checks the size and the signs
  squared_sums_ = squared_sums;
  steps_ = steps;
}

std::vector<double> rms_block_norms(const std::vector<double>& squared_sums, int64_t steps) {
  if (steps < 0) throw ConfigError("freeze: step count " + std::to_string(steps) + " is negative");
  std::vector<double> norms(squared_sums.size(), std::nan(""));
  if (steps == 0) return norms;
  for (size_t l = 0; l < squared_sums.size(); ++l) {
    if (squared_sums[l] < 0.0) {
      throw ConfigError("freeze: summed squared gradient norm of block " + std::to_string(l) + " = "
                        + number(squared_sums[l]) + " is negative");
    }
    norms[l] = std::sqrt(squared_sums[l] / static_cast<double>(steps));
  }
  return norms;
}

}  // namespace pipet
