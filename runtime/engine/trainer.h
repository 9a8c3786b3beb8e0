// The trainer of one rank in an SPMD job (DESIGN.md §1, §3): the ranks of
// `world` form R = W/K data-parallel pipelines of K stages (parallel.*); this
// rank runs one stage of one pipeline. With one rank it is the plain
// single-process trainer.
//
// Trainer is the composition that reads as the algorithm; run() is the loop
// (draw a batch, step, decide, evaluate, checkpoint, stop), and the work is
// the collaborators' (docs/ARCHITECTURE.md, "The trainer's pieces"):
//   StepRunner         one optimizer step (train_step.h)
//   ElasticController  freeze decision -> AutoPipe -> AutoDP -> new layout;
//                      owns the StageLayout in force (elastic_controller.h)
//   CacheCoordinator   AutoCache decisions, served share, advancing
//   BatchFeeder        replica shares, prefetching, micro-batches
//   Evaluator          evaluation, early stop, gathering for export
//   RunCheckpoints     per-rank parts, manifests, agreed resume
//
// Every rank builds the whole model from the same seed (identical
// initialisation for every layout) and trains and checkpoints only the
// sub-layers of its stage; rank 0 gathers the weights to export them.
#pragma once

#include "runtime/core/config.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/compute_device.h"
#include "runtime/engine/task.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

class BatchFeeder;
class CacheCoordinator;
class Communicator;
class Dataset;
class ElasticController;
class EpochSampler;
class Evaluator;
class LrSchedule;
class MetricsLog;
class ProcessGroups;
class RunCheckpoints;
class StepRunner;
class TransformerModel;

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
  // This rank's time inside the pipeline schedule over the run segment, and
  // the part of it spent waiting for a neighbouring stage (bubble + transfer).
  double pipeline_seconds = 0.0;
  double pipeline_wait_seconds = 0.0;
};

// Limits that are not part of the run's configuration (so they do not change
// the LR schedule): stop as if signalled once `stop_after_step` steps are done.
struct RunLimits {
  int64_t stop_after_step = 0;  // 0 = none
};

class Trainer {
 public:
  // `world` (not owned, outlives the trainer) is the group of ranks running
  // this job; null means this process alone. Collective over `world`.
  explicit Trainer(const TrainConfig& config, Communicator* world = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult run(const RunLimits& limits = {});
  EvalResult evaluate();

  // On rank 0 after run(): every sub-layer holds the trained weights. On the
  // other ranks only this rank's stage is current.
  TransformerModel& model();
  const ProcessGroups& groups() const;
  // Sub-layers [first, second) trained by this rank.
  std::pair<size_t, size_t> stage_range() const;
  // The run's state as a checkpoint would hold it now.
  const TrainerState& state() const;
  int64_t total_steps() const { return total_steps_; }

 private:
  // One segment of run(): the counters and the logging window it keeps.
  struct Segment;
  void resume(const std::string& resume);
  // The LR of the next update, and whether the run's length is reached:
  // in optimizer steps under keep_global_batch, in samples (steps of
  // train.batch_size) under scale_lr, whose steps grow with the replicas.
  double next_lr() const;
  bool training_done() const;
  // One step of the loop, and what follows it: the train event of the
  // logging window and the step-cadence decision, evaluation and checkpoint.
  bool step_once(const std::vector<int64_t>& indices, Segment& segment);
  void end_epoch(Segment& segment);
  void run_eval(const char* when, Segment& segment);
  std::string save_checkpoint();
  TrainResult finish(Segment& segment);
  bool is_rank0() const;

  TrainConfig config_;
  std::unique_ptr<Communicator> own_world_;  // when no world was given
  Communicator* world_ = nullptr;
  ComputeDevice device_;
  std::shared_ptr<Dataset> train_data_;
  std::shared_ptr<Dataset> eval_data_;
  std::shared_ptr<Dataset> probe_data_;  // freeze.probe_samples: held out of train_data_
  std::shared_ptr<TransformerModel> model_;
  std::unique_ptr<Task> task_;
  std::unique_ptr<EpochSampler> sampler_;
  std::unique_ptr<CacheCoordinator> cache_;     // freezing on and autocache.mode not off
  std::unique_ptr<ElasticController> elastic_;  // the layout and what changes it
  std::unique_ptr<BatchFeeder> feeder_;
  std::unique_ptr<StepRunner> step_;
  std::unique_ptr<Evaluator> probe_evaluator_;  // freeze.probe_samples
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<RunCheckpoints> checkpoints_;
  int initial_stages_ = 1;  // K0: the layout before any freeze
  // The run's progress (step, epoch, sampler position, samples, time, early
  // stop). Its layout and freeze fields belong to the ElasticController and
  // are filled by state().
  TrainerState progress_;
  mutable TrainerState snapshot_;
  int64_t total_steps_ = 0;
  int64_t steps_per_epoch_ = 0;
  double last_lr_ = 0.0;  // the LR of the last update
};

}  // namespace pipet
