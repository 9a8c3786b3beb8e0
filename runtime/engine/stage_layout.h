// The layout in force on this rank (DESIGN.md §1): K stages x R replicas,
// every stage's sub-layer range and the frozen prefix, and what is built on
// them for this rank: its pipeline and stage-DP groups, the executor of its
// stage, its gradient buckets, its optimizer over the stage's trainable
// parameters, the replicas that train (autodp.enabled=false leaves some
// idle) and what the batch policy gives them (global batch, LR scale).
//
// Owned by the ElasticController, which decides when and into what it is
// rebuilt; everything else reads it.
#pragma once

#include "runtime/core/config.h"
#include "runtime/core/tensor_names.h"
#include "runtime/core/torch_pch.h"
#include "runtime/engine/autopipe_planner.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace pipet {

class Communicator;
class EpochSampler;
class GradientBuckets;
class Optimizer;
class ProcessGroups;
class StageExecutor;
class Task;
class TransformerModel;
struct ComputeDevice;

// The groups of a `stages`-stage layout of `world`. On GPUs the stage-DP
// groups take NCCL where every member has its own GPU; pipeline groups stay
// on host-staged MPI (docs/gpu.md). Collective; ConfigError when `stages`
// does not divide the ranks.
std::unique_ptr<ProcessGroups> make_process_groups(Communicator& world, const ComputeDevice& device, int stages);

// "2 stages x 2 replicas", as logs and errors name a layout.
std::string layout_text(int64_t stages, int64_t replicas);

class StageLayout {
 public:
  // `initial_groups`: the K0 groups, made before the model so that a bad
  // layout fails first. Every reference outlives the layout.
  StageLayout(const ParallelConfig& parallel, const AutoDpConfig& autodp, const TrainLoopConfig& train,
              Communicator& world, const ComputeDevice& device, TransformerModel& model, const Task& task,
              std::unique_ptr<ProcessGroups> initial_groups);
  ~StageLayout();
  StageLayout(const StageLayout&) = delete;
  StageLayout& operator=(const StageLayout&) = delete;

  // (Re)builds for `stages` stages over `ranges` with `frozen_blocks`
  // frozen: the model's requires_grad flags, the groups (when K changes),
  // executor, buckets and an optimizer restoring `optimizer_state` (may be
  // empty), the batch policy for the training replicas (the sampler takes
  // its new step size) and M: parallel.micro_batches at the configured K,
  // AutoPipe's default after a compression. Collective when K changes.
  void rebuild(int stages, int frozen_blocks, const StageRanges& ranges,
               const std::map<std::string, torch::Tensor>& optimizer_state, EpochSampler& sampler);

  ProcessGroups& groups() const { return *groups_; }
  int stages() const;
  int stage() const;
  int replica() const;
  const StageRanges& ranges() const { return ranges_; }
  size_t stage_begin() const { return ranges_.at(stage()).first; }
  size_t stage_end() const { return ranges_.at(stage()).second; }
  int frozen_blocks() const { return frozen_blocks_; }
  StageExecutor& executor() const { return *executor_; }
  GradientBuckets& buckets() const { return *buckets_; }
  Optimizer& optimizer() const { return *optimizer_; }
  // The gradient all-reduce group of this stage's training replicas.
  Communicator& replica_group() const;

  int64_t micro_batches() const { return micro_batches_; }
  void set_micro_batches(int64_t count) { micro_batches_ = count; }

  // autodp.enabled=false: the pipelines beyond the starting replica count
  // sit out. An idle rank takes no batches but joins every world collective.
  int active_replicas() const { return active_replicas_; }
  int initial_replicas() const { return initial_replicas_; }
  bool idle() const;
  int idle_ranks() const;
  // The first stage of a training pipeline: the one that reads the data
  // (and serves the frozen prefix from AutoCache).
  bool trains_first_stage() const;

  int64_t global_batch() const { return global_batch_; }  // samples per step
  double lr_scale() const { return lr_scale_; }           // R / R0 under scale_lr, else 1
  bool scale_lr() const { return scale_lr_; }

  // This rank's sub-layers' parameters, Hugging Face names, model order.
  NamedTensors stage_parameters() const;

 private:
  void set_frozen_blocks(int frozen_blocks);
  void apply_batch_policy(EpochSampler& sampler);

  ParallelConfig parallel_;
  bool autodp_enabled_ = true;
  bool scale_lr_ = false;
  TrainLoopConfig train_;
  Communicator& world_;
  const ComputeDevice& device_;
  TransformerModel& model_;
  const Task& task_;

  std::unique_ptr<ProcessGroups> groups_;
  StageRanges ranges_;
  int frozen_blocks_ = 0;
  int initial_replicas_ = 1;  // R0
  int active_replicas_ = 1;   // pipelines that train
  std::unique_ptr<Communicator> active_dp_;  // stage-DP group of the training pipelines, when some are idle
  std::unique_ptr<StageExecutor> executor_;
  std::unique_ptr<GradientBuckets> buckets_;
  std::unique_ptr<Optimizer> optimizer_;
  int64_t micro_batches_ = 1;
  int64_t global_batch_ = 0;
  double lr_scale_ = 1.0;
};

}  // namespace pipet
