// The elastic half of the trainer (DESIGN.md §4): at a decision point the
// freeze rule yields the new frozen prefix; on a change AutoPipe compresses
// and re-partitions, AutoDP moves each rank's new state to it, the layout
// is rebuilt, and AutoCache advances its entries. Owns the layout in force
// and everything that decides it: the AutoPipe planner, the freeze
// controller (when freezing is on), the micro-batch tuner (when asked for),
// and the partition's estimate of the share the cache serves.
//
// A transition, in order (every rank, collectively; an unfreeze, where the
// prefix shrinks, re-plans K from K0 and drops the deeper cache entries):
//   1. FreezeController::decide      statistics all-reduced, rule -> f
//   2. AutoPipePlanner               K' by Eq. 1; served share estimated
//                                    (CacheCoordinator); ranges of K'
//   3. move_training_state           parameters and optimizer slots to
//                                    their new owners (autodp/)
//   4. StageLayout::rebuild          groups, executor, buckets, optimizer,
//                                    batch policy, M (tuner)
//   5. CacheCoordinator::advance     entries pushed to the new depth
//   6. CacheCoordinator::decide_for_interval, then `event=transition`
#pragma once

#include "runtime/core/torch_pch.h"
#include "runtime/engine/autopipe_planner.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace pipet {

class CacheCoordinator;
class Communicator;
class EpochSampler;
class FreezeController;
class MetricsLog;
class MicroBatchTuner;
class StageLayout;
class TransformerModel;
struct TrainerState;

class ElasticController {
 public:
  // `freeze`, `tuner` and `cache` may be null (freezing off, no tuning, no
  // cache). Builds the starting layout (K0 stages, nothing frozen):
  // collective. Every reference outlives the controller.
  ElasticController(std::unique_ptr<StageLayout> layout, AutoPipePlanner planner,
                    std::unique_ptr<FreezeController> freeze, std::unique_ptr<MicroBatchTuner> tuner,
                    CacheCoordinator* cache, Communicator& world, TransformerModel& model, EpochSampler& sampler,
                    std::string schedule_name);
  ~ElasticController();
  ElasticController(const ElasticController&) = delete;
  ElasticController& operator=(const ElasticController&) = delete;

  StageLayout& layout() const { return *layout_; }
  // The world's loss on the freeze probe (freeze.probe_samples), measured at
  // every decision when the freeze controller is guarded. Collective.
  void set_probe(std::function<double()> probe) { probe_ = std::move(probe); }
  FreezeController* freeze() const { return freeze_.get(); }
  double served_share() const { return served_share_; }
  // The first stage serves the frozen prefix from AutoCache this interval.
  bool serves_frozen_prefix() const;

  // A resumed run: the layout its checkpoint parts were written in, before
  // they are loaded. Collective.
  void restore(int frozen_blocks, int stages, double served_share);
  // A run resumed onto another layout: the stages AutoPipe compresses this
  // job's K0 to for `frozen_blocks`, as a transition would. Collective.
  void restore_onto(int frozen_blocks, double served_share);

  // A decision point (`when` for the logs) at `epoch` and `step`: the freeze
  // decision and, on a change of f, the transition above; AutoCache decides
  // for the coming interval either way. Nothing without freezing. Collective.
  void decide(const char* when, int64_t epoch, int64_t step, MetricsLog& metrics);
  // AutoCache's decision for the coming interval alone (a resumed run with a
  // frozen prefix, at start-up). Collective.
  void decide_cache(int64_t epoch);

  // One step of `rows` samples took `seconds` here: the micro-batch tuner's
  // measurement (collective while it has candidates to time).
  void record_step(double seconds, int64_t rows);

  // The layout and freeze fields of a checkpoint's trainer state.
  void save_into(TrainerState& state) const;

 private:
  // Rebuilds the layout for `stages` and `frozen_blocks` over the planner's
  // ranges, logs it, and restarts the micro-batch tuning for the new K.
  void apply(int stages, int frozen_blocks, const std::map<std::string, torch::Tensor>& optimizer_state);
  void transition(int before, int after, const char* when, int64_t epoch, int64_t step, MetricsLog& metrics);

  std::unique_ptr<StageLayout> layout_;
  AutoPipePlanner planner_;
  std::unique_ptr<FreezeController> freeze_;
  std::unique_ptr<MicroBatchTuner> tuner_;
  CacheCoordinator* cache_;
  Communicator& world_;
  TransformerModel& model_;
  EpochSampler& sampler_;
  std::string schedule_name_;
  double served_share_ = 0.0;  // the partition's estimate (autopipe.frozen_balance forward)
  int initial_stages_;         // K0: an unfreeze re-plans from it
  std::function<double()> probe_;
};

}  // namespace pipet
