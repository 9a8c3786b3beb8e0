// The freeze rule as the engine runs it (DESIGN.md §4.1): per-block
// gradient statistics accumulated every step, reduced over the world at a
// decision point, pooled over freeze.smoothing_window intervals, and handed
// to the policy (freeze/), which yields the new frozen prefix. Owns the
// policy's state and the statistics, both of which a checkpoint keeps.
#pragma once

#include "freeze/freeze_policy.h"
#include "freeze/gradient_window.h"
#include "freeze/probe_guard.h"

#include <memory>
#include <optional>

#include <string>
#include <vector>

namespace pipet {

class Communicator;
struct FreezeConfig;
struct TrainerState;

class FreezeController {
 public:
  // ConfigError naming the freeze.* key for a bad value.
  FreezeController(const FreezeConfig& config, int num_blocks);

  int num_blocks() const { return policy_.num_blocks(); }
  const FreezeState& state() const { return policy_.state(); }

  // One optimizer step's squared gradient norm per block (zeros for blocks
  // this rank does not hold, and on idle ranks: every rank counts every step).
  void add_step(const std::vector<double>& block_squares);

  // A decision: the interval's statistics of every rank all-reduced over
  // `world` (its step count rides along and must agree), pooled with the
  // window, then the rule. With freeze.probe_samples, `probe_loss` (the
  // world's probe loss now) is checked first: a change the previous
  // decision made that it finds harmful is revoked (last_revoked()), and
  // nothing new freezes during the cooldown. Returns the new frozen block
  // count. Collective.
  int decide(Communicator& world, std::optional<double> probe_loss = std::nullopt);
  bool guarded() const { return guard_ != nullptr; }
  bool last_revoked() const { return last_revoked_; }
  // The pooled per-block gradient norms the last decision saw (empty before one).
  const std::vector<double>& last_norms() const { return last_norms_; }

  // Into a checkpoint: the policy's state, this rank's open interval and the
  // window's past intervals.
  void save_into(TrainerState& state) const;
  // From a checkpoint: the policy's state (validated) ...
  void restore_policy(const TrainerState& saved);
  // ... and the statistics, so the next decisions are the uninterrupted
  // run's. FormatError naming `source` for inconsistent statistics.
  void restore_statistics(const TrainerState& saved, const std::string& source);

 private:
  FreezePolicy policy_;
  GradientNormTracker tracker_;
  GradientNormWindow window_;
  std::unique_ptr<ProbeGuard> guard_;  // freeze.probe_samples > 0
  std::vector<double> last_norms_;
  bool last_revoked_ = false;
};

}  // namespace pipet
