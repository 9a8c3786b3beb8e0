// The freeze rule: how many transformer blocks, counted from the bottom, are
// frozen after each decision. Pure policy code: no processes, no I/O; the
// caller all-reduces the gradient statistics, takes decisions at its chosen
// interval (epoch boundaries by default) and broadcasts nothing, because
// every rank computes the same answer from the same inputs.
//
// The paper's rule (PipeTransformer, ICML 2021) for L blocks, f(0) = 0:
//   f(T) = min( f(T-1) + alpha * (L - f(T-1)),  argmin_l ||g_l(T)|| )
// Choices this file makes where the paper is loose:
//
//  * Rounding of the bound: the bound is kept as a real number b(T) and the
//    frozen count is ceil(b(T)). With b(T-1) carried unrounded,
//    b(T) = b(T-1) + alpha * (L - b(T-1)) = L * (1 - (1 - alpha)^T), and
//    ceil gives exactly the published schedules for L = 12:
//    alpha 1/3 -> 0,4,7,9,10,11,11,12 and alpha 1/2 -> 0,6,9,11,12.
//    (floor gives 0,4,6,8,9,10,10,11; round gives 0,4,7,8,10,10,11,11; and
//    applying ceil to an integer f(T-1) each step reaches 12 at T = 6, not 7.)
//    When the gradient term held f below the bound, the next bound grows
//    from the integer f(T-1) instead (the paper's formula verbatim):
//    b(T) = x + alpha * (L - x) with x = min(b(T-1), f(T-1)).
//  * Argmin semantics: the block with the smallest gradient norm among the
//    active blocks [f(T-1), L) is frozen together with everything below it,
//    i.e. the gradient term is argmin + 1 as a count. Excluding it would
//    stall exactly in the case the paper is built on (lower layers converge
//    first, so the first active block has the smallest norm and nothing
//    would ever freeze). Ties go to the lowest block.
//  * Non-finite norms: a block whose norm is NaN or infinite is never the
//    argmin. If every active block's norm is non-finite (for example no
//    steps were recorded), the gradient term freezes nothing new.
//  * Monotone and bounded: f never decreases (except where a manual list
//    says so: an unfreeze) and never exceeds floor(max_frozen_fraction * L).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace pipet {

enum class FreezeMode {
  kNone,      // never freeze
  kSchedule,  // the bound alone, as the public reference code runs it
  kPaper,     // the paper's rule: bound combined with the gradient argmin
  kAdaptive,  // on evidence: the bound, and only blocks whose gradient norm has settled
  kManual,    // an explicit frozen count per decision
};
const char* to_string(FreezeMode mode);
// "none", "schedule", "paper", "adaptive" or "manual"; else ConfigError naming `what`.
FreezeMode freeze_mode_from_string(const std::string& name, const std::string& what);

struct FreezeOptions {
  FreezeMode mode = FreezeMode::kAdaptive;
  double alpha = 1.0 / 3.0;          // fraction of the active blocks the bound lets freeze per decision, (0, 1]
  int warmup_decisions = 0;          // decisions that freeze nothing before the bound starts growing
  double max_frozen_fraction = 1.0;  // f never exceeds floor(fraction * L), [0, 1]
  // kAdaptive: a block has settled when its gradient norm changed by less
  // than this fraction of itself since the previous decision, (0, 1), at
  // `patience` decisions in a row (>= 1).
  double tolerance = 0.05;
  int patience = 2;
  // kManual: the frozen count after decision 1, 2, ... (after warm-up);
  // each in [0, L]; the last value holds afterwards. A value below the one
  // before it unfreezes blocks (the only mode that does on its own).
  std::vector<int> manual_schedule;
};

// Throws ConfigError naming the parameter unless the options are usable for
// a model of `num_blocks` blocks.
void validate_freeze_options(const FreezeOptions& options, int num_blocks);

// Everything a decision depends on besides the options and the statistics.
// Checkpoint it to resume the same sequence of decisions.
struct FreezeState {
  int decisions = 0;   // decisions taken so far (T)
  int frozen = 0;      // f(T): blocks [0, f) are frozen
  double bound = 0.0;  // b(T), the unrounded bound
  // kAdaptive: every block's gradient norm at the previous decision (empty
  // before the first), what the next decision measures change against.
  std::vector<double> reference_norms;
  // kAdaptive: decisions in a row at which each block had settled (empty
  // before the first comparison).
  std::vector<int> settled_decisions;

