#include "autopipe/plan.h"

#include "runtime/core/errors.h"

namespace pipet {

Plan make_plan(const PlanInputs& inputs) {
  const std::vector<double> costs = balance_costs(inputs.sublayers, inputs.cost);
  const int n = static_cast<int>(costs.size());
  if (inputs.initial_stages < 1 || inputs.initial_stages > n) {
    throw ConfigError("plan: initial stage count K0 = " + std::to_string(inputs.initial_stages)
                      + " must be between 1 and the number of sub-layers (" + std::to_string(n) + ")");
  }
  if (inputs.current_stages < 1 || inputs.current_stages > inputs.initial_stages) {
    throw ConfigError("plan: current stage count K = " + std::to_string(inputs.current_stages)
                      + " must be between 1 and K0 = " + std::to_string(inputs.initial_stages));
  }

  // The reference: the whole model active over K0 stages.
  std::vector<SubLayerCost> all_active = inputs.sublayers;
  for (SubLayerCost& s : all_active) s.frozen = false;
  const double reference = reference_max_stage_cost(balance_costs(all_active, inputs.cost), inputs.initial_stages,
                                                    inputs.compression.method);

  Plan plan;
  plan.frozen_sublayers = frozen_prefix_length(inputs.sublayers);
  plan.stages =
      compress_stage_count(costs, plan.frozen_sublayers, inputs.current_stages, reference, inputs.compression).stages;
  plan.partition =
      partition(partition_costs(inputs.sublayers, inputs.cost), plan.stages, inputs.compression.method,
                plan.frozen_sublayers);

  const auto batch = inputs.pipeline_batch_by_stages.find(plan.stages);
  if (batch == inputs.pipeline_batch_by_stages.end()) {
    throw ConfigError("plan: no per-pipeline batch given for K = " + std::to_string(plan.stages));
  }
  const std::optional<int> measured = inputs.measured.best(plan.stages);
  if (measured) {
    if (batch->second < 1 || batch->second % *measured != 0) {
      throw ConfigError("plan: the fastest measured M = " + std::to_string(*measured) + " for K = "
                        + std::to_string(plan.stages) + " does not divide the per-pipeline batch "
                        + std::to_string(batch->second));
    }
    plan.micro_batches = *measured;
  } else {
    plan.micro_batches = default_micro_batches(plan.stages, batch->second);
  }
  return plan;
}

std::string describe(const Plan& plan) {
  return "K=" + std::to_string(plan.stages) + " M=" + std::to_string(plan.micro_batches)
         + " frozen=" + std::to_string(plan.frozen_sublayers) + " | " + describe(plan.partition);
}

}  // namespace pipet
