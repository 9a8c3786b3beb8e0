// Evaluation over the whole evaluation set on every layout, early stopping
// on its figures, and gathering the trained weights to rank 0 for export.
#pragma once

#include "runtime/engine/task.h"

#include <cstdint>
#include <memory>

namespace pipet {

class BatchFeeder;
class Communicator;
class Dataset;
class StageLayout;
class TransformerModel;
struct EvalConfig;
struct TrainerState;

class Evaluator {
 public:
  // `batch_size`: the global evaluation batch (eval.batch_size, else
  // train.batch_size). Every reference outlives the evaluator.
  Evaluator(std::shared_ptr<const Dataset> eval_data, const Task& task, int64_t batch_size, Communicator& world,
            const BatchFeeder& feeder);

  bool has_data() const;
  // Each training pipeline evaluates a contiguous shard of the set; the
  // last stages merge their partial results and replica 0's last stage
  // tells every rank, so all report figures over the whole set. Idle
  // pipelines take no shard. Empty result without data. Collective.
  EvalResult run(TransformerModel& model, const StageLayout& layout);

 private:
  std::shared_ptr<const Dataset> eval_data_;
  const Task& task_;
  int64_t batch_size_;
  Communicator& world_;
  const BatchFeeder& feeder_;
};

// eval.early_stop_*: records `result` in `state` (best value, evaluations
// without improvement) and says whether training should stop.
bool update_early_stop(const EvalConfig& config, const Task& task, const EvalResult& result, TrainerState& state);

// Replica 0's stages send their sub-layers' weights to its stage 0 in model
// order, so rank 0 holds the whole trained model (for export). Collective
// over replica 0's pipeline; nothing with one stage.
void gather_model_to_first_stage(TransformerModel& model, const StageLayout& layout);

}  // namespace pipet
