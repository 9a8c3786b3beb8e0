#include "autopipe/cost_model.h"

#include "runtime/core/errors.h"

#include <cmath>
#include <sstream>

namespace pipet {

namespace {

std::string where(const std::vector<SubLayerCost>& sublayers, size_t i) {
  std::string w = "sub-layer " + std::to_string(i);
  if (!sublayers[i].name.empty()) w += " '" + sublayers[i].name + "'";
  return w;
}

std::string number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

void check_time(const std::vector<SubLayerCost>& sublayers, size_t i, const std::optional<double>& t,
                const char* which) {
  if (t && !(std::isfinite(*t) && *t >= 0.0)) {
    throw ConfigError("cost model: " + where(sublayers, i) + " has " + which + " time " + number(*t)
                      + " s; measured times must be finite and >= 0");
  }
}

bool has_times(const SubLayerCost& s) { return s.forward_seconds.has_value() && s.backward_seconds.has_value(); }

}  // namespace

const char* to_string(CostBasis basis) {
  switch (basis) {
    case CostBasis::kAuto: return "auto";
    case CostBasis::kParameters: return "parameters";
    case CostBasis::kMeasuredTime: return "measured_time";
  }
  return "unknown";
}

int frozen_sublayer_count(int frozen_blocks) {
  if (frozen_blocks < 0) {
    throw ConfigError("cost model: frozen block count " + std::to_string(frozen_blocks) + " is negative");
  }
  return frozen_blocks == 0 ? 0 : 1 + 2 * frozen_blocks;
}

std::vector<SubLayerCost> with_frozen_blocks(std::vector<SubLayerCost> sublayers, int frozen_blocks) {
  const int frozen = frozen_sublayer_count(frozen_blocks);
  if (frozen >= static_cast<int>(sublayers.size())) {
    throw ConfigError("cost model: " + std::to_string(frozen_blocks) + " frozen blocks are "
                      + std::to_string(frozen) + " sub-layers, but the model has only "
                      + std::to_string(sublayers.size()) + " (the head must stay active)");
  }
  for (size_t i = 0; i < sublayers.size(); ++i) sublayers[i].frozen = static_cast<int>(i) < frozen;
  return sublayers;
}

int frozen_prefix_length(const std::vector<SubLayerCost>& sublayers) {
  int prefix = 0;
  while (prefix < static_cast<int>(sublayers.size()) && sublayers[prefix].frozen) ++prefix;
  for (size_t i = prefix; i < sublayers.size(); ++i) {
    if (sublayers[i].frozen) {
      throw ConfigError("cost model: " + where(sublayers, i) + " is frozen but sub-layer "
                        + std::to_string(prefix) + " before it is not; only a bottom-up prefix can be frozen");
    }
  }
  return prefix;
}

CostBasis resolve_cost_basis(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options) {
  if (options.basis != CostBasis::kAuto) return options.basis;
  size_t timed = 0;
  for (const SubLayerCost& s : sublayers) timed += has_times(s) ? 1 : 0;
  if (timed == 0) return CostBasis::kParameters;
  if (timed == sublayers.size()) return CostBasis::kMeasuredTime;
  for (size_t i = 0; i < sublayers.size(); ++i) {
    if (!has_times(sublayers[i])) {
      throw ConfigError("cost model: " + where(sublayers, i) + " has no measured forward and backward time while "
                        + std::to_string(timed) + " other sub-layers do; profile all or none");
    }
  }
  return CostBasis::kMeasuredTime;  // not reached
}

namespace {

std::vector<double> costs_with(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options,
                               FrozenBalance frozen_balance) {
  if (sublayers.empty()) throw ConfigError("cost model: no sub-layers to cost");
  if (!(options.frozen_cost_factor >= 0.0 && options.frozen_cost_factor <= 1.0)) {
    throw ConfigError("cost model: frozen_cost_factor (lambda_frozen) = " + number(options.frozen_cost_factor)
                      + " is outside [0, 1]");
  }
  for (size_t i = 0; i < sublayers.size(); ++i) {
    const SubLayerCost& s = sublayers[i];
    if (s.parameters < 0) {
      throw ConfigError("cost model: " + where(sublayers, i) + " has a negative parameter count "
                        + std::to_string(s.parameters));
    }
    if (s.activation_bytes < 0) {
      throw ConfigError("cost model: " + where(sublayers, i) + " has negative activation bytes "
                        + std::to_string(s.activation_bytes));
    }
    check_time(sublayers, i, s.forward_seconds, "forward");
    check_time(sublayers, i, s.backward_seconds, "backward");
  }
  frozen_prefix_length(sublayers);
  const CostBasis basis = resolve_cost_basis(sublayers, options);

  std::vector<double> costs(sublayers.size());
  for (size_t i = 0; i < sublayers.size(); ++i) {
    const SubLayerCost& s = sublayers[i];
    if (basis == CostBasis::kMeasuredTime) {
      if (!has_times(s)) {
        throw ConfigError("cost model: basis 'measured_time' but " + where(sublayers, i)
                          + " has no measured forward and backward time");
      }
      costs[i] = s.frozen ? *s.forward_seconds : *s.forward_seconds + *s.backward_seconds;
    } else {
      const double params = static_cast<double>(s.parameters);
      costs[i] = s.frozen ? options.frozen_cost_factor * params : params;
    }
    if (s.frozen && frozen_balance == FrozenBalance::kForward) {
      const double forward = basis == CostBasis::kMeasuredTime
                                 ? *s.forward_seconds
                                 : kForwardShareOfStep * static_cast<double>(s.parameters);
      costs[i] = forward * (1.0 - options.served_share);
    }
  }
  return costs;
}

}  // namespace

std::vector<double> balance_costs(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options) {
  return costs_with(sublayers, options, FrozenBalance::kLambda);
}

std::vector<double> partition_costs(const std::vector<SubLayerCost>& sublayers, const CostModelOptions& options) {
  if (!(options.served_share >= 0.0 && options.served_share <= 1.0)) {
    throw ConfigError("cost model: served_share (the cache's share of the frozen prefix's outputs) = "
                      + number(options.served_share) + " is outside [0, 1]");
  }
  return costs_with(sublayers, options, options.frozen_balance);
}

}  // namespace pipet