  bool operator==(const FreezeState& o) const {
    return decisions == o.decisions && frozen == o.frozen && bound == o.bound &&
           settled_decisions == o.settled_decisions &&
           reference_norms.size() == o.reference_norms.size() &&
           std::equal(reference_norms.begin(), reference_norms.end(), o.reference_norms.begin(),
                      [](double x, double y) { return x == y || (x != x && y != y); });
  }
  bool operator!=(const FreezeState& o) const { return !(*this == o); }
};

// Throws ConfigError unless `state` could have come from the rule for
// `num_blocks` blocks (frozen in [0, L], bound finite in [0, L], ...).
void validate_freeze_state(const FreezeState& state, int num_blocks);

// One decision. `block_grad_norms` holds ||g_l|| for l in [0, L), already
// reduced over replicas; entries for frozen blocks are ignored. kPaper and
// kAdaptive need exactly L entries; the other modes ignore the norms and
// accept an empty vector. Negative norms and a wrong size are ConfigErrors.
//
// kAdaptive freezes on evidence of convergence (AutoFreeze's signal): block
// l has settled at decision T when its norm is finite and
// |n_l(T) - n_l(T-1)| < tolerance * n_l(T-1), and it may freeze once it has
// settled at `patience` decisions in a row. The prefix grows by the run of
// such blocks starting at the first active one, never faster than the
// paper's bound, never past max_frozen_fraction. The first decision only
// records the reference norms: it has nothing to compare with.
FreezeState next_freeze_state(const FreezeOptions& options, int num_blocks, const FreezeState& previous,
                              const std::vector<double>& block_grad_norms);

// The bound alone: [f(0), f(1), ..., f(decisions)] with f(T) = ceil(L * (1 -
// (1 - alpha)^T)) (kSchedule with no warm-up and no cap).
std::vector<int> freeze_bound_schedule(double alpha, int num_blocks, int decisions);

// The rule with its state: what a trainer holds.
class FreezePolicy {
 public:
  FreezePolicy(FreezeOptions options, int num_blocks);

  // Takes one decision and returns the new frozen count f.
  int decide(const std::vector<double>& block_grad_norms);

  int frozen() const { return state_.frozen; }
  int num_blocks() const { return num_blocks_; }
  const FreezeOptions& options() const { return options_; }
  const FreezeState& state() const { return state_; }
  // Continue from a checkpointed state (validated).
  void restore(const FreezeState& state);
  // Sets the prefix back to `frozen` (a revoked change, or a change held
  // back): the bound no higher than it, the settled evidence restarted.
  void revoke(int frozen);

 private:
  FreezeOptions options_;
  int num_blocks_;
  FreezeState state_;
};

// Sums per-block squared gradient norms over the optimizer steps between two
// decisions. The caller feeds, per step, sum over a block's parameters of
// ||grad||^2 (0 for frozen blocks). To combine replicas, all-reduce
// squared_sums() and steps() (sum; count each replica's step once) and pass
// them to rms_block_norms().
class GradientNormTracker {
 public:
  explicit GradientNormTracker(int num_blocks);

  // One step's squared norms, one per block: size L, each >= 0 (NaN is
  // accepted and makes that block's norm NaN, i.e. never the argmin).
  void add_step(const std::vector<double>& block_squared_norms);

  int num_blocks() const { return static_cast<int>(squared_sums_.size()); }
  int64_t steps() const { return steps_; }
  const std::vector<double>& squared_sums() const { return squared_sums_; }

  // Root mean square gradient norm per block since the last reset.
  std::vector<double> norms() const;
  void reset();
  // Continues an interval from a checkpoint (squared_sums() and steps() of
  // this rank). Throws ConfigError for a wrong block count or negative values.
  void restore(const std::vector<double>& squared_sums, int64_t steps);

 private:
  std::vector<double> squared_sums_;
  int64_t steps_ = 0;
};

// sqrt(squared_sums[l] / steps) per block; all NaN when steps == 0 (no
// statistics, so the adaptive rule freezes nothing new).
std::vector<double> rms_block_norms(const std::vector<double>& squared_sums, int64_t steps);

}  // namespace pipet
