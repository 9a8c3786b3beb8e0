// The trainer of one rank in an SPMD job (DESIGN.md §1, §3): the ranks of
// `world` form R = W/K data-parallel pipelines of K stages (parallel.*); this
// rank runs one stage of one pipeline. With one rank it is the plain
// single-process trainer. Owns the datasets, model, optimizer, schedule,
// checkpointer and metrics of one run.
//
// Every rank builds the whole model from the same seed (identical
// initialisation for every layout) and trains and checkpoints only the
// sub-layers of its stage; rank 0 gathers the weights to export them.
#pragma once

#include "runtime/core/config.h"
#include "runtime/core/tensor_names.h"
#include "runtime/engine/task.h"

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

class BatchPrefetcher;
class FreezePolicy;
class FrozenPrefixCache;
class MicroBatchTable;
class GradientNormTracker;
class GradientNormWindow;
class Dataset;
class EpochSampler;
class LrSchedule;
class MetricsLog;
class Optimizer;
class Checkpointer;
class Communicator;
class GradientBuckets;
class ProcessGroups;
class StageExecutor;
class TransformerModel;
struct Batch;
struct MicroBatch;
struct Activations;
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
  const ProcessGroups& groups() const { return *groups_; }
  // Sub-layers [first, second) trained by this rank.
  std::pair<size_t, size_t> stage_range() const;
  const TrainerState& state() const;
  int64_t total_steps() const { return total_steps_; }

 private:
  struct StepResult {
    double loss = 0.0;        // mean over the global batch
    double grad_norm = 0.0;   // before clipping, over the whole model
    bool stop = false;        // some rank was asked to stop
  };
  StepResult train_step(const std::vector<int64_t>& global_indices, bool stop_wanted);
  // `prebuilt` (optional): the first stage's inputs for `indices`, already
  // loaded (prefetched) or computed (the frozen prefix's cached output).
  std::vector<MicroBatch> micro_batches(const Dataset& data,
                                        const std::vector<int64_t>& indices,
                                        int64_t epoch, int64_t count,
                                        int64_t global_rows, const Activations* prebuilt = nullptr) const;
  // This pipeline's share of a global batch.
  std::vector<int64_t> replica_share(const std::vector<int64_t>& global_indices) const;
  // The first stage's training batch of `indices`, from the prefetcher, which
  // is kept data.prefetch_batches batches ahead.
  Batch prefetched_batch(const std::vector<int64_t>& indices);
  void resume_from(const std::string& path_or_auto);
  std::string save_checkpoint();
  void gather_model_to_rank0();
  // Elastic pipelining (freeze -> AutoPipe -> AutoDP).
  // Sub-layer costs for f frozen blocks, for the compression criterion or
  // for the partition (which may count the frozen forward:
  // autopipe.frozen_balance).
  enum class CostUse { kCompression, kPartition };
  std::vector<double> costs_for(int frozen_blocks, CostUse use) const;
  bool partition_counts_frozen_forward() const;
  // Collective: cache_served_share_ for a change from `before` frozen blocks.
  void estimate_cache_served_share(int before);
  int partition_method() const;  // PartitionMethod, as int to keep autopipe out of this header
  std::vector<std::pair<size_t, size_t>> plan_ranges(int stages, int frozen_blocks) const;
  void set_frozen_blocks(int frozen_blocks);
  // (Re)builds groups, partition, executor, buckets, micro-batch count and
  // the optimizer over this stage's trainable parameters, restoring its
  // state from `optimizer_state` (may be empty).
  void apply_layout(int stages, const std::map<std::string, torch::Tensor>& optimizer_state);
  // A freeze decision; on a change of f, the transition. `when` for logs.
  void decide_freeze(const char* when);
  // autodp.batch_policy for the current replica count: the global batch,
  // the sampler's step size and the LR multiplier (called by apply_layout).
  void apply_batch_policy();
  // The LR of the next update, and whether the run's length is reached:
  // in optimizer steps under keep_global_batch, in samples (steps of
  // train.batch_size) under scale_lr, whose steps grow with the replicas.
  double next_lr() const;
  bool training_done() const;
  // Micro-batch tuning: queue the unmeasured candidates for the current K,
  // and account one step's time to the candidate being profiled.
  void start_micro_batch_tuning();
  void record_tuning_step(double step_seconds, int64_t rows);
  void load_micro_batch_table();
  void save_micro_batch_table() const;
  // AutoCache: the first stage's cache of the frozen prefix's output.
  bool serves_frozen_prefix() const;
  // Collective: AutoCache's auto decision for the coming interval from the
  // serving ranks' timings averaged over the world (no-op in on/off mode).
  void decide_cache_for_interval();
  FrozenPrefixCache& frozen_cache();
  void set_frozen_modes();
  // autopipe.cost=measured: forward and backward seconds of every sub-layer
  // on one micro-batch, averaged over the world so every rank plans alike.
  void profile_sublayer_costs();
  NamedTensors stage_parameters() const;
  bool is_rank0() const;
  bool update_early_stop(const EvalResult& result);
  // autodp.enabled=false: the pipelines beyond the starting replica count
  // sit out. An idle rank takes no batches but joins every world collective
  // (its step contributes zeros to the step all-reduce).
  bool idle() const;
  StepResult idle_step(bool stop_wanted, int64_t global_rows);
  // autopipe.enabled=false: the starting partition. When AutoCache may serve
  // the frozen prefix it must sit on stage 0, and the boundaries move only as
  // far as that requires (empty when K stages cannot each keep a sub-layer);
  // with autocache.mode=off frozen sub-layers stay where they are.
  std::vector<std::pair<size_t, size_t>> fixed_ranges(int stages, int frozen_blocks) const;
  int active_replicas_ = 1;                                // pipelines that train
  int initial_replicas_ = 1;                               // R0
  std::vector<std::pair<size_t, size_t>> initial_ranges_;  // the K0 partition
  std::unique_ptr<Communicator> active_dp_;  // stage-DP group of the training pipelines, when some are idle

  TrainConfig config_;
  std::unique_ptr<Communicator> own_world_;  // when no world was given
  Communicator* world_ = nullptr;
  std::unique_ptr<ProcessGroups> groups_;
  // runtime.device / runtime.precision: where this rank computes, and the
  // autocast dtype of forward passes (kFloat = plain fp32).
  torch::Device device_{torch::kCPU};
  int cuda_device_ = -1;  // this rank's GPU; -1 on CPU
  c10::ScalarType autocast_dtype_ = c10::ScalarType::Float;
  // Pipeline and stage-DP groups of a K-stage layout; on GPUs each group
  // picks NCCL or host-staged MPI (runtime/comm/group_factory.h).
  std::unique_ptr<ProcessGroups> make_groups(int stages) const;
  // A batch's tensors on this rank's device (pinned, non-blocking copies).
  Activations on_device(const Activations& inputs) const;
  std::vector<std::pair<size_t, size_t>> stage_ranges_;  // [begin, end) of every stage
  size_t stage_begin_ = 0;
  size_t stage_end_ = 0;
  int64_t micro_batch_count_ = 1;
  std::unique_ptr<FreezePolicy> freeze_;
  std::unique_ptr<GradientNormTracker> grad_tracker_;
  int num_blocks_ = 0;
  int frozen_blocks_ = 0;
  double reference_max_cost_ = 0.0;
  double cache_served_share_ = 0.0;  // the partition's estimate (autopipe.frozen_balance forward)
  std::vector<double> forward_seconds_;   // per sub-layer, when profiled
  std::vector<double> backward_seconds_;
  int64_t fault_step_ = -1;
  std::unique_ptr<MicroBatchTable> micro_batch_table_;
  std::unique_ptr<FrozenPrefixCache> frozen_cache_;  // first-stage ranks, autocache.mode != off
  std::string cache_job_id_;                         // the same on every rank of the job
  std::deque<int> tuning_queue_;     // candidates still to profile for the current K
  int tuning_steps_ = 0;             // steps run with the front candidate
  double tuning_seconds_ = 0.0;      // timed seconds of the front candidate  // PIPET_FAULT_INJECTION: fail this rank at this step
  double pipeline_seconds_ = 0.0;
  double pipeline_wait_seconds_ = 0.0;
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
  std::unique_ptr<StageExecutor> executor_;
  std::unique_ptr<GradientBuckets> buckets_;
  std::unique_ptr<BatchPrefetcher> prefetcher_;
  std::deque<std::pair<int64_t, std::vector<int64_t>>> prefetch_queue_;  // (epoch, indices) submitted
  int64_t total_steps_ = 0;
  int64_t steps_per_epoch_ = 0;
  bool scale_lr_ = false;       // autodp.batch_policy == scale_lr
  int64_t global_batch_ = 0;    // samples per step in the current layout
  double lr_scale_ = 1.0;       // R / R0 under scale_lr, else 1
  double last_lr_ = 0.0;        // the LR of the last update
  std::unique_ptr<GradientNormWindow> grad_window_;  // freeze.smoothing_window
};

}  // namespace pipet
