#include "runtime/engine/elastic_controller.h"

#include <optional>

#include "autodp/state_transfer.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/core/stopwatch.h"
#include "runtime/engine/cache_coordinator.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/freeze_controller.h"
#include "runtime/engine/metrics.h"
#include "runtime/engine/micro_batch_tuner.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/pipeline.h"
#include "runtime/engine/stage_layout.h"
#include "runtime/model/model.h"

namespace pipet {
ElasticController::ElasticController(std::unique_ptr<StageLayout> layout, AutoPipePlanner planner,
                                     std::unique_ptr<FreezeController> freeze, std::unique_ptr<MicroBatchTuner> tuner,
                                     CacheCoordinator* cache, Communicator& world, TransformerModel& model,
                                     EpochSampler& sampler, std::string schedule_name)
    : layout_(std::move(layout)),
      planner_(std::move(planner)),
      freeze_(std::move(freeze)),
      tuner_(std::move(tuner)),
      cache_(cache),
      world_(world),
      model_(model),
      sampler_(sampler),
      schedule_name_(std::move(schedule_name)),
      initial_stages_(layout_->stages()) {
  apply(layout_->stages(), 0, {});
}

ElasticController::~ElasticController() = default;

bool ElasticController::serves_frozen_prefix() const {
  return cache_ && layout_->frozen_blocks() > 0 && layout_->trains_first_stage();
}

void ElasticController::apply(int stages, int frozen_blocks,
                              const std::map<std::string, torch::Tensor>& optimizer_state) {
  const StageRanges ranges = planner_.ranges(stages, frozen_blocks, served_share_);
  layout_->rebuild(stages, frozen_blocks, ranges, optimizer_state, sampler_);
  if (world_.rank() == 0) {
    const int replicas = layout_->active_replicas();
    spdlog::info("[pipeline] {} over {} ranks{}, {} schedule, {} micro-batches, {} frozen blocks; stages: {}",
                 layout_text(stages, replicas), world_.size(),
                 layout_->idle_ranks() > 0
                     ? fmt::format(" ({} idle: autodp.enabled=false)", layout_->idle_ranks())
                     : std::string(),
                 schedule_name_, layout_->micro_batches(), frozen_blocks,
                 planner_.describe(ranges, frozen_blocks, served_share_));
  }
  if (tuner_) {
    const int64_t pipeline_batch = layout_->global_batch() / layout_->active_replicas();
    if (const std::optional<int64_t> m = tuner_->start(stages, pipeline_batch)) layout_->set_micro_batches(*m);
  }
}

void ElasticController::restore(int frozen_blocks, int stages, double served_share) {
  served_share_ = served_share;
  apply(stages, frozen_blocks, {});
}

void ElasticController::restore_onto(int frozen_blocks, double served_share) {
  const int stages = frozen_blocks > 0 ? planner_.stages_after_freeze(initial_stages_, frozen_blocks, world_.size(),
                                                                      world_.rank() == 0)
                                       : initial_stages_;
  restore(frozen_blocks, stages, served_share);
}

void ElasticController::record_step(double seconds, int64_t rows) {
  if (!tuner_) return;
  if (const std::optional<int64_t> m = tuner_->record(seconds, rows)) layout_->set_micro_batches(*m);
}

void ElasticController::decide_cache(int64_t epoch) {
  if (!cache_) return;
  cache_->decide_for_interval(layout_->frozen_blocks(), serves_frozen_prefix(),
                              layout_->global_batch() / layout_->active_replicas(), epoch);
}

void ElasticController::decide(const char* when, int64_t epoch, int64_t step, MetricsLog& metrics) {
  if (!freeze_) return;
  const int before = layout_->frozen_blocks();
  std::optional<double> probe_loss;
  if (freeze_->guarded()) {
    if (!probe_) throw Error(ExitCode::kInternal, "the freeze probe is on but no probe was set");
    probe_loss = probe_();
  }
  const int after = freeze_->decide(world_, probe_loss);
  // What the rule saw, so a user can tell why it froze (or did not).
  std::string norms;
  for (double n : freeze_->last_norms()) norms += (norms.empty() ? "" : ",") + fmt::format("{:.4g}", n);
  metrics.emit("freeze", {{"epoch", epoch},
                          {"step", step},
                          {"decision", static_cast<int64_t>(freeze_->state().decisions)},
                          {"frozen_before", static_cast<int64_t>(before)},
                          {"frozen_after", static_cast<int64_t>(after)},
                          {"probe_loss", probe_loss ? *probe_loss : -1.0},
                          {"revoked", static_cast<int64_t>(freeze_->last_revoked())},
                          {"block_grad_norms", norms}});
  if (after == before) {
    if (world_.rank() == 0)
      spdlog::info("[freeze] decision {} ({}): {} of {} blocks stay frozen", freeze_->state().decisions, when, before,
                   freeze_->num_blocks());
    decide_cache(epoch);
    return;
  }
  transition(before, after, freeze_->last_revoked() ? "probe guard: the previous freeze hurt the probe loss" : when,
             epoch, step, metrics);
}

void ElasticController::transition(int before, int after, const char* when, int64_t epoch, int64_t step,
                                   MetricsLog& metrics) {
  const bool rank0 = world_.rank() == 0;
  const bool unfreeze = after < before;
  const auto started = SteadyClock::now();
  const int stages_before = layout_->stages();
  // AutoDP: each rank receives what its new range needs from its old replica.
  const OwnershipLayout old_layout{stages_before, layout_->ranges(),
                                   static_cast<size_t>(frozen_sublayer_count(before))};
  // A freeze compresses the current K; an unfreeze re-plans from K0, so the
  // pipeline may grow back to more stages (and fewer replicas).
  const int new_stages = planner_.stages_after_freeze(unfreeze ? initial_stages_ : stages_before, after,
                                                      world_.size(), rank0);
  // Every rank takes the same branch (config and f agree everywhere).
  served_share_ = 0.0;
  if (cache_ && planner_.partition_counts_frozen_forward() && before > 0 && !unfreeze)
    served_share_ = cache_->estimate_served_share(before, serves_frozen_prefix());
  if (planner_.partition_counts_frozen_forward() && rank0)
    spdlog::info("[autopipe] the partition counts the frozen prefix's forward on {:.0f}% of the samples "
                 "(the cache is estimated to serve the rest)",
                 100.0 * (1.0 - served_share_));
  const OwnershipLayout new_layout{new_stages, planner_.ranges(new_stages, after, served_share_),
                                   static_cast<size_t>(frozen_sublayer_count(after))};
  std::map<std::string, torch::Tensor> moved;
  for (auto& [name, tensor] : layout_->optimizer().state()) moved[name] = tensor;
  const TransferStats transfer = move_training_state(world_, model_, old_layout, new_layout,
                                                     layout_->optimizer().slot_names(), moved);
  torch::Tensor sent = torch::tensor({static_cast<double>(transfer.bytes_sent)}, torch::kDouble);
  world_.all_reduce(sent);
  const int64_t bytes_moved = static_cast<int64_t>(sent.item<double>());
  apply(new_stages, after, moved);
  // Cached outputs at the old depth go through the newly frozen blocks
  // instead of being recomputed from the inputs; an unfreeze drops them
  // (they are deeper than the new prefix).
  if (cache_ && before > 0) {
    if (unfreeze) {
      cache_->retreat(before, after, epoch, step, metrics);
    } else {
      cache_->advance(before, after, layout_->trains_first_stage(), epoch, step, metrics);
    }
  }
  decide_cache(epoch);
  const double seconds = seconds_since(started);
  metrics.emit("transition", {{"epoch", epoch},
                              {"step", step},
                              {"direction", std::string(unfreeze ? "unfreeze" : "freeze")},
                              {"reason", std::string(when)},
                              {"frozen_blocks", static_cast<int64_t>(after)},
                              {"stages", static_cast<int64_t>(layout_->stages())},
                              {"replicas", static_cast<int64_t>(layout_->active_replicas())},
                              {"micro_batches", layout_->micro_batches()},
                              {"first_stage_sublayers", static_cast<int64_t>(layout_->ranges().at(0).second)},
                              {"cache_served_share", served_share_},
                              {"global_batch", layout_->global_batch()},
                              {"lr_scale", layout_->lr_scale()},
                              {"seconds", seconds},
                              {"bytes_moved", bytes_moved}});
  if (rank0)
    spdlog::info("[freeze] decision {} ({}): {} frozen blocks {} -> {} of {}; stages {} -> {}, replicas {}; "
                 "moved {:.1f} MiB in {:.3f} s",
                 freeze_->state().decisions, when, unfreeze ? "unfreeze:" : "freeze:", before, after,
                 freeze_->num_blocks(), stages_before,
                 layout_->stages(), layout_->active_replicas(), bytes_moved / 1048576.0, seconds);
}

void ElasticController::save_into(TrainerState& state) const {
  state.frozen_prefix = layout_->frozen_blocks();
  state.pipeline_stages = layout_->stages();
  state.micro_batches = layout_->micro_batches();
  state.global_batch = layout_->global_batch();
  state.lr_scale = layout_->lr_scale();
  state.cache_served_share = served_share_;
  state.freeze_window_sums.clear();
  state.freeze_window_steps.clear();
  if (freeze_) freeze_->save_into(state);
}

}  // namespace pipet
