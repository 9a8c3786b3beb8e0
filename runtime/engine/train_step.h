// One optimizer step on this rank (DESIGN.md §3): its pipeline's share of
// the global batch as micro-batches (the frozen prefix served by AutoCache
// when it serves), the schedule on the stage executor, the data-parallel
// gradient sync, then one copy to the host of the loss and the gradient
// norms, one world all-reduce (loss, global norm, stop requests), the clip
// and the optimizer. An idle rank (autodp.enabled=false) joins the same
// collectives with nothing to add.
#pragma once

#include "runtime/engine/pipeline.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace pipet {

class BatchFeeder;
class CacheCoordinator;
class Communicator;
class Dataset;
class ElasticController;
class EpochSampler;
class TransformerModel;

struct StepResult {
  double loss = 0.0;       // mean over the global batch
  double grad_norm = 0.0;  // before clipping, over the whole model
  bool stop = false;       // some rank was asked to stop
  double seconds = 0.0;    // this rank's time in the step (0 on an idle rank)
};

struct StepSettings {
  PipelineSchedule schedule = PipelineSchedule::kOneFOneB;
  std::chrono::milliseconds comm_timeout{0};
  double grad_clip_norm = 0.0;  // 0 = off
  bool prefetch = false;        // data.prefetch_batches > 0
  int64_t fault_step = -1;      // PIPET_FAULT_INJECTION: fail at this step
};

class StepRunner {
 public:
  // `cache` may be null. Every reference outlives the runner.
  StepRunner(const StepSettings& settings, Communicator& world, TransformerModel& model, const Dataset& train_data,
             BatchFeeder& feeder, ElasticController& elastic, CacheCoordinator* cache);

  // Step `step` + 1 on `global_indices` of `epoch` at learning rate `lr`;
  // `sampler` (already past this batch) tells the prefetcher what comes
  // next. TrainingDiverged for a non-finite loss or gradient norm; every
  // rank reaches the same verdict. Collective.
  StepResult run(const std::vector<int64_t>& global_indices, int64_t epoch, int64_t step,
                 const EpochSampler& sampler, double lr, bool stop_wanted);

  // This rank's time inside the pipeline schedule so far, and the part of it
  // spent waiting for a neighbouring stage (bubble + transfer).
  double pipeline_seconds() const { return pipeline_seconds_; }
  double pipeline_wait_seconds() const { return pipeline_wait_seconds_; }

 private:
  StepResult idle_step(bool stop_wanted, int64_t global_rows, int64_t step);
  // The world all-reduce of the step and the verdicts on its totals.
  StepResult reduce(double loss_total, double squared_norm, bool stop_wanted, int64_t global_rows);
  std::vector<MicroBatch> assemble(const std::vector<int64_t>& indices, int64_t epoch, const EpochSampler& sampler,
                                   int64_t global_rows);

  StepSettings settings_;
  Communicator& world_;
  TransformerModel& model_;
  const Dataset& train_data_;
  BatchFeeder& feeder_;
  ElasticController& elastic_;
  CacheCoordinator* cache_;
  int num_blocks_ = 0;
  double pipeline_seconds_ = 0.0;
  double pipeline_wait_seconds_ = 0.0;
};

}  // namespace pipet
