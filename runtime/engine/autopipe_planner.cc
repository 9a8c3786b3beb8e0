#include "runtime/engine/autopipe_planner.h"

#include <algorithm>

#include "autopipe/compression.h"
#include "runtime/core/logging.h"
#include "runtime/engine/pipeline.h"

namespace pipet {
namespace {

StageRanges ranges_of(const std::vector<Stage>& plan) {
  StageRanges ranges;
  for (const Stage& stage : plan) ranges.emplace_back(static_cast<size_t>(stage.begin), static_cast<size_t>(stage.end));
  return ranges;
}

std::vector<Stage> stages_of(const StageRanges& ranges, const std::vector<double>& costs) {
  std::vector<Stage> plan;
  for (const auto& [begin, end] : ranges) {
    Stage stage;
    stage.begin = static_cast<int>(begin);
    stage.end = static_cast<int>(end);
    for (size_t j = begin; j < end; ++j) stage.cost += costs[j];
    plan.push_back(stage);
  }
  return plan;
}

}  // namespace

// AutoPipe always pins the prefix and the sub-layer after it (the paper's
// layout, which AutoCache needs: the cache replaces the prefix's forward on
// stage 0 and the next sub-layer takes its output); without AutoPipe only
// when AutoCache may serve (fixed_ranges).
int pinned_sublayers(int frozen_blocks) {
  return frozen_blocks > 0 ? frozen_sublayer_count(frozen_blocks) + 1 : 0;
}

AutoPipePlanner::AutoPipePlanner(const AutoPipeConfig& config, const std::string& schedule, bool cache_may_serve,
                                 std::vector<SubLayerCost> sublayers, int initial_stages)
    : config_(config),
      one_f_one_b_(parse_pipeline_schedule(schedule) == PipelineSchedule::kOneFOneB),
      cache_may_serve_(cache_may_serve),
      method_(partition_method_from_string(config.partition, "autopipe.partition")),
      sublayers_(std::move(sublayers)) {
  measured_ = !sublayers_.empty() && sublayers_.front().forward_seconds.has_value();
  // AutoPipe's yardstick: the largest stage of the full model over K0 stages.
  reference_max_cost_ = reference_max_stage_cost(costs(0, CostUse::kCompression, 0.0), initial_stages, method_);
  initial_ranges_ = ranges(initial_stages, 0, 0.0);
}

bool AutoPipePlanner::partition_counts_frozen_forward() const {
  const std::string& balance = config_.frozen_balance;
  return balance == "forward" || (balance == "auto" && one_f_one_b_);
}

std::vector<double> AutoPipePlanner::costs(int frozen_blocks, CostUse use, double served_share) const {
  const std::vector<SubLayerCost> records = with_frozen_blocks(sublayers_, frozen_blocks);
  CostModelOptions options;
  options.basis = measured_ ? CostBasis::kMeasuredTime : CostBasis::kParameters;
  options.frozen_cost_factor = config_.frozen_cost;
  if (use == CostUse::kCompression) return balance_costs(records, options);
  if (partition_counts_frozen_forward()) {
    options.frozen_balance = FrozenBalance::kForward;
    options.served_share = served_share;
  }
  return partition_costs(records, options);
}

StageRanges AutoPipePlanner::fixed_ranges(int stages, int frozen_blocks) const {
  if (static_cast<size_t>(stages) != initial_ranges_.size()) return {};
  const size_t count = sublayers_.size();
  // Without the cache nothing needs the frozen prefix on stage 0: a stage
  // whose sub-layers froze runs them forward only, and no state moves.
  const size_t pinned = cache_may_serve_ ? static_cast<size_t>(pinned_sublayers(frozen_blocks)) : 0;
  std::vector<size_t> begins;
  for (const auto& range : initial_ranges_) begins.push_back(range.first);
  for (size_t s = 1; s < begins.size(); ++s) {
    begins[s] = std::max(begins[s], begins[s - 1] + 1);
    if (s == 1) begins[s] = std::max(begins[s], pinned);
  }
  if (begins.back() >= count) return {};
  StageRanges ranges;
  for (size_t s = 0; s < begins.size(); ++s)
    ranges.emplace_back(begins[s], s + 1 < begins.size() ? begins[s + 1] : count);
  return ranges;
}

StageRanges AutoPipePlanner::ranges(int stages, int frozen_blocks, double served_share) const {
  if (!config_.enabled) {
    StageRanges fixed = fixed_ranges(stages, frozen_blocks);
    if (!fixed.empty()) return fixed;
  }
  return ranges_of(partition(costs(frozen_blocks, CostUse::kPartition, served_share), stages, method_,
                             pinned_sublayers(frozen_blocks)));
}

std::string AutoPipePlanner::describe(const StageRanges& ranges, int frozen_blocks, double served_share) const {
  return pipet::describe(stages_of(ranges, costs(frozen_blocks, CostUse::kPartition, served_share)));
}

int AutoPipePlanner::stages_after_freeze(int stages, int frozen_blocks, int world_size, bool log) const {
  if (!config_.enabled && !fixed_ranges(stages, frozen_blocks).empty()) return stages;
  CompressionOptions compression;
  compression.method = method_;
  if (config_.compression == "divisors")
    for (int k = 1; k <= world_size; ++k)
      if (world_size % k == 0) compression.allowed_stage_counts.push_back(k);
  const int compressed = compress_stage_count(costs(frozen_blocks, CostUse::kCompression, 0.0),
                                              pinned_sublayers(frozen_blocks), stages, reference_max_cost_,
                                              compression)
                             .stages;
  if (!config_.enabled && log)
    spdlog::warn("[autopipe] autopipe.enabled=false, but {} stages cannot hold {} frozen blocks on stage 0 "
                 "and a sub-layer on every other stage: compressing to {} stages",
                 stages, frozen_blocks, compressed);
  return compressed;
}

}  // namespace pipet
