// What one sub-layer costs, for balancing pipeline stages.
//
// A model is a sequence of sub-layers: the embedding, then per transformer
// block an attention and an MLP sub-layer, then the head (final norm or
// pooler plus classifier). The frozen prefix of f blocks is therefore the
// embedding plus 2f sub-layers (nothing when f = 0).
//
// Balance cost of one sub-layer:
//  * measured time when the profile has it (forward + backward seconds),
//    otherwise its parameter count (the paper's proxy);
//  * a frozen sub-layer runs forward only, under no-grad, and holds no
//    gradients or optimizer state: with measured time it costs its forward
//    time alone; with the parameter proxy it costs lambda_frozen (default
//    1/6, the paper's memory proxy) times its parameter count.
// Activation bytes are carried for reports; they do not enter the balance.
//
// The compression criterion (Eq. 1) always uses these balance costs. The
// partition may count a frozen sub-layer differently (FrozenBalance::kForward):
// by the time it adds to its stage's step, its forward pass on the share of
// samples the cache will not serve. Under 1F1B a stage's step time is about
// its forward plus backward time per micro-batch, so that is what balances
// the stages; lambda_frozen stays a memory proxy for compression.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pipet {

struct SubLayerCost {
  std::string name;                         // "embedding", "block3.attention", "head"
  int64_t parameters = 0;                   // parameter count
  std::optional<double> forward_seconds;    // measured, per micro-batch
  std::optional<double> backward_seconds;   // measured, per micro-batch
  int64_t activation_bytes = 0;             // output activation size, per micro-batch
  bool frozen = false;

  bool operator==(const SubLayerCost& o) const {
    return name == o.name && parameters == o.parameters && forward_seconds == o.forward_seconds
           && backward_seconds == o.backward_seconds && activation_bytes == o.activation_bytes
           && frozen == o.frozen;
  }
};

enum class CostBasis {
  kAuto,          // measured time when every sub-layer has both times, else parameters
  kParameters,    // parameter count (the paper)
  kMeasuredTime,  // forward + backward seconds; every sub-layer must have them
};
const char* to_string(CostBasis basis);

// How partition_costs counts a frozen sub-layer.
enum class FrozenBalance {
  kLambda,   // as balance_costs (lambda_frozen under the parameter proxy; the paper)
  kForward,  // its forward pass on the samples the cache does not serve
};

// Under the parameter proxy, a sub-layer's forward pass as a share of its
// forward + backward: backward runs two matrix products per forward one.
constexpr double kForwardShareOfStep = 1.0 / 3.0;

struct CostModelOptions {
  CostBasis basis = CostBasis::kAuto;
  // lambda_frozen: cost of a frozen sub-layer relative to an active one
  // under the parameter proxy, [0, 1]. 0 means frozen layers cost nothing
  // (what the public reference effectively does; right when AutoCache
  // serves the frozen prefix's output).
  double frozen_cost_factor = 1.0 / 6.0;
  // partition_costs only.
  FrozenBalance frozen_balance = FrozenBalance::kLambda;
  // kForward: share of the frozen prefix's outputs the cache will serve in
  // the coming interval, [0, 1] (0 without a cache).
  double served_share = 0.0;
};

// Sub-layers frozen for f frozen blocks: 0 when f = 0, else 1 + 2f (the
// embedding and both sub-layers of each frozen block).
int frozen_sublayer_count(int frozen_blocks);

// Copy of `sublayers` with exactly the first frozen_sublayer_count(f)
// marked frozen. ConfigError when the sequence is too short for f blocks
// (it must also keep the head active).
std::vector<SubLayerCost> with_frozen_blocks(std::vector<SubLayerCost> sublayers, int frozen_blocks);

// Length of the frozen prefix; ConfigError when a frozen sub-layer follows
// an active one (only a bottom-up prefix may be frozen).
int frozen_prefix_length(const std::vector<SubLayerCost>& sublayers);

// The basis `options.basis` resolves to for these records (kAuto decided).
CostBasis resolve_cost_basis(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options);

// One balance cost per sub-layer (see the top of this file). Validates the
// records: non-empty, parameters >= 0, times finite and >= 0, frozen flags
// a prefix, lambda in [0, 1]; errors name the sub-layer index and name.
std::vector<double> balance_costs(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options);

// The costs the partition balances: balance_costs, except that with
// FrozenBalance::kForward a frozen sub-layer costs (1 - served_share) times
// its forward time (measured) or kForwardShareOfStep times its parameter
// count (proxy). ConfigError also for a served_share outside [0, 1].
std::vector<double> partition_costs(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options);

}  // namespace pipet
