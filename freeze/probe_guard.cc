#include "freeze/probe_guard.h"

#include "freeze/number_text.h"
#include "runtime/core/errors.h"

#include <cmath>
#include <sstream>
#include <string>

namespace pipet {
namespace {

using freeze_detail::number;

}  // namespace

void validate_probe_guard_options(const ProbeGuardOptions& options) {
  if (!(options.tolerance > 0.0 && options.tolerance < 1.0))
    throw ConfigError("freeze: probe_tolerance = " + number(options.tolerance) + " is outside (0, 1)");
  if (options.cooldown < 0)
    throw ConfigError("freeze: cooldown = " + std::to_string(options.cooldown) + " is negative");
}

ProbeGuard::ProbeGuard(ProbeGuardOptions options) : options_(options) { validate_probe_guard_options(options_); }

std::optional<int> ProbeGuard::check(double loss) {
  if (!std::isfinite(loss) || loss < 0.0)
    throw ConfigError("freeze: probe loss " + number(loss) + " is not a finite, non-negative number");
  std::optional<int> revoke;
  const bool had_loss = state_.last_loss >= 0.0;
  if (state_.pending_before >= 0 && had_loss) {
    const double improvement = state_.last_loss - loss;
    if (improvement < 0.5 * state_.trend - options_.tolerance * state_.last_loss) {
      revoke = state_.pending_before;
      state_.cooldown_left = options_.cooldown;
    }
  }
  state_.pending_before = -1;
  state_.trend = had_loss ? state_.last_loss - loss : 0.0;
  state_.has_trend = had_loss;
  state_.last_loss = loss;
  return revoke;
}

bool ProbeGuard::may_freeze_more() {
  if (!state_.has_trend) return false;
  if (state_.cooldown_left <= 0) return true;
  --state_.cooldown_left;
  return false;
}

void ProbeGuard::changed(int before) { state_.pending_before = before; }

void ProbeGuard::restore(const ProbeGuardState& state) {
  if (state.pending_before < -1 || state.cooldown_left < 0 || !std::isfinite(state.trend) ||
      !std::isfinite(state.last_loss))
    throw ConfigError("freeze: probe guard state {last_loss " + number(state.last_loss) + ", pending_before " +
                      std::to_string(state.pending_before) + ", cooldown_left " +
                      std::to_string(state.cooldown_left) + "} is not valid");
  state_ = state;
}

}  // namespace pipet
