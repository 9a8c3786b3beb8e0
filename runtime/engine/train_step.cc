#include "runtime/engine/train_step.h"

#include <cmath>
#include <string>

#include "autopipe/cost_model.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/errors.h"
#include "runtime/core/stopwatch.h"
#include "runtime/data/dataset.h"
#include "runtime/data/sampler.h"
#include "runtime/engine/batch_feeder.h"
#include "runtime/engine/cache_coordinator.h"
#include "runtime/engine/elastic_controller.h"
#include "runtime/engine/freeze_controller.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/stage_layout.h"
#include "runtime/model/model.h"

namespace pipet {

StepRunner::StepRunner(const StepSettings& settings, Communicator& world, TransformerModel& model,
                       const Dataset& train_data, BatchFeeder& feeder, ElasticController& elastic,
                       CacheCoordinator* cache)
    : settings_(settings),
      world_(world),
      model_(model),
      train_data_(train_data),
      feeder_(feeder),
      elastic_(elastic),
      cache_(cache),
      num_blocks_(static_cast<int>(model.spec().num_layers)) {}

StepResult StepRunner::reduce(double loss_total, double squared_norm, bool stop_wanted, int64_t global_rows) {
  torch::Tensor totals = torch::tensor({loss_total, squared_norm, stop_wanted ? 1.0 : 0.0}, torch::kDouble);
  world_.all_reduce(totals);
  StepResult result;
  result.loss = totals[0].item<double>() / static_cast<double>(global_rows);
  result.grad_norm = std::sqrt(totals[1].item<double>());
  result.stop = totals[2].item<double>() > 0;
  return result;
}

std::vector<MicroBatch> StepRunner::assemble(const std::vector<int64_t>& indices, int64_t epoch,
                                             const EpochSampler& sampler, int64_t global_rows) {
  const StageLayout& layout = elastic_.layout();
  const StageRole role{layout.executor().first(), layout.executor().last()};
  const int64_t count = layout.micro_batches();
  if (!elastic_.serves_frozen_prefix()) {
    const bool prefetch = role.first && settings_.prefetch;
    const Activations inputs =
        prefetch ? batch_inputs(feeder_.prefetched(indices, epoch, sampler, layout.replica(), layout.active_replicas()))
                 : Activations{};
    return feeder_.micro_batches(train_data_, indices, epoch, count, global_rows, role, prefetch ? &inputs : nullptr);
  }
  // AutoCache: the frozen prefix's output instead of the raw inputs, one
  // micro-batch at a time as the schedule reaches it (labels and weights
  // come from micro_batches; no raw inputs are loaded here).
  const size_t frozen_end = static_cast<size_t>(frozen_sublayer_count(layout.frozen_blocks()));
  const Activations none;
  std::vector<MicroBatch> micro = feeder_.micro_batches(train_data_, indices, epoch, count, global_rows, role, &none);
  const auto split = micro_batch_rows(static_cast<int64_t>(indices.size()), count);
  for (size_t m = 0; m < split.size(); ++m) {
    const auto [begin, length] = split[m];
    micro[m].input_depth = frozen_end;
    micro[m].produce_input =
        cache_->producer(std::vector<int64_t>(indices.begin() + begin, indices.begin() + begin + length), epoch,
                         frozen_end);
  }
  return micro;
}

StepResult StepRunner::run(const std::vector<int64_t>& global_indices, int64_t epoch, int64_t step,
                           const EpochSampler& sampler, double lr, bool stop_wanted) {
  const auto step_started = SteadyClock::now();
  StageLayout& layout = elastic_.layout();
  model_.train();
  set_frozen_eval(model_, layout.frozen_blocks());
  layout.optimizer().zero_grad();
  if (step + 1 == settings_.fault_step)
    throw Error(ExitCode::kInternal,
                "fault injected by PIPET_FAULT_INJECTION at step " + std::to_string(settings_.fault_step));
  const int64_t global_rows = static_cast<int64_t>(global_indices.size());
  if (layout.idle()) return idle_step(stop_wanted, global_rows, step);
  const std::vector<int64_t> indices = replica_share(global_indices, layout.replica(), layout.active_replicas());
  std::vector<MicroBatch> micro = assemble(indices, epoch, sampler, global_rows);
  StageExecutor& executor = layout.executor();
  const torch::Tensor loss_sum = executor.train(micro, settings_.schedule, &layout.buckets());
  pipeline_seconds_ += executor.last_busy_seconds() + executor.last_wait_seconds();
  pipeline_wait_seconds_ += executor.last_wait_seconds();
  layout.buckets().finish(settings_.comm_timeout);
  // This stage's gradients (the trainable parameters backward reached): one
  // pass over them gives the squared norm for the global clip and, per block,
  // the statistics of the freeze rule. Replica 0 reports (the replicas hold
  // the same gradients after the all-reduce); every replica clips them.
  // The loss and every sum stay on the device until one copy reads them all
  // (one host synchronisation per step on a GPU, not one per tensor).
  double squared_norm = 0.0;
  std::vector<double> block_squares(static_cast<size_t>(num_blocks_), 0.0);
  std::vector<torch::Tensor> grads;
  std::vector<int64_t> blocks;
  for (size_t j = layout.stage_begin(); j < layout.stage_end(); ++j) {
    const int64_t block = model_.sublayer(j).block();
    for (const auto& [name, p] : model_.sublayer(j).hf_parameters()) {
      if (!p.grad().defined()) continue;
      grads.push_back(p.grad());
      blocks.push_back(block);
    }
  }
  const bool reports = layout.replica() == 0;
  std::vector<torch::Tensor> on_device_values;
  if (loss_sum.defined()) on_device_values.push_back(loss_sum);
  if (reports && !grads.empty()) on_device_values.push_back(squared_gradient_norms(grads));
  double loss_total = 0.0;
  if (!on_device_values.empty()) {
    const torch::Tensor host = torch::cat(on_device_values).to(torch::kCPU);
    const double* values = host.data_ptr<double>();
    if (loss_sum.defined()) loss_total = *values++;
    for (size_t i = 0; reports && i < blocks.size(); ++i) {
      squared_norm += values[i];
      if (blocks[i] >= 0) block_squares[blocks[i]] += values[i];
    }
  }
  if (FreezeController* freeze = elastic_.freeze()) freeze->add_step(block_squares);

  // One world all-reduce: the loss of every pipeline, the squared gradient
  // norm of every stage and stop requests.
  StepResult result = reduce(loss_total, squared_norm, stop_wanted, global_rows);
  if (!std::isfinite(result.loss)) {
    throw TrainingDiverged("training diverged at step " + std::to_string(step + 1) + ": the loss is " +
                           std::to_string(result.loss) + " (try a lower train.lr)");
  }
  if (!std::isfinite(result.grad_norm)) {
    throw TrainingDiverged("training diverged at step " + std::to_string(step + 1) + ": the gradient norm is " +
                           std::to_string(result.grad_norm) + " (try a lower train.lr or train.grad_clip_norm)");
  }
  clip_gradients(grads, result.grad_norm, settings_.grad_clip_norm);
  layout.optimizer().step(lr);
  result.seconds = seconds_since(step_started);
  return result;
}

StepResult StepRunner::idle_step(bool stop_wanted, int64_t global_rows, int64_t step) {
  // The same collectives as a training rank's step, in the same order, with
  // nothing to add: no loss, no gradient, no block statistics.
  if (FreezeController* freeze = elastic_.freeze())
    freeze->add_step(std::vector<double>(static_cast<size_t>(num_blocks_), 0.0));
  StepResult result = reduce(0.0, 0.0, stop_wanted, global_rows);
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm))
    throw TrainingDiverged("training diverged at step " + std::to_string(step + 1) +
                           " (reported by the training ranks)");
  return result;
}

}  // namespace pipet
