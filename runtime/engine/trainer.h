// Single-process trainer: the loop that later issues split across pipeline
// stages and replicas. Owns the datasets, model, optimizer, schedule,
// checkpointer and metrics of one run.
#pragma once

#include "runtime/core/config.h"
#include "runtime/engine/task.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace pipet {

class Dataset;
class EpochSampler;
class LrSchedule;
class MetricsLog;
class Optimizer;
class Checkpointer;
class TransformerModel;
struct Batch;
struct TrainerState;

struct TrainResult {
  int64_t steps = 0;
  int64_t epochs_completed = 0;
  double train_loss = 0.0;      // mean over the last logging window
  std::optional<EvalResult> eval;
  double train_seconds = 0.0;   // this run segment
  double samples_per_second = 0.0;
  bool early_stopped = false;
  bool interrupted = false;     // stopped by a signal (or stop_after_step) after checkpointing
  std::string last_checkpoint;
};

// Limits that are not part of the run's configuration (so they do not change
// the LR schedule): stop as if signalled once `stop_after_step` steps are done.
struct RunLimits {
  int64_t stop_after_step = 0;  // 0 = none
};

class Trainer {
 public:
  explicit Trainer(const TrainConfig& config);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult run(const RunLimits& limits = {});
  EvalResult evaluate();

  TransformerModel& model();
  const TrainerState& state() const;
  int64_t total_steps() const { return total_steps_; }

 private:
  double train_step(const Batch& batch);
  void resume_from(const std::string& path_or_auto);
  std::string save_checkpoint();
  bool update_early_stop(const EvalResult& result);

  TrainConfig config_;
  std::shared_ptr<Dataset> train_data_;
  std::shared_ptr<Dataset> eval_data_;
  std::shared_ptr<TransformerModel> model_;
  std::unique_ptr<Task> task_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<EpochSampler> sampler_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TrainerState> state_;
  int64_t total_steps_ = 0;
  int64_t steps_per_epoch_ = 0;
};

}  // namespace pipet
