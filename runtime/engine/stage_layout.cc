#include "runtime/engine/stage_layout.h"

#include <algorithm>
#include <chrono>

#include "autodp/batch_policy.h"
#include "autopipe/micro_batch.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/group_factory.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/logging.h"
#include "runtime/data/sampler.h"
#include "runtime/engine/compute_device.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/pipeline.h"
#include "runtime/model/model.h"

namespace pipet {

std::unique_ptr<ProcessGroups> make_process_groups(Communicator& world, const ComputeDevice& device, int stages) {
  if (!device.is_cuda()) return std::make_unique<ProcessGroups>(world, stages);
  // Pipeline groups stay on host-staged MPI: NCCL matches point-to-point
  // operations in issue order and a send blocks its stream until the peer
  // receives, so 1F1B's crossing activation and gradient exchanges would
  // deadlock on NCCL until the executor pairs them (docs/gpu.md); MPI
  // matches by tag and never blocks that way.
  GroupBackendOptions dp_options;
  dp_options.device = device.cuda_index;
  GroupBackendOptions pipeline_options = dp_options;
  pipeline_options.backend = CommBackend::kMpi;
  return std::make_unique<ProcessGroups>(world, stages, group_factory(pipeline_options), group_factory(dp_options));
}

std::string layout_text(int64_t stages, int64_t replicas) {
  return std::to_string(stages) + " stage" + (stages == 1 ? "" : "s") + " x " + std::to_string(replicas) +
         " replica" + (replicas == 1 ? "" : "s");
}

StageLayout::StageLayout(const ParallelConfig& parallel, const AutoDpConfig& autodp, const TrainLoopConfig& train,
                         Communicator& world, const ComputeDevice& device, TransformerModel& model, const Task& task,
                         std::unique_ptr<ProcessGroups> initial_groups)
    : parallel_(parallel),
      autodp_enabled_(autodp.enabled),
      scale_lr_(batch_policy_from_string(autodp.batch_policy, "autodp.batch_policy") == BatchPolicy::kScaleLr),
      train_(train),
      world_(world),
      device_(device),
      model_(model),
      task_(task),
      groups_(std::move(initial_groups)),
      initial_replicas_(groups_->replicas()),
      active_replicas_(groups_->replicas()),
      micro_batches_(parallel.micro_batches) {}

StageLayout::~StageLayout() = default;

int StageLayout::stages() const { return groups_->stages(); }
int StageLayout::stage() const { return groups_->stage(); }
int StageLayout::replica() const { return groups_->replica(); }
bool StageLayout::idle() const { return groups_->replica() >= active_replicas_; }
int StageLayout::idle_ranks() const { return (groups_->replicas() - active_replicas_) * groups_->stages(); }
bool StageLayout::trains_first_stage() const { return executor_->first() && !idle(); }
Communicator& StageLayout::replica_group() const { return active_dp_ ? *active_dp_ : groups_->stage_dp(); }

NamedTensors StageLayout::stage_parameters() const {
  NamedTensors out;
  for (size_t j = stage_begin(); j < stage_end(); ++j)
    for (auto& named : model_.sublayer(j).hf_parameters()) out.push_back(std::move(named));
  return out;
}

void StageLayout::set_frozen_blocks(int frozen_blocks) {
  frozen_blocks_ = frozen_blocks;
  const size_t frozen = static_cast<size_t>(frozen_sublayer_count(frozen_blocks));
  for (size_t j = 0; j < model_.num_sublayers(); ++j)
    for (auto& [name, p] : model_.sublayer(j).hf_parameters()) {
      p.requires_grad_(j >= frozen);
      if (j < frozen) p.mutable_grad() = torch::Tensor();
    }
}

void StageLayout::rebuild(int stages, int frozen_blocks, const StageRanges& ranges,
                          const std::map<std::string, torch::Tensor>& optimizer_state, EpochSampler& sampler) {
  set_frozen_blocks(frozen_blocks);
  // The old executor and buckets hold the old groups: release them first.
  buckets_.reset();
  executor_.reset();
  if (groups_->stages() != stages) {
    groups_.reset();
    groups_ = make_process_groups(world_, device_, stages);
  }
  ranges_ = ranges;
  // Without AutoDP the replica count stays R0; the other pipelines sit out
  // and the training ones reduce gradients in a group of their own.
  active_replicas_ = autodp_enabled_ ? groups_->replicas() : std::min(groups_->replicas(), initial_replicas_);
  active_dp_.reset();
  if (active_replicas_ < groups_->replicas()) {
    active_dp_ = world_.subgroup(idle() ? -1 : groups_->stage(), groups_->replica(),
                                 "stage" + std::to_string(groups_->stage()) + "-dp-active");
    if (active_dp_ && device_.is_cuda()) {  // the same backend choice as the layout's own groups
      GroupBackendOptions backend;
      backend.device = device_.cuda_index;
      active_dp_ = group_factory(backend)(std::move(active_dp_));
    }
  }
  apply_batch_policy(sampler);
  const int64_t pipeline_batch = global_batch_ / active_replicas_;
  micro_batches_ = stages == parallel_.pipeline_stages ? parallel_.micro_batches
                                                        : default_micro_batches(stages, pipeline_batch);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(parallel_.comm_timeout_s * 1000.0));
  executor_ = std::make_unique<StageExecutor>(model_, stage_begin(), stage_end(), groups_->pipeline(), task_, timeout,
                                              static_cast<size_t>(frozen_sublayer_count(frozen_blocks_)));
  executor_->use_autocast(device_.autocast_dtype);
  buckets_ = std::make_unique<GradientBuckets>(model_.sublayers(), stage_begin(), stage_end(), replica_group(),
                                               static_cast<int64_t>(parallel_.bucket_mb * 1024.0 * 1024.0));
  NamedTensors trainable;
  for (auto& [name, tensor] : stage_parameters())
    if (tensor.requires_grad()) trainable.emplace_back(name, tensor);
  optimizer_ = make_optimizer(train_, std::move(trainable));
  if (!optimizer_state.empty()) {
    const auto moved = [&](const std::string& key) {
      auto it = optimizer_state.find(key);
      return it == optimizer_state.end() ? torch::Tensor() : it->second;
    };
    optimizer_->load_state(optimizer_->slots_from(moved), "the state moved between layouts");
  }
}

void StageLayout::apply_batch_policy(EpochSampler& sampler) {
  const ReplicaBatch batch = replica_batch(scale_lr_ ? BatchPolicy::kScaleLr : BatchPolicy::kKeepGlobalBatch,
                                           train_.batch_size, initial_replicas_, active_replicas_);
  global_batch_ = batch.global;
  lr_scale_ = batch.lr_scale;
  // The sampler keeps its position: the rest of the epoch comes in the new
  // step size, with no sample repeated or skipped.
  sampler.set_batch_size(global_batch_);
  if (scale_lr_ && world_.rank() == 0)
    spdlog::info("[autodp] scale_lr: global batch {} ({} per replica x {}), LR x {:.3g}", global_batch_,
                 batch.per_replica, active_replicas_, lr_scale_);
}

}  // namespace pipet
