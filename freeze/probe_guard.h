// The check on every freeze decision (issue 17): a held-out probe loss,
// measured at each decision, must keep improving after a freeze change as
// it did before it. The change made at decision T is revoked at decision
// T+1 when
//     L(T) - L(T+1)  <  (L(T-1) - L(T)) / 2 - tolerance * L(T),
// i.e. the loss improved over the interval after the change less than half
// as fast as over the interval before it, by more than `tolerance` of the
// loss (no earlier probe: the trend before counts as 0). Half: learning
// slows down by itself as a run goes on, and a guard that expected the
// trend to hold would revoke every change of a flattening curve. A revoked change
// returns the prefix to what it was before, and the rule may not grow it
// again for `cooldown` decisions. Nothing freezes before two probes exist:
// a change made without a trend could only be revoked by a worse loss. Pure: no processes, no I/O; the caller
// measures the probe (all-reduced) and every rank decides alike.
#pragma once

#include <optional>
#include <vector>

namespace pipet {

struct ProbeGuardOptions {
  double tolerance = 0.02;  // (0, 1): allowed shortfall, as a fraction of the loss
  int cooldown = 2;         // >= 0: decisions after a revocation that freeze nothing new
};

// Everything a check depends on: a checkpoint keeps it.
struct ProbeGuardState {
  double last_loss = -1.0;      // L at the previous decision; < 0: none yet
  double trend = 0.0;           // L(T-1) - L(T) at the previous decision (0 without two probes)
  bool has_trend = false;       // two probes have been measured
  int pending_before = -1;      // the frozen count before the change made at the previous decision; -1: none
  int cooldown_left = 0;        // decisions that may not freeze more

  bool operator==(const ProbeGuardState& o) const {
    return last_loss == o.last_loss && trend == o.trend && has_trend == o.has_trend &&
           pending_before == o.pending_before &&
           cooldown_left == o.cooldown_left;
  }
};

// Throws ConfigError naming the field for values out of range.
void validate_probe_guard_options(const ProbeGuardOptions& options);

class ProbeGuard {
 public:
  explicit ProbeGuard(ProbeGuardOptions options);

  // Decision with probe loss `loss` (finite, >= 0; else ConfigError): the
  // frozen count to return to when the previous decision's change is
  // revoked, else nullopt. Records the loss and the trend either way.
  std::optional<int> check(double loss);
  // Whether the rule may grow the prefix at this decision (false before two
  // probes, and while cooling down after a revocation); counts the
  // cooldown down.
  bool may_freeze_more();
  // The decision changed the prefix from `before` (after check()).
  void changed(int before);

  const ProbeGuardState& state() const { return state_; }
  void restore(const ProbeGuardState& state);

 private:
  ProbeGuardOptions options_;
  ProbeGuardState state_;
};

}  // namespace pipet
