#include "runtime/engine/freeze_controller.h"

#include "runtime/comm/communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/engine/checkpoint.h"

namespace pipet {
namespace {

FreezeOptions freeze_options(const FreezeConfig& config) {
  FreezeOptions options;
  options.mode = freeze_mode_from_string(config.policy, "freeze.policy");
  options.alpha = config.alpha;
  options.warmup_decisions = static_cast<int>(config.warmup_decisions);
  options.max_frozen_fraction = config.max_fraction;
  options.tolerance = config.tolerance;
  options.patience = static_cast<int>(config.patience);
  for (double count : config.manual) options.manual_schedule.push_back(static_cast<int>(count));
  return options;
}

}  // namespace

FreezeController::FreezeController(const FreezeConfig& config, int num_blocks)
    : policy_(freeze_options(config), num_blocks),
      tracker_(num_blocks),
      window_(num_blocks, static_cast<int>(config.smoothing_window)) {
  if (config.probe_samples > 0)
    guard_ = std::make_unique<ProbeGuard>(
        ProbeGuardOptions{config.probe_tolerance, static_cast<int>(config.cooldown)});
}

void FreezeController::add_step(const std::vector<double>& block_squares) { tracker_.add_step(block_squares); }

int FreezeController::decide(Communicator& world, std::optional<double> probe_loss) {
  // Per-block statistics of every stage (replica 0 reports; the replicas
  // agree). The interval's step count rides along (every rank counts every
  // step, idle ones with zeros): a rank that counted differently would pool
  // and decide differently, so it is caught here instead.
  std::vector<double> local = tracker_.squared_sums();
  const int64_t steps = tracker_.steps();
  local.push_back(static_cast<double>(steps));
  torch::Tensor sums = torch::tensor(local, torch::kDouble);
  world.all_reduce(sums);
  const double summed_steps = sums.data_ptr<double>()[sums.numel() - 1];
  if (summed_steps != static_cast<double>(steps) * world.size())
    throw Error(ExitCode::kInternal,
                "freeze decision " + std::to_string(policy_.state().decisions + 1) + ": rank " +
                    std::to_string(world.rank()) + " counted " + std::to_string(steps) +
                    " steps since the last decision, but the ranks' counts sum to " +
                    std::to_string(static_cast<int64_t>(summed_steps)) + " over " + std::to_string(world.size()) +
                    " ranks");
  const std::vector<double> totals(sums.data_ptr<double>(), sums.data_ptr<double>() + sums.numel() - 1);
  // Pooled with the past intervals of freeze.smoothing_window (all ranks alike).
  last_norms_ = window_.add(totals, steps);
  tracker_.reset();
  last_revoked_ = false;
  const int before = policy_.state().frozen;
  if (!guard_) return policy_.decide(last_norms_);
  if (!probe_loss)
    throw Error(ExitCode::kInternal, "freeze decision without the probe loss freeze.probe_samples asks for");
  if (const std::optional<int> back = guard_->check(*probe_loss)) {
    policy_.decide(last_norms_);  // the rule's bookkeeping (decision count, reference norms) goes on
    policy_.revoke(*back);
    last_revoked_ = true;
    return *back;
  }
  const bool may_freeze = guard_->may_freeze_more();
  int after = policy_.decide(last_norms_);
  if (after > before && !may_freeze) {
    policy_.revoke(before);
    after = before;
  }
  if (after > before) guard_->changed(before);
  return after;
}

void FreezeController::save_into(TrainerState& state) const {
  state.freeze_decisions = policy_.state().decisions;
  state.freeze_bound = policy_.state().bound;
  state.freeze_reference_norms = policy_.state().reference_norms;
  state.freeze_settled_decisions.assign(policy_.state().settled_decisions.begin(),
                                        policy_.state().settled_decisions.end());
  if (guard_) {
    const ProbeGuardState& g = guard_->state();
    state.freeze_guard = {g.last_loss, g.trend, static_cast<double>(g.pending_before),
                          static_cast<double>(g.cooldown_left), g.has_trend ? 1.0 : 0.0};
  }
  state.freeze_interval_sums = tracker_.squared_sums();
  state.freeze_interval_steps = tracker_.steps();
  state.freeze_window_sums.clear();
  state.freeze_window_steps.clear();
  for (const GradientNormWindow::Interval& interval : window_.history()) {
    state.freeze_window_sums.push_back(interval.squared_sums);
    state.freeze_window_steps.push_back(interval.steps);
  }
}

void FreezeController::restore_policy(const TrainerState& saved) {
  FreezeState restored;
  restored.decisions = static_cast<int>(saved.freeze_decisions);
  restored.frozen = static_cast<int>(saved.frozen_prefix);
  restored.bound = saved.freeze_bound;
  restored.reference_norms = saved.freeze_reference_norms;
  restored.settled_decisions.assign(saved.freeze_settled_decisions.begin(), saved.freeze_settled_decisions.end());
  policy_.restore(restored);
  if (guard_ && saved.freeze_guard.size() == 5) {
    ProbeGuardState g;
    g.last_loss = saved.freeze_guard[0];
    g.trend = saved.freeze_guard[1];
    g.pending_before = static_cast<int>(saved.freeze_guard[2]);
    g.cooldown_left = static_cast<int>(saved.freeze_guard[3]);
    g.has_trend = saved.freeze_guard[4] != 0.0;
    guard_->restore(g);
  }
}

void FreezeController::restore_statistics(const TrainerState& saved, const std::string& source) {
  std::vector<GradientNormWindow::Interval> window;
  for (size_t i = 0; i < saved.freeze_window_sums.size(); ++i)
    window.push_back({saved.freeze_window_sums[i], saved.freeze_window_steps[i]});
  try {
    if (!saved.freeze_interval_sums.empty()) tracker_.restore(saved.freeze_interval_sums, saved.freeze_interval_steps);
    window_.restore(window);
  } catch (const ConfigError& e) {
    throw FormatError(source + ": " + e.what());
  }
}

}  // namespace pipet
