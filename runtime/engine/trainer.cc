#include "runtime/engine/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "autodp/batch_policy.h"
#include "autodp/state_transfer.h"
#include "autopipe/compression.h"
#include "autopipe/cost_model.h"
#include "autopipe/micro_batch.h"
#include "autopipe/partition.h"
#include "freeze/freeze_policy.h"
#include "freeze/gradient_window.h"
#include "pipet/build_config.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/group_factory.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/host.h"
#include "runtime/core/logging.h"
#include "runtime/core/strings.h"
#include "runtime/core/threads.h"
#include "runtime/core/torch_compat.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/data/sampler.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/export.h"
#include "runtime/engine/frozen_cache.h"
#include "runtime/engine/lr_schedule.h"
#include "runtime/engine/metrics.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/pipeline.h"
#include "runtime/engine/stop_signal.h"
#include "runtime/model/model.h"

namespace pipet {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string resolve_in(const std::string& dir, const std::string& file) {
  if (file.empty()) return "";
  if (std::filesystem::path(file).is_absolute()) return file;
  return dir + "/" + file;
}

// The architecture fields of two config.json files that differ, as
// "hidden_size 384 vs 64" items (id2label and dtype notes do not count).
std::string architecture_differences(const nlohmann::json& stored, const nlohmann::json& current) {
  std::string out;
  for (const auto& [key, value] : current.items()) {
    if (key == "id2label" || key == "label2id" || key == "transformers_version" || key == "torch_dtype") continue;
    const nlohmann::json other = stored.contains(key) ? stored.at(key) : nlohmann::json();
    if (other != value) {
      out += (out.empty() ? "" : ", ") + key + " " + (other.is_null() ? "missing" : other.dump()) +
             " in the checkpoint vs " + value.dump() + " configured";
    }
  }
  return out;
}

NamedTensors rng_state() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return {{"torch_cpu", generator.get_state()}};
}

void restore_rng(const std::map<std::string, torch::Tensor>& rng, const std::string& source) {
  auto it = rng.find("torch_cpu");
  if (it == rng.end()) throw FormatError(source + ": random generator state 'torch_cpu' is missing");
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(it->second);
  } catch (const c10::Error& e) {
    throw FormatError(source + ": random generator state 'torch_cpu' is invalid: " + e.what_without_backtrace());
  }
}


// Rows [begin, begin + length) of every defined tensor of a batch's inputs.
Activations slice_inputs(const Activations& in, int64_t begin, int64_t length) {
  Activations out;
  out.hidden = in.hidden.narrow(0, begin, length);
  if (in.attention_mask.defined()) out.attention_mask = in.attention_mask.narrow(0, begin, length);
  if (in.token_type_ids.defined()) out.token_type_ids = in.token_type_ids.narrow(0, begin, length);
  return out;
}

std::chrono::milliseconds comm_timeout(const TrainConfig& config) {
  return std::chrono::milliseconds(static_cast<int64_t>(config.parallel.comm_timeout_s * 1000.0));
}

// A string from `root` to every rank of `group` (length first, then bytes).
std::string broadcast_string(Communicator& group, const std::string& text, int root) {
  torch::Tensor length = torch::tensor({static_cast<int64_t>(text.size())}, torch::kInt64);
  group.broadcast(length, {root});
  torch::Tensor bytes = torch::empty({length.item<int64_t>()}, torch::kUInt8);
  if (group.rank() == root && !text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  group.broadcast(bytes, {root});
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()), bytes.numel());
}

// Every rank's 1-D tensor (lengths may differ), in rank order.
std::vector<torch::Tensor> all_gather_variable(Communicator& group, const torch::Tensor& local) {
  torch::Tensor length = torch::tensor({local.numel()}, torch::kInt64);
  const torch::Tensor lengths = group.all_gather(length).reshape({-1});
  const int64_t longest = lengths.max().item<int64_t>();
  torch::Tensor padded = torch::zeros({longest}, local.options());
  padded.narrow(0, 0, local.numel()).copy_(local);
  const torch::Tensor gathered = group.all_gather(padded);
  std::vector<torch::Tensor> out;
  for (int64_t r = 0; r < group.size(); ++r)
    out.push_back(gathered[r].narrow(0, 0, lengths[r].item<int64_t>()));
  return out;
}

// The first rank of this host (Open MPI's local rank), which writes the
// host's copy of shared files such as checkpoint manifests.
bool local_rank_leader(int world_rank) {
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) return std::string(local) == "0";
  return world_rank == 0;
}

// The epoch's share of frozen-prefix outputs read from the cache (0 without
// a cache or frozen prefix); not the cache's own hit counter, which also
// counts the read-back probes while the cache is off.
double served_from_cache_since(const FrozenPrefixCache* cache, const FrozenPrefixCache::ServedCounts& before) {
  if (!cache) return 0.0;
  const FrozenPrefixCache::ServedCounts now = cache->served();
  const int64_t from_cache = now.from_cache - before.from_cache;
  const int64_t total = from_cache + now.computed - before.computed;
  return total > 0 ? static_cast<double>(from_cache) / static_cast<double>(total) : 0.0;
}

// This rank's part of advancing its node's AutoCache entries at a freeze
// change: the members (first-stage ranks that train, so they hold the
// current weights of the whole frozen prefix) on one host split the entries
// by sample, shard i of n taking the samples with sample % n == i, in world
// rank order; count 0 for a non-member. A host's ranks are those with equal
// host_identity().key (host name and boot id; Open MPI's local size serves
// only as a check). Collective over `world`. Every shard
// reads only its own keys and the leftovers are dropped only after every
// shard is done, so a wrong grouping could only duplicate work or leave
// entries to be recomputed.
struct AdvanceShard {
  size_t index = 0;
  size_t count = 0;
  int nodes = 0;  // hosts with at least one member, in the whole job
};

AdvanceShard node_advance_shard(Communicator& world, bool member) {
  const int64_t host = static_cast<int64_t>(host_identity().key);
  const torch::Tensor mine = torch::tensor({host, static_cast<int64_t>(member)}, torch::kInt64);
  const torch::Tensor all = world.all_gather(mine).reshape({world.size(), 2});
  const int64_t* rows = all.data_ptr<int64_t>();
  AdvanceShard shard;
  std::vector<int64_t> member_hosts;
  int64_t ranks_here = 0;
  for (int r = 0; r < world.size(); ++r) {
    const int64_t key = rows[2 * r];
    const bool is_member = rows[2 * r + 1] != 0;
    if (key == host) ++ranks_here;
    if (is_member && std::find(member_hosts.begin(), member_hosts.end(), key) == member_hosts.end())
      member_hosts.push_back(key);
    if (key != host || !is_member) continue;
    if (r < world.rank()) ++shard.index;
    ++shard.count;
  }
  shard.nodes = static_cast<int>(member_hosts.size());
  if (!member) shard = AdvanceShard{0, 0, shard.nodes};
  if (const char* local_size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    if (std::to_string(ranks_here) != local_size)
      spdlog::warn("[autocache] {} ranks of the job share this rank's host name and boot id, but Open MPI places {} "
                   "on this host: the cache advance may be split unevenly (values stay correct)",
                   ranks_here, local_size);
  }
  return shard;
}

// PIPET_FAULT_INJECTION="rank=R,step=S": rank R throws during step S. A
// testing aid for the failure path of multi-rank jobs (every rank must end
// promptly with the failing rank's message); -1 when unset or another rank.
int64_t injected_fault_step(int world_rank) {
  const char* spec = std::getenv("PIPET_FAULT_INJECTION");
  if (!spec || !*spec) return -1;
  long long rank = -1, step = -1;
  if (std::sscanf(spec, "rank=%lld,step=%lld", &rank, &step) != 2 || rank < 0 || step < 1)
    throw ConfigError(std::string("PIPET_FAULT_INJECTION '") + spec + "' is not of the form rank=R,step=S");
  return rank == world_rank ? step : -1;
}

std::string layout_text(int stages, int replicas) {
  return std::to_string(stages) + " stage" + (stages == 1 ? "" : "s") + " x " +
         std::to_string(replicas) + " replica" + (replicas == 1 ? "" : "s");
}

}  // namespace

Trainer::Trainer(const TrainConfig& config, Communicator* world)
    : config_(config), world_(world), state_(std::make_unique<TrainerState>()) {
  validate_config(config_);
  if (!world_) {
    own_world_ = std::make_unique<LocalCommunicator>("world");
    world_ = own_world_.get();
  }
  world_->set_default_timeout(comm_timeout(config_));
  fault_step_ = injected_fault_step(world_->rank());
  if (config_.runtime.device == "cuda") {
    // Checked before any group exists: the groups' backends depend on it.
    const int visible = static_cast<int>(torch::cuda::device_count());
    if (!PIPET_WITH_CUDA || visible == 0) {
      throw ConfigError("runtime.device: 'cuda' on rank " + std::to_string(world_->rank()) + ", but " +
                        (PIPET_WITH_CUDA ? std::string("this process sees no CUDA device")
                                         : std::string("this build has no GPU path (configure with "
                                                       "PIPET_WITH_CUDA=ON against a CUDA LibTorch; "
                                                       "docs/gpu.md)")));
    }
    cuda_device_ = local_rank_on_this_node() % visible;
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(cuda_device_));
  }
  if (config_.runtime.precision == "bf16") autocast_dtype_ = torch::kBFloat16;
  groups_ = make_groups(static_cast<int>(config_.parallel.pipeline_stages));
  const int64_t replicas = groups_->replicas();
  micro_batch_count_ = config_.parallel.micro_batches;
  if (config_.train.batch_size % (replicas * micro_batch_count_) != 0) {
    throw ConfigError("train.batch_size " + std::to_string(config_.train.batch_size) +
                      " must split evenly into " + std::to_string(replicas) +
                      " data-parallel pipelines x parallel.micro_batches " +
                      std::to_string(micro_batch_count_) + " micro-batches; use a multiple of " +
                      std::to_string(replicas * micro_batch_count_));
  }
  const int threads = configure_threads(config_.runtime.threads);

  // The data shape depends on the architecture, not on the class count.
  const ModelSpec shape_spec = resolve_model_spec(config_.model, /*dataset_num_labels=*/1);
  DataShape shape;
  shape.image_size = shape_spec.image_size;
  shape.num_channels = shape_spec.num_channels;
  shape.vocab_size = shape_spec.vocab_size;
  shape.max_seq_len = shape_spec.max_position_embeddings;
  DatasetSplits splits = make_datasets(config_.data, shape, config_.train.seed);
  train_data_ = splits.train;
  eval_data_ = splits.eval;
  task_ = make_task(config_, eval_data_);
  {
    const std::string watched = config_.eval.early_stop_metric.substr(5);  // drops "eval_"
    const std::vector<std::string> known = task_->metric_names();
    if (config_.eval.early_stop_patience > 0 &&
        std::find(known.begin(), known.end(), watched) == known.end())
      throw ConfigError("eval.early_stop_metric '" + config_.eval.early_stop_metric +
                        "' is not reported by the " + task_->name() + " task; it reports eval_" +
                        join(known, ", eval_"));
  }

  ModelSpec spec = resolve_model_spec(config_.model, train_data_->num_classes());
  if (spec.num_labels < train_data_->num_classes()) {
    throw ConfigError("model.num_labels: " + std::to_string(spec.num_labels) + " classes, but dataset '" +
                      train_data_->name() + "' has " + std::to_string(train_data_->num_classes()) +
                      " (set model.num_labels to 0 to take the dataset's)");
  }
  if (spec.id2label.empty()) spec.id2label = train_data_->class_names();
  if (static_cast<int64_t>(spec.id2label.size()) != spec.num_labels) spec.id2label.clear();

  torch::manual_seed(config_.train.seed);
  model_ = std::make_shared<TransformerModel>(spec);
  if (!config_.model.init_from.empty()) init_from_pretrained(*model_, config_.model.init_from);
  // Built and initialised on the CPU (the same draws on every device), then moved.
  if (device_.is_cuda()) model_->to(device_);

  if (static_cast<size_t>(groups_->stages()) > model_->num_sublayers()) {
    throw ConfigError("parallel.pipeline_stages " + std::to_string(groups_->stages()) + " exceeds the " +
                      std::to_string(model_->num_sublayers()) + " sub-layers of model " + spec.preset);
  }
  num_blocks_ = static_cast<int>(spec.num_layers);
  scale_lr_ = batch_policy_from_string(config_.autodp.batch_policy, "autodp.batch_policy") == BatchPolicy::kScaleLr;
  if (config_.freeze.policy != "none") {
    FreezeOptions options;
    options.mode = freeze_mode_from_string(config_.freeze.policy, "freeze.policy");
    options.alpha = config_.freeze.alpha;
    options.warmup_decisions = static_cast<int>(config_.freeze.warmup_decisions);
    options.max_frozen_fraction = config_.freeze.max_fraction;
    for (double count : config_.freeze.manual) options.manual_schedule.push_back(static_cast<int>(count));
    freeze_ = std::make_unique<FreezePolicy>(options, num_blocks_);
    grad_tracker_ = std::make_unique<GradientNormTracker>(num_blocks_);
    grad_window_ = std::make_unique<GradientNormWindow>(num_blocks_, static_cast<int>(config_.freeze.smoothing_window));
    // Compression can end at one stage with every rank a replica.
    const int64_t largest_batch = config_.train.batch_size / groups_->replicas() * world_->size();
    if (scale_lr_ && config_.autodp.enabled && largest_batch > train_data_->size()) {
      throw ConfigError("autodp.batch_policy scale_lr: the global batch grows to " + std::to_string(largest_batch) +
                        " samples when the pipeline compresses to one stage on " + std::to_string(world_->size()) +
                        " ranks, more than the " + std::to_string(train_data_->size()) +
                        " training samples; lower train.batch_size or use keep_global_batch");
    }
    if (!scale_lr_ && config_.train.batch_size % (world_->size()) != 0) {
      throw ConfigError("train.batch_size " + std::to_string(config_.train.batch_size) +
                        " must be divisible by the " + std::to_string(world_->size()) +
                        " ranks when freezing is on: the pipeline may compress to one stage with a "
                        "replica on every rank");
    }
  }
  // AutoPipe's yardstick: the largest stage of the full model over K0 stages.
  if (config_.autopipe.tune_micro_batches) load_micro_batch_table();
  if (config_.autocache.mode != "off" && freeze_) {
    // One cache per node and job: rank 0 names it, everyone uses the name.
    std::string job_id = "job" + std::to_string(::getpid()) + "-" +
                         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    cache_job_id_ = world_->size() > 1 ? broadcast_string(*world_, job_id, 0) : job_id;
  }
  if (config_.autopipe.cost == "measured") profile_sublayer_costs();
  reference_max_cost_ = reference_max_stage_cost(costs_for(0, CostUse::kCompression), groups_->stages(),
                                                 static_cast<PartitionMethod>(partition_method()));
  apply_layout(groups_->stages(), {});

  sampler_ = std::make_unique<EpochSampler>(train_data_->size(), config_.train.batch_size,
                                            config_.train.seed, /*shuffle=*/true, /*drop_last=*/true);
  steps_per_epoch_ = sampler_->batches_per_epoch();
  total_steps_ = steps_per_epoch_ * config_.train.epochs;
  if (config_.train.max_steps > 0) total_steps_ = std::min(total_steps_, config_.train.max_steps);
  schedule_ = std::make_unique<LrSchedule>(config_.train, total_steps_);

  // Rank 0 speaks for the job: metrics, summary and the exported model.
  if (is_rank0()) {
    ensure_writable_directory(config_.output.dir, "output.dir");
    metrics_ = std::make_unique<MetricsLog>(resolve_in(config_.output.dir, config_.output.metrics_file),
                                            /*print_to_stdout=*/true);
  } else {
    metrics_ = std::make_unique<MetricsLog>("", /*print_to_stdout=*/false);
  }
  if (!config_.checkpoint.dir.empty()) {
    // One directory per rank (a single rank uses checkpoint.dir itself), so
    // hosts without a shared filesystem each hold their own ranks' parts.
    std::string rank_dir = config_.checkpoint.dir;
    if (world_->size() > 1) rank_dir += "/" + rank_directory_name(world_->rank());
    checkpointer_ = std::make_unique<Checkpointer>(rank_dir, config_.checkpoint.keep);
  }
  if (config_.checkpoint.resume != "never") resume_from(config_.checkpoint.resume);
  // A run resumed with a frozen prefix decides about AutoCache now (a fresh
  // process has no timings: a probe batch), not only at the next decision
  // point, which may be an epoch away.
  if (frozen_blocks_ > 0) decide_cache_for_interval();

  int64_t parameters = 0;
  for (const auto& sublayer : model_->sublayers()) parameters += sublayer->parameter_count();
  spdlog::info("[train] model {}: {} sub-layers, {} parameters; data {}: {} train / {} eval samples; "
               "{} steps ({} per epoch), batch {}, {} threads, OpenMP wait policy {}",
               spec.preset, model_->num_sublayers(), parameters, train_data_->name(), train_data_->size(),
               eval_data_ ? eval_data_->size() : 0, total_steps_, steps_per_epoch_,
               config_.train.batch_size, threads, openmp_wait_policy_description());
}

Trainer::~Trainer() = default;

std::unique_ptr<ProcessGroups> Trainer::make_groups(int stages) const {
  if (!device_.is_cuda()) return std::make_unique<ProcessGroups>(*world_, stages);
  // Stage-DP groups (gradient all-reduce) take NCCL where every member has
  // its own GPU. Pipeline groups stay on host-staged MPI: NCCL matches
  // point-to-point operations in issue order and a send blocks its stream
  // until the peer receives, so 1F1B's crossing activation and gradient
  // exchanges would deadlock on NCCL until the executor pairs them
  // (docs/gpu.md); MPI matches by tag and never blocks that way.
  GroupBackendOptions dp_options;
  dp_options.device = cuda_device_;
  GroupBackendOptions pipeline_options = dp_options;
  pipeline_options.backend = CommBackend::kMpi;
  return std::make_unique<ProcessGroups>(*world_, stages, group_factory(pipeline_options),
                                         group_factory(dp_options));
}

Activations Trainer::on_device(const Activations& inputs) const {
  if (!device_.is_cuda()) return inputs;
  // Page-locked host memory lets the copy run asynchronously on the current
  // stream, ordered before the forward pass that reads it.
  const auto move = [&](const torch::Tensor& t) {
    if (!t.defined() || t.device() == device_) return t;
    return t.pin_memory().to(device_, /*non_blocking=*/true);
  };
  Activations out = inputs;
  out.hidden = move(inputs.hidden);
  out.attention_mask = move(inputs.attention_mask);
  out.token_type_ids = move(inputs.token_type_ids);
  return out;
}

TransformerModel& Trainer::model() { return *model_; }
const TrainerState& Trainer::state() const { return *state_; }
std::pair<size_t, size_t> Trainer::stage_range() const { return {stage_begin_, stage_end_}; }
bool Trainer::is_rank0() const { return world_->rank() == 0; }

NamedTensors Trainer::stage_parameters() const {
  NamedTensors out;
  for (size_t j = stage_begin_; j < stage_end_; ++j)
    for (auto& named : model_->sublayer(j).hf_parameters()) out.push_back(std::move(named));
  return out;
}

void Trainer::resume_from(const std::string& path_or_auto) {
  // Which checkpoint: an explicit path (single rank) or the newest step that
  // every rank holds complete, agreed over the world.
  std::vector<std::string> candidates;
  if (path_or_auto != "auto") {
    if (world_->size() > 1)
      throw ConfigError("checkpoint.resume: a path names one rank's checkpoint; a " +
                        std::to_string(world_->size()) +
                        "-rank job resumes with 'auto' from checkpoint.dir");
    candidates.push_back(path_or_auto);
  } else if (checkpointer_) {
    std::vector<std::string> own = checkpointer_->list();
    if (world_->size() > 1) {
      // Newest first, at most 64 steps per rank, -1 padded.
      constexpr int64_t kSlots = 64;
      torch::Tensor steps = torch::full({kSlots}, -1, torch::kInt64);
      int64_t slot = 0;
      for (auto it = own.rbegin(); it != own.rend() && slot < kSlots; ++it) {
        const int64_t step = checkpoint_step_of(*it);
        if (step >= 0 && checkpoint_manifest_exists(config_.checkpoint.dir, step))
          steps[slot++] = step;
      }
      const torch::Tensor all = world_->all_gather(steps);
      std::vector<std::string> agreed;
      for (int64_t i = 0; i < kSlots; ++i) {
        const int64_t step = all[world_->rank()][i].item<int64_t>();
        if (step < 0) break;
        if (all.eq(step).any(1).all().item<bool>())
          agreed.push_back(checkpointer_->dir() + "/" + checkpoint_directory_name(step));
      }
      candidates = agreed;
    } else {
      candidates.assign(own.rbegin(), own.rend());
    }
  }

  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string& path = candidates[i];
    std::optional<LoadedCheckpoint> checkpoint;
    std::string failure;
    try {
      checkpoint = Checkpointer::load(path);
    } catch (const IoError& e) {
      if (path_or_auto != "auto") throw;
      failure = e.what();
    }
    // Every rank must resume from the same step: one failure moves all of
    // them to the next older candidate.
    torch::Tensor failed = torch::tensor({failure.empty() ? 0.0 : 1.0}, torch::kDouble);
    world_->all_reduce(failed);
    if (failed.item<double>() > 0) {
      if (!failure.empty()) spdlog::warn("[checkpoint] skipping {}: {}", path, failure);
      continue;
    }
    const TrainerState& saved = checkpoint->state;
    if (world_->size() > 1) {
      const nlohmann::json manifest = read_checkpoint_manifest(config_.checkpoint.dir, saved.step);
      const int64_t stages = manifest.value("pipeline_stages", int64_t{-1});
      const int64_t ranks = manifest.value("world_size", int64_t{-1});
      // Freezing may have compressed the pipeline: the checkpoint's K is
      // valid when it divides the same rank count.
      const bool elastic_layout = freeze_ && stages == saved.pipeline_stages && stages >= 1 &&
                                  stages <= groups_->stages();
      if (ranks != world_->size() || (stages != groups_->stages() && !elastic_layout)) {
        throw ConfigError("checkpoint.dir '" + config_.checkpoint.dir + "' holds step " +
                          std::to_string(saved.step) + " written by " +
                          std::to_string(ranks) + " ranks as " +
                          layout_text(static_cast<int>(stages), static_cast<int>(ranks / std::max<int64_t>(stages, 1))) +
                          ", but this job is " + std::to_string(world_->size()) + " ranks as " +
                          layout_text(groups_->stages(), groups_->replicas()) +
                          "; resume with the same parallel.pipeline_stages and rank count");
      }
    }
    if (saved.frozen_prefix != 0 || saved.pipeline_stages != groups_->stages()) {
      if (!freeze_)
        throw ConfigError("checkpoint '" + path + "' has " + std::to_string(saved.frozen_prefix) +
                          " frozen blocks; resume it with the same freeze.policy");
      // The layout the parts were written in, before loading them.
      set_frozen_blocks(static_cast<int>(saved.frozen_prefix));
      cache_served_share_ = saved.cache_served_share;
      apply_layout(static_cast<int>(saved.pipeline_stages), {});
    }
    if (freeze_) {
      FreezeState restored;
      restored.decisions = static_cast<int>(saved.freeze_decisions);
      restored.frozen = static_cast<int>(saved.frozen_prefix);
      restored.bound = saved.freeze_bound;
      freeze_->restore(restored);
    }
    const std::string differences =
        architecture_differences(checkpoint->model_config, hf_config_json(model_->spec()));
    if (!differences.empty()) {
      throw ModelError("checkpoint '" + path + "' was written for a different model: " + differences);
    }
    if (checkpoint->optimizer_name != optimizer_->name()) {
      throw ConfigError("train.optimizer: the checkpoint '" + path + "' holds " + checkpoint->optimizer_name +
                        " state but the configuration asks for " + optimizer_->name());
    }
    if (freeze_) {
      // The statistics the next decisions see: this rank's open interval and
      // the smoothing window's past intervals, so they decide as uninterrupted.
      std::vector<GradientNormWindow::Interval> window;
      for (size_t i = 0; i < saved.freeze_window_sums.size(); ++i)
        window.push_back({saved.freeze_window_sums[i], saved.freeze_window_steps[i]});
      try {
        if (!saved.freeze_interval_sums.empty())
          grad_tracker_->restore(saved.freeze_interval_sums, saved.freeze_interval_steps);
        grad_window_->restore(window);
      } catch (const ConfigError& e) {
        throw FormatError(path + "/trainer_state.json: " + e.what());
      }
    }
    if (saved.batch_policy != config_.autodp.batch_policy) {
      throw ConfigError("autodp.batch_policy: checkpoint '" + path + "' was written with " + saved.batch_policy +
                        " but the configuration asks for " + config_.autodp.batch_policy +
                        "; resume with the same policy (it decides the batch and LR of every layout)");
    }
    // The LR schedule and the run's length count steps of the saved batch
    // (keep_global_batch) or samples in steps of it (scale_lr): another
    // batch would silently shift both. Checkpoints from before the batch was
    // recorded (0) are taken as they are.
    if (saved.global_batch != 0 && saved.global_batch != global_batch_) {
      throw ConfigError("train.batch_size: checkpoint '" + path + "' trained with a global batch of " +
                        std::to_string(saved.global_batch) + " in this layout, the configuration gives " +
                        std::to_string(global_batch_) + " (autodp.batch_policy " + config_.autodp.batch_policy +
                        "); resume with the same train.batch_size");
    }
    // This rank's sub-layers: exactly the tensors the checkpoint part holds.
    const std::string model_file = path + "/model.safetensors";
    std::vector<std::string> missing;
    size_t matched = 0;
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, param] : stage_parameters()) {
        auto it = checkpoint->model.find(name);
        if (it == checkpoint->model.end()) {
          missing.push_back(name);
          continue;
        }
        if (!it->second.sizes().equals(param.sizes()))
          throw ModelError(model_file + ": tensor '" + name + "' has shape " + shape_string(it->second.sizes()) +
                           ", the model expects " + shape_string(param.sizes()));
        param.copy_(it->second);
        ++matched;
      }
    }
    if (!missing.empty() || matched != checkpoint->model.size()) {
      throw ModelError(model_file + " does not hold exactly the sub-layers of stage " +
                       std::to_string(groups_->stage()) + " (" + std::to_string(missing.size()) +
                       " missing, e.g. '" + (missing.empty() ? std::string("-") : missing.front()) + "'; " +
                       std::to_string(checkpoint->model.size() - matched) +
                       " unexpected); was it written with another layout?");
    }
    optimizer_->load_state(checkpoint->optimizer, path + "/optimizer.safetensors");
    restore_rng(checkpoint->rng, path + "/rng.safetensors");
    *state_ = checkpoint->state;
    if (is_rank0())
      spdlog::info("[checkpoint] resumed from {} at step {}, epoch {} (+{} samples)", path, state_->step,
                   state_->epoch, state_->sampler_position);
    return;
  }
  if (!candidates.empty())
    throw IoError("checkpoint.dir '" + config_.checkpoint.dir + "': none of the " +
                  std::to_string(candidates.size()) + " checkpoints could be loaded (see the warnings above)");
}


bool Trainer::partition_counts_frozen_forward() const {
  const std::string& balance = config_.autopipe.frozen_balance;
  return balance == "forward" ||
         (balance == "auto" && parse_pipeline_schedule(config_.parallel.schedule) == PipelineSchedule::kOneFOneB);
}

void Trainer::estimate_cache_served_share(int before) {
  // Every rank takes the same branch (config and f agree everywhere).
  cache_served_share_ = 0.0;
  if (!partition_counts_frozen_forward() || cache_job_id_.empty() || before == 0) return;
  // The node's entries at the old depth, all about to be advanced to the new
  // one, over the samples x views a first stage draws from; averaged over the
  // serving ranks (weighting each node by its first stages) so that every
  // rank plans from the same number. An auto cache that is off serves none.
  double share = 0.0;
  double serving = 0.0;
  if (frozen_cache_ && serves_frozen_prefix()) {
    serving = 1.0;
    if (frozen_cache_->mode() == CacheMode::kOn || frozen_cache_->enabled()) {
      const double drawn = static_cast<double>(train_data_->size()) * static_cast<double>(config_.autocache.views);
      const double entries =
          static_cast<double>(frozen_cache_->entries_at(static_cast<size_t>(frozen_sublayer_count(before))));
      share = drawn > 0 ? std::min(1.0, entries / drawn) : 0.0;
    }
  }
  torch::Tensor sums = torch::tensor({share, serving}, torch::kDouble);
  world_->all_reduce(sums);
  const double ranks = sums[1].item<double>();
  cache_served_share_ = ranks > 0 ? std::clamp(sums[0].item<double>() / ranks, 0.0, 1.0) : 0.0;
}

std::vector<double> Trainer::costs_for(int frozen_blocks, CostUse use) const {
  std::vector<SubLayerCost> records;
  for (const auto& sublayer : model_->sublayers()) {
    SubLayerCost cost;
    cost.name = sublayer->display_name();
    cost.parameters = sublayer->parameter_count();
    if (!forward_seconds_.empty()) {
      cost.forward_seconds = forward_seconds_[records.size()];
      cost.backward_seconds = backward_seconds_[records.size()];
    }
    records.push_back(cost);
  }
  records = with_frozen_blocks(std::move(records), frozen_blocks);
  CostModelOptions options;
  options.basis = forward_seconds_.empty() ? CostBasis::kParameters : CostBasis::kMeasuredTime;
  options.frozen_cost_factor = config_.autopipe.frozen_cost;
  if (use == CostUse::kCompression) return balance_costs(records, options);
  if (partition_counts_frozen_forward()) {
    options.frozen_balance = FrozenBalance::kForward;
    options.served_share = cache_served_share_;
  }
  return partition_costs(records, options);
}

void Trainer::profile_sublayer_costs() {
  // One micro-batch of the starting layout, through every sub-layer in turn;
  // each timed twice, the faster kept (the first run pays for allocation).
  const int64_t rows = std::max<int64_t>(
      1, config_.train.batch_size / (groups_->replicas() * micro_batch_count_));
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < rows; ++i) indices.push_back(i % train_data_->size());
  const Activations inputs = on_device(batch_inputs(train_data_->get_batch(indices, 0)));
  const size_t count = model_->num_sublayers();
  // On a GPU the kernels run asynchronously: a timer reads the device's
  // time only after a synchronisation.
  const auto device_done = [&] {
    if (device_.is_cuda()) torch::cuda::synchronize(cuda_device_);
  };
  std::vector<double> forward(count, 0.0), backward(count, 0.0);
  // Eval mode: no dropout, so the profile draws nothing from the generator
  // the training run's dropout uses.
  model_->eval();
  for (int repeat = 0; repeat < 2; ++repeat) {
    Activations a = inputs;
    for (size_t j = 0; j < count; ++j) {
      if (a.hidden.is_floating_point()) a.hidden = a.hidden.detach().requires_grad_(true);
      device_done();
      const auto started = Clock::now();
      Activations out;
      {
        // The precision training runs in (bf16 autocast changes the costs).
        AutocastGuard autocast(device_.type(), autocast_dtype_);
        out = model_->sublayer(j).forward(a);
      }
      device_done();
      const double forward_seconds = seconds_since(started);
      const auto backward_started = Clock::now();
      torch::autograd::backward({out.hidden.sum()});
      device_done();
      const double backward_seconds = seconds_since(backward_started);
      forward[j] = repeat == 0 ? forward_seconds : std::min(forward[j], forward_seconds);
      backward[j] = repeat == 0 ? backward_seconds : std::min(backward[j], backward_seconds);
      out.hidden = out.hidden.detach();
      a = out;
    }
  }
  model_->train();
  for (auto& [name, p] : model_->hf_parameters()) p.mutable_grad() = torch::Tensor();
  // Averaged over the world: every rank must plan from the same numbers.
  std::vector<double> both(forward);
  both.insert(both.end(), backward.begin(), backward.end());
  torch::Tensor totals = torch::tensor(both, torch::kDouble);
  world_->all_reduce(totals);
  totals.div_(static_cast<double>(world_->size()));
  const double* t = totals.data_ptr<double>();
  forward_seconds_.assign(t, t + count);
  backward_seconds_.assign(t + count, t + 2 * count);
  if (is_rank0()) {
    std::string text;
    for (size_t j = 0; j < count; ++j)
      text += fmt::format("{}{} {:.2f}+{:.2f} ms", j ? ", " : "", model_->sublayer(j).display_name(),
                          forward_seconds_[j] * 1e3, backward_seconds_[j] * 1e3);
    spdlog::info("[autopipe] measured forward+backward per sub-layer ({} rows): {}", rows, text);
  }
}

// Sub-layers stage 0 holds for f frozen blocks: the frozen prefix and the
// first trainable sub-layer after it. AutoPipe always pins them (the paper's
// layout, which AutoCache needs: the cache replaces the prefix's forward on
// stage 0 and the next sub-layer takes its output); without AutoPipe only
// when AutoCache may serve (fixed_ranges).
namespace {
int pinned_sublayers(int frozen_blocks) {
  return frozen_blocks > 0 ? frozen_sublayer_count(frozen_blocks) + 1 : 0;
}
}  // namespace

int Trainer::partition_method() const {
  return static_cast<int>(partition_method_from_string(config_.autopipe.partition, "autopipe.partition"));
}

void Trainer::set_frozen_blocks(int frozen_blocks) {
  frozen_blocks_ = frozen_blocks;
  const size_t frozen = static_cast<size_t>(frozen_sublayer_count(frozen_blocks));
  for (size_t j = 0; j < model_->num_sublayers(); ++j)
    for (auto& [name, p] : model_->sublayer(j).hf_parameters()) {
      p.requires_grad_(j >= frozen);
      if (j < frozen) p.mutable_grad() = torch::Tensor();
    }
}

namespace {
std::vector<std::pair<size_t, size_t>> ranges_of(const std::vector<Stage>& plan) {
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const Stage& stage : plan) ranges.emplace_back(static_cast<size_t>(stage.begin), static_cast<size_t>(stage.end));
  return ranges;
}

std::vector<Stage> stages_of(const std::vector<std::pair<size_t, size_t>>& ranges, const std::vector<double>& costs) {
  std::vector<Stage> plan;
  for (const auto& [begin, end] : ranges) {
    Stage stage;
    stage.begin = static_cast<int>(begin);
    stage.end = static_cast<int>(end);
    for (size_t j = begin; j < end; ++j) stage.cost += costs[j];
    plan.push_back(stage);
  }
  return plan;
}
}  // namespace

std::vector<std::pair<size_t, size_t>> Trainer::fixed_ranges(int stages, int frozen_blocks) const {
  if (static_cast<size_t>(stages) != initial_ranges_.size()) return {};
  const size_t count = model_->num_sublayers();
  // Without the cache nothing needs the frozen prefix on stage 0: a stage
  // whose sub-layers froze runs them forward only, and no state moves.
  const bool cache_may_serve = config_.autocache.mode != "off";
  const size_t pinned = cache_may_serve ? static_cast<size_t>(pinned_sublayers(frozen_blocks)) : 0;
  std::vector<size_t> begins;
  for (const auto& range : initial_ranges_) begins.push_back(range.first);
  for (size_t s = 1; s < begins.size(); ++s) {
    begins[s] = std::max(begins[s], begins[s - 1] + 1);
    if (s == 1) begins[s] = std::max(begins[s], pinned);
  }
  if (begins.back() >= count) return {};
  std::vector<std::pair<size_t, size_t>> ranges;
  for (size_t s = 0; s < begins.size(); ++s)
    ranges.emplace_back(begins[s], s + 1 < begins.size() ? begins[s + 1] : count);
  return ranges;
}

std::vector<std::pair<size_t, size_t>> Trainer::plan_ranges(int stages, int frozen_blocks) const {
  if (!config_.autopipe.enabled) {
    std::vector<std::pair<size_t, size_t>> fixed = fixed_ranges(stages, frozen_blocks);
    if (!fixed.empty()) return fixed;
  }
  return ranges_of(partition(costs_for(frozen_blocks, CostUse::kPartition), stages,
                             static_cast<PartitionMethod>(partition_method()), pinned_sublayers(frozen_blocks)));
}

void Trainer::apply_layout(int stages, const std::map<std::string, torch::Tensor>& optimizer_state) {
  // Old executor and buckets hold the old groups: release them first.
  buckets_.reset();
  executor_.reset();
  if (!groups_ || groups_->stages() != stages) {
    groups_.reset();
    groups_ = make_groups(stages);
  }
  const std::vector<Stage> plan =
      stages_of(plan_ranges(stages, frozen_blocks_), costs_for(frozen_blocks_, CostUse::kPartition));
  const size_t frozen_end = static_cast<size_t>(frozen_sublayer_count(frozen_blocks_));
  stage_ranges_ = ranges_of(plan);
  std::tie(stage_begin_, stage_end_) = stage_ranges_.at(groups_->stage());
  if (initial_ranges_.empty()) {  // the starting layout (K0, nothing frozen)
    initial_ranges_ = stage_ranges_;
    initial_replicas_ = groups_->replicas();
  }
  // Without AutoDP the replica count stays R0; the other pipelines sit out
  // and the training ones reduce gradients in a group of their own.
  active_replicas_ = config_.autodp.enabled ? groups_->replicas() : std::min(groups_->replicas(), initial_replicas_);
  active_dp_.reset();
  if (active_replicas_ < groups_->replicas()) {
    active_dp_ = world_->subgroup(idle() ? -1 : groups_->stage(), groups_->replica(),
                                  "stage" + std::to_string(groups_->stage()) + "-dp-active");
    if (active_dp_ && device_.is_cuda()) {  // the same backend choice as the layout's own groups
      GroupBackendOptions backend;
      backend.device = cuda_device_;
      active_dp_ = group_factory(backend)(std::move(active_dp_));
    }
  }
  apply_batch_policy();
  // M: the configured count at the configured K; after a compression the
  // AutoPipe default for the new K and per-pipeline batch.
  const int64_t pipeline_batch = global_batch_ / active_replicas_;
  micro_batch_count_ = stages == config_.parallel.pipeline_stages
                           ? config_.parallel.micro_batches
                           : default_micro_batches(stages, pipeline_batch);
  executor_ = std::make_unique<StageExecutor>(*model_, stage_begin_, stage_end_, groups_->pipeline(), *task_,
                                              comm_timeout(config_), frozen_end);
  executor_->use_autocast(autocast_dtype_);
  buckets_ = std::make_unique<GradientBuckets>(model_->sublayers(), stage_begin_, stage_end_,
                                               active_dp_ ? *active_dp_ : groups_->stage_dp(),
                                               static_cast<int64_t>(config_.parallel.bucket_mb * 1024.0 * 1024.0));
  NamedTensors trainable;
  for (auto& [name, tensor] : stage_parameters())
    if (tensor.requires_grad()) trainable.emplace_back(name, tensor);
  optimizer_ = make_optimizer(config_.train, std::move(trainable));
  if (!optimizer_state.empty()) {
    std::map<std::string, torch::Tensor> mine;
    for (const auto& [name, p] : optimizer_->parameters())
      for (const std::string& slot : optimizer_->slot_names()) {
        auto it = optimizer_state.find(name + "/" + slot);
        if (it != optimizer_state.end()) mine.emplace(it->first, it->second);
      }
    optimizer_->load_state(mine, "the state moved between layouts");
  }
  state_->frozen_prefix = frozen_blocks_;
  state_->cache_served_share = cache_served_share_;
  state_->pipeline_stages = stages;
  state_->micro_batches = micro_batch_count_;
  if (is_rank0()) {
    spdlog::info("[pipeline] {} over {} ranks{}, {} schedule, {} micro-batches, {} frozen blocks; stages: {}",
                 layout_text(stages, active_replicas_), world_->size(),
                 active_replicas_ < groups_->replicas()
                     ? fmt::format(" ({} idle: autodp.enabled=false)",
                                   (groups_->replicas() - active_replicas_) * stages)
                     : std::string(),
                 config_.parallel.schedule, micro_batch_count_, frozen_blocks_, describe(plan));
  }
  start_micro_batch_tuning();
}

void Trainer::apply_batch_policy() {
  const ReplicaBatch batch =
      replica_batch(scale_lr_ ? BatchPolicy::kScaleLr : BatchPolicy::kKeepGlobalBatch, config_.train.batch_size,
                    initial_replicas_, active_replicas_);
  global_batch_ = batch.global;
  lr_scale_ = batch.lr_scale;
  // The sampler keeps its position: the rest of the epoch comes in the new
  // step size, with no sample repeated or skipped.
  if (sampler_) sampler_->set_batch_size(global_batch_);
  state_->batch_policy = config_.autodp.batch_policy;
  state_->global_batch = global_batch_;
  state_->lr_scale = lr_scale_;
  if (scale_lr_ && is_rank0())
    spdlog::info("[autodp] scale_lr: global batch {} ({} per replica x {}), LR x {:.3g}", global_batch_,
                 batch.per_replica, active_replicas_, lr_scale_);
}

double Trainer::next_lr() const {
  const double position =
      scale_lr_ ? schedule_position(state_->epoch, steps_per_epoch_, state_->sampler_position, config_.train.batch_size)
                : static_cast<double>(state_->step);
  return schedule_->lr_at_position(position) * lr_scale_;
}

bool Trainer::training_done() const {
  if (!scale_lr_) return state_->step >= total_steps_;
  return schedule_position(state_->epoch, steps_per_epoch_, state_->sampler_position, config_.train.batch_size) >=
         static_cast<double>(total_steps_);
}

namespace {
constexpr int kTuningSteps = 3;  // per candidate: one warm-up step, then two timed
}  // namespace

void Trainer::start_micro_batch_tuning() {
  tuning_queue_.clear();
  tuning_steps_ = 0;
  tuning_seconds_ = 0.0;
  if (!config_.autopipe.tune_micro_batches || !micro_batch_table_) return;
  const int stages = groups_->stages();
  const int64_t pipeline_batch = global_batch_ / active_replicas_;
  for (int m : micro_batch_table_->unmeasured(stages, pipeline_batch)) tuning_queue_.push_back(m);
  if (tuning_queue_.empty()) {
    if (const std::optional<int> best = micro_batch_table_->best(stages)) {
      micro_batch_count_ = *best;
      state_->micro_batches = micro_batch_count_;
      if (is_rank0()) spdlog::info("[autopipe] {} stages: {} micro-batches, the fastest measured", stages, *best);
    }
    return;
  }
  micro_batch_count_ = tuning_queue_.front();
}

void Trainer::record_tuning_step(double step_seconds, int64_t rows) {
  if (tuning_queue_.empty()) return;
  // The slowest rank sets the pace.
  torch::Tensor slowest = torch::tensor({step_seconds}, torch::kDouble);
  world_->all_reduce(slowest, AllReduceOptions{ReduceOp::kMax});
  if (tuning_steps_ > 0) tuning_seconds_ += slowest.item<double>();
  if (++tuning_steps_ < kTuningSteps) return;
  const int stages = groups_->stages();
  const double samples_per_second = (kTuningSteps - 1) * rows / std::max(tuning_seconds_, 1e-9);
  micro_batch_table_->record(stages, tuning_queue_.front(), samples_per_second);
  if (is_rank0())
    spdlog::info("[autopipe] {} stages, {} micro-batches: {:.1f} samples/s", stages, tuning_queue_.front(),
                 samples_per_second);
  tuning_queue_.pop_front();
  tuning_steps_ = 0;
  tuning_seconds_ = 0.0;
  if (!tuning_queue_.empty()) {
    micro_batch_count_ = tuning_queue_.front();
    return;
  }
  micro_batch_count_ = micro_batch_table_->best(stages).value();
  state_->micro_batches = micro_batch_count_;
  if (is_rank0()) {
    spdlog::info("[autopipe] {} stages: keeping {} micro-batches", stages, micro_batch_count_);
    save_micro_batch_table();
  }
}

void Trainer::load_micro_batch_table() {
  micro_batch_table_ = std::make_unique<MicroBatchTable>();
  const std::string path = resolve_in(config_.output.dir, config_.autopipe.micro_batch_file);
  if (path.empty()) return;
  // Rank 0 reads (hosts need not share a filesystem) and tells everyone.
  std::string text;
  if (is_rank0() && path_exists(path)) text = read_file(path);
  if (world_->size() > 1) text = broadcast_string(*world_, text, 0);
  if (text.empty()) return;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    // The batch policy decides the per-pipeline batch of every K.
    const bool same_run_shape = j.at("model") == model_->spec().preset && j.at("batch_size") == config_.train.batch_size &&
                                j.value("batch_policy", "keep_global_batch") == config_.autodp.batch_policy &&
                                j.at("ranks") == world_->size();
    if (!same_run_shape) {
      if (is_rank0()) spdlog::info("[autopipe] {} was measured for another model, batch or rank count; not used", path);
      return;
    }
    for (const auto& [stages, by_m] : j.at("samples_per_second").items())
      for (const auto& [m, value] : by_m.items())
        micro_batch_table_->record(std::stoi(stages), std::stoi(m), value.get<double>());
  } catch (const std::exception& e) {
    // A damaged measurement file costs a re-measurement, not the run.
    micro_batch_table_ = std::make_unique<MicroBatchTable>();
    if (is_rank0()) spdlog::warn("[autopipe] ignoring {}: {}", path, e.what());
  }
}

void Trainer::save_micro_batch_table() const {
  const std::string path = resolve_in(config_.output.dir, config_.autopipe.micro_batch_file);
  if (path.empty()) return;
  nlohmann::json by_stages = nlohmann::json::object();
  for (const auto& [stages, by_m] : micro_batch_table_->entries())
    for (const auto& [m, value] : by_m) by_stages[std::to_string(stages)][std::to_string(m)] = value;
  const nlohmann::json j = {{"model", model_->spec().preset},
                            {"batch_size", config_.train.batch_size},
                            {"ranks", world_->size()},
                            {"batch_policy", config_.autodp.batch_policy},
                            {"samples_per_second", by_stages}};
  try {
    write_file_atomic(path, j.dump(2) + "\n");
  } catch (const IoError& e) {
    spdlog::warn("[autopipe] cannot keep the micro-batch measurements: {}", e.what());
  }
}

void Trainer::decide_freeze(const char* when) {
  if (!freeze_) return;
  // Per-block statistics of every stage (replica 0 reports; the replicas agree).
  // The interval's step count rides along (every rank counts every step,
  // idle ones with zeros): a rank that counted differently would pool and
  // decide differently, so it is caught here instead.
  std::vector<double> local = grad_tracker_->squared_sums();
  const int64_t steps = grad_tracker_->steps();
  local.push_back(static_cast<double>(steps));
  torch::Tensor sums = torch::tensor(local, torch::kDouble);
  world_->all_reduce(sums);
  const double summed_steps = sums.data_ptr<double>()[sums.numel() - 1];
  if (summed_steps != static_cast<double>(steps) * world_->size())
    throw Error(ExitCode::kInternal,
                "freeze decision " + std::to_string(freeze_->state().decisions + 1) + ": rank " +
                    std::to_string(world_->rank()) + " counted " + std::to_string(steps) +
                    " steps since the last decision, but the ranks' counts sum to " +
                    std::to_string(static_cast<int64_t>(summed_steps)) + " over " +
                    std::to_string(world_->size()) + " ranks");
  const std::vector<double> totals(sums.data_ptr<double>(), sums.data_ptr<double>() + sums.numel() - 1);
  // Pooled with the past intervals of freeze.smoothing_window (all ranks alike).
  const std::vector<double> norms = grad_window_->add(totals, steps);
  grad_tracker_->reset();
  const int before = frozen_blocks_;
  const int after = freeze_->decide(norms);
  state_->freeze_decisions = freeze_->state().decisions;
  state_->freeze_bound = freeze_->state().bound;
  // AutoCache (auto mode) decides for the coming interval at the same points.
  if (after == before) {
    if (is_rank0())
      spdlog::info("[freeze] decision {} ({}): {} of {} blocks stay frozen", freeze_->state().decisions, when,
                   before, num_blocks_);
    decide_cache_for_interval();
    return;
  }
  const auto started = Clock::now();
  CompressionOptions compression;
  compression.method = static_cast<PartitionMethod>(partition_method());
  if (config_.autopipe.compression == "divisors")
    for (int k = 1; k <= world_->size(); ++k)
      if (world_->size() % k == 0) compression.allowed_stage_counts.push_back(k);
  const int stages_before = groups_->stages();
  // AutoDP: each rank receives what its new range needs from its old replica.
  OwnershipLayout old_layout{stages_before, stage_ranges_, static_cast<size_t>(frozen_sublayer_count(before))};
  // Without AutoPipe K stays while the starting partition can hold the
  // frozen prefix (always, unless AutoCache pins it to stage 0); past that
  // point the compression is forced.
  const bool keep_stages = !config_.autopipe.enabled && !fixed_ranges(stages_before, after).empty();
  int new_stages = stages_before;
  if (!keep_stages) {
    new_stages = compress_stage_count(costs_for(after, CostUse::kCompression), pinned_sublayers(after),
                                      stages_before, reference_max_cost_, compression)
                     .stages;
    if (!config_.autopipe.enabled && is_rank0())
      spdlog::warn("[autopipe] autopipe.enabled=false, but {} stages cannot hold {} frozen blocks on stage 0 "
                   "and a sub-layer on every other stage: compressing to {} stages",
                   stages_before, after, new_stages);
  }
  estimate_cache_served_share(before);
  if (partition_counts_frozen_forward() && is_rank0())
    spdlog::info("[autopipe] the partition counts the frozen prefix's forward on {:.0f}% of the samples "
                 "(the cache is estimated to serve the rest)",
                 100.0 * (1.0 - cache_served_share_));
  OwnershipLayout new_layout{new_stages, plan_ranges(new_stages, after),
                             static_cast<size_t>(frozen_sublayer_count(after))};
  std::map<std::string, torch::Tensor> moved;
  for (auto& [name, tensor] : optimizer_->state()) moved[name] = tensor;
  const TransferStats transfer =
      move_training_state(*world_, *model_, old_layout, new_layout, optimizer_->slot_names(), moved);
  torch::Tensor sent = torch::tensor({static_cast<double>(transfer.bytes_sent)}, torch::kDouble);
  world_->all_reduce(sent);
  const int64_t bytes_moved = static_cast<int64_t>(sent.item<double>());
  set_frozen_blocks(after);
  apply_layout(new_stages, moved);
  if (!cache_job_id_.empty() && before > 0) {
    // Cached outputs at the old depth go through the newly frozen blocks
    // instead of being recomputed from the inputs, spread over the node's
    // training first-stage ranks (each holds the current weights of the whole
    // frozen prefix), one shard of the samples each. After every shard is
    // done (the barrier), the first member of a node with several drops what
    // no shard could read; the all-reduce after that keeps every rank from
    // serving at the new depth before every node's drop is done.
    const size_t old_end = static_cast<size_t>(frozen_sublayer_count(before));
    const size_t new_end = static_cast<size_t>(frozen_sublayer_count(after));
    const AdvanceShard shard = node_advance_shard(*world_, executor_->first() && !idle());
    const auto advance_started = Clock::now();
    size_t advanced = 0;
    if (shard.count > 0) {
      set_frozen_modes();
      AutocastGuard autocast(device_.type(), autocast_dtype_);  // the precision of the frozen forward in training
      advanced = frozen_cache().advance(*model_, *train_data_, old_end, new_end, CacheShard{shard.index, shard.count});
    }
    torch::Tensor slowest = torch::tensor({seconds_since(advance_started)}, torch::kDouble);
    world_->barrier();
    // A node's only shard has dropped its leftovers inside advance().
    const size_t dropped = shard.count > 1 && shard.index == 0 ? frozen_cache().drop_depth(old_end) : 0;
    torch::Tensor totals = torch::tensor({static_cast<double>(advanced), static_cast<double>(dropped),
                                          static_cast<double>(shard.count > 0)},
                                         torch::kDouble);
    world_->all_reduce(totals);
    world_->all_reduce(slowest, AllReduceOptions{ReduceOp::kMax});
    const auto entries = static_cast<int64_t>(totals[0].item<double>());
    const auto left = static_cast<int64_t>(totals[1].item<double>());
    const auto ranks = static_cast<int64_t>(totals[2].item<double>());
    // `dropped` counts what nodes with several shards left.
    metrics_->emit("cache_advance", {{"epoch", state_->epoch},
                                     {"step", state_->step},
                                     {"frozen_before", static_cast<int64_t>(before)},
                                     {"frozen_after", static_cast<int64_t>(after)},
                                     {"entries", entries},
                                     {"ranks", ranks},
                                     {"nodes", static_cast<int64_t>(shard.nodes)},
                                     {"dropped", left},
                                     {"seconds", slowest.item<double>()}});
    if (is_rank0())
      spdlog::info("[autocache] advanced {} cached samples from {} to {} frozen blocks on {} rank(s) of {} node(s) "
                   "in {:.3f} s (the slowest shard); {} left at the old depth dropped",
                   entries, before, after, ranks, shard.nodes, slowest.item<double>(), left);
  }
  decide_cache_for_interval();
  const double seconds = seconds_since(started);
  metrics_->emit("transition", {{"epoch", state_->epoch},
                                {"step", state_->step},
                                {"frozen_blocks", static_cast<int64_t>(after)},
                                {"stages", static_cast<int64_t>(groups_->stages())},
                                {"replicas", static_cast<int64_t>(active_replicas_)},
                                {"micro_batches", micro_batch_count_},
                                {"first_stage_sublayers", static_cast<int64_t>(stage_ranges_.at(0).second)},
                                {"cache_served_share", cache_served_share_},
                                {"global_batch", global_batch_},
                                {"lr_scale", lr_scale_},
                                {"seconds", seconds},
                                {"bytes_moved", bytes_moved}});
  if (is_rank0())
    spdlog::info("[freeze] decision {} ({}): frozen blocks {} -> {} of {}; stages {} -> {}, replicas {}; "
                 "moved {:.1f} MiB in {:.3f} s",
                 freeze_->state().decisions, when, before, after, num_blocks_, stages_before, groups_->stages(),
                 active_replicas_, bytes_moved / 1048576.0, seconds);
}


// AutoCache (auto mode) decides for the coming interval at every decision
// point, from the timings of every rank that served the frozen prefix (a
// probe batch at the first freeze, when nothing has been timed yet),
// averaged over the world so every serving rank decides alike: a rank that
// has just become a first stage has no timings of its own and would
// otherwise compute (and not store) its share for a whole interval. Timings
// at the current depth win over stand-ins from a shallower one.
void Trainer::decide_cache_for_interval() {
  if (config_.autocache.mode != "auto") return;
  const size_t depth = static_cast<size_t>(frozen_sublayer_count(frozen_blocks_));
  const bool serving = serves_frozen_prefix();
  // [forward, read, count] at this depth, then the same for stand-ins from
  // a shallower one; and the deepest stand-in depth.
  std::vector<double> sums(6, 0.0);
  double deepest_stand_in = 0.0;
  if (serving) {
    CacheMeasurement m = frozen_cache().measurement(depth);
    if (!std::isfinite(m.frozen_forward_seconds)) {
      // Nothing timed at any depth yet (the first freeze): one batch of the
      // frozen prefix now, whose output is stored and read back, gives the
      // timings, so the first frozen interval need not run uncached. Its
      // entries are valid (drawn with their view ids) and serve later hits.
      set_frozen_modes();
      const int64_t rows = std::min<int64_t>(global_batch_ / active_replicas_, train_data_->size());
      std::vector<int64_t> probe(static_cast<size_t>(rows));
      for (int64_t i = 0; i < rows; ++i) probe[static_cast<size_t>(i)] = i;
      AutocastGuard autocast(device_.type(), autocast_dtype_);
      frozen_cache().frozen_output(*model_, *train_data_, probe, state_->epoch, depth);
      m = frozen_cache().measurement(depth);
    }
    if (std::isfinite(m.frozen_forward_seconds) && std::isfinite(m.cache_read_seconds)) {
      const size_t at = m.timed_depth > 0 ? 3 : 0;
      sums[at] = m.frozen_forward_seconds;
      sums[at + 1] = m.cache_read_seconds;
      sums[at + 2] = 1.0;
      deepest_stand_in = static_cast<double>(m.timed_depth);
    }
  }
  torch::Tensor totals = torch::tensor(sums, torch::kDouble);
  torch::Tensor deepest = torch::tensor({deepest_stand_in}, torch::kDouble);
  world_->all_reduce(totals);
  world_->all_reduce(deepest, {ReduceOp::kMax});
  if (!serving) return;
  const double* t = totals.data_ptr<double>();
  CacheMeasurement averaged;
  averaged.depth = static_cast<int>(depth);
  averaged.frozen_forward_seconds = std::numeric_limits<double>::quiet_NaN();
  averaged.cache_read_seconds = std::numeric_limits<double>::quiet_NaN();
  const size_t at = t[2] > 0 ? 0 : t[5] > 0 ? 3 : 6;
  if (at < 6) {
    averaged.frozen_forward_seconds = t[at] / t[at + 2];
    averaged.cache_read_seconds = t[at + 1] / t[at + 2];
    if (at == 3) averaged.timed_depth = static_cast<int>(deepest.item<double>());
  }
  frozen_cache().update_decision(averaged);
}

bool Trainer::serves_frozen_prefix() const {
  return !cache_job_id_.empty() && frozen_blocks_ > 0 && executor_->first() && !idle();
}

FrozenPrefixCache& Trainer::frozen_cache() {
  if (!frozen_cache_) {
    const ModelSpec& spec = model_->spec();
    frozen_cache_ = std::make_unique<FrozenPrefixCache>(config_.autocache, cache_job_id_,
                                                        frozen_entry_shape(spec, config_.data.seq_len),
                                                        model_->num_sublayers() - 1, config_.train.seed);
  }
  return *frozen_cache_;
}

// Frozen sub-layers are feature extractors: no dropout, so their output is
// deterministic (what the cache relies on) whatever the training mode.
void Trainer::set_frozen_modes() {
  const size_t frozen = static_cast<size_t>(frozen_sublayer_count(frozen_blocks_));
  for (size_t j = 0; j < frozen && j < model_->num_sublayers(); ++j) model_->sublayer(j).eval();
}

std::string Trainer::save_checkpoint() {
  if (!checkpointer_) return "";
  CheckpointData data;
  data.state = *state_;
  data.state.pipeline_stages = groups_->stages();
  data.state.micro_batches = micro_batch_count_;
  data.state.freeze_window_sums.clear();
  data.state.freeze_window_steps.clear();
  if (grad_tracker_) {
    data.state.freeze_interval_sums = grad_tracker_->squared_sums();
    data.state.freeze_interval_steps = grad_tracker_->steps();
    for (const GradientNormWindow::Interval& interval : grad_window_->history()) {
      data.state.freeze_window_sums.push_back(interval.squared_sums);
      data.state.freeze_window_steps.push_back(interval.steps);
    }
  }
  data.model_config = hf_config_json(model_->spec());
  data.train_config = config_to_json(config_);
  data.optimizer_name = optimizer_->name();
  data.model = stage_parameters();
  data.optimizer = optimizer_->state();
  data.rng = rng_state();
  const std::string path = checkpointer_->save(data);
  if (world_->size() > 1) {
    // The manifest ties the parts together: written once every rank's part is
    // in place, by the first rank of each host (no shared filesystem needed).
    world_->barrier();
    if (local_rank_leader(world_->rank())) {
      nlohmann::json manifest = {{"step", state_->step},
                                 {"world_size", world_->size()},
                                 {"pipeline_stages", groups_->stages()},
                                 {"replicas", groups_->replicas()},
                                 {"micro_batches", micro_batch_count_}};
      write_checkpoint_manifest(config_.checkpoint.dir, state_->step, manifest);
    }
    world_->barrier();
    if (local_rank_leader(world_->rank())) prune_checkpoint_manifests(config_.checkpoint.dir, checkpointer_->list());
  }
  if (is_rank0()) spdlog::info("[checkpoint] saved {}", path);
  return path;
}

std::vector<int64_t> Trainer::replica_share(const std::vector<int64_t>& global_indices) const {
  const int64_t share = static_cast<int64_t>(global_indices.size()) / active_replicas_;
  const auto first = global_indices.begin() + groups_->replica() * share;
  return std::vector<int64_t>(first, first + share);
}

Batch Trainer::prefetched_batch(const std::vector<int64_t>& indices) {
  // This batch, then the next ones of the epoch as the sampler will hand them out.
  std::vector<std::pair<int64_t, std::vector<int64_t>>> wanted = {{state_->epoch, indices}};
  EpochSampler ahead = *sampler_;
  for (int64_t i = 0; i < config_.data.prefetch_batches; ++i) {
    const std::vector<int64_t> next = ahead.next_batch();
    if (next.empty()) break;
    wanted.emplace_back(state_->epoch, replica_share(next));
  }
  bool in_step = prefetcher_ && prefetch_queue_.size() <= wanted.size();
  for (size_t i = 0; in_step && i < prefetch_queue_.size(); ++i) in_step = prefetch_queue_[i] == wanted[i];
  if (!in_step) {  // first use, a resume or an epoch change: start over
    prefetcher_ = std::make_unique<BatchPrefetcher>(train_data_, config_.data.prefetch_batches);
    prefetch_queue_.clear();
  }
  for (size_t i = prefetch_queue_.size(); i < wanted.size(); ++i) {
    prefetcher_->submit(wanted[i].second, wanted[i].first);
    prefetch_queue_.push_back(wanted[i]);
  }
  prefetch_queue_.pop_front();
  return prefetcher_->next();
}

namespace {
// Each micro-batch's (first row, row count) in a batch of `rows`, spread as
// evenly as possible (the first rows % count get one more); at most `rows`
// micro-batches, at least one.
std::vector<std::pair<int64_t, int64_t>> micro_batch_rows(int64_t rows, int64_t count) {
  count = std::max<int64_t>(1, std::min(count, rows));
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t begin = 0;
  for (int64_t m = 0; m < count; ++m) {
    const int64_t length = rows / count + (m < rows % count ? 1 : 0);
    out.emplace_back(begin, length);
    begin += length;
  }
  return out;
}
}  // namespace

std::vector<MicroBatch> Trainer::micro_batches(const Dataset& data, const std::vector<int64_t>& indices,
                                               int64_t epoch, int64_t count, int64_t global_rows,
                                               const Activations* prebuilt) const {
  const auto split = micro_batch_rows(static_cast<int64_t>(indices.size()), count);
  std::vector<MicroBatch> out(split.size());
  Activations inputs;
  if (executor_->first())
    inputs = on_device(prebuilt ? *prebuilt : batch_inputs(data.get_batch(indices, epoch)));
  torch::Tensor labels;
  if (executor_->last()) labels = data.labels(indices).to(device_, /*non_blocking=*/false);
  for (size_t m = 0; m < split.size(); ++m) {
    const auto [begin, length] = split[m];
    if (inputs.hidden.defined()) out[m].input = slice_inputs(inputs, begin, length);
    if (labels.defined()) out[m].labels = labels.narrow(0, begin, length);
    out[m].loss_weight = static_cast<double>(length) / static_cast<double>(global_rows);
  }
  return out;
}

Trainer::StepResult Trainer::train_step(const std::vector<int64_t>& global_indices, bool stop_wanted) {
  const auto step_started = Clock::now();
  model_->train();
  set_frozen_modes();
  optimizer_->zero_grad();
  if (state_->step + 1 == fault_step_)
    throw Error(ExitCode::kInternal, "fault injected by PIPET_FAULT_INJECTION at step " +
                                         std::to_string(fault_step_));
  const int64_t global_rows = static_cast<int64_t>(global_indices.size());
  if (idle()) return idle_step(stop_wanted, global_rows);
  const std::vector<int64_t> indices = replica_share(global_indices);
  Batch loaded;
  const bool cached = serves_frozen_prefix();
  const bool prefetch = executor_->first() && config_.data.prefetch_batches > 0 && !cached;
  if (prefetch) loaded = prefetched_batch(indices);
  std::vector<MicroBatch> micro;
  if (cached) {
    // AutoCache: the frozen prefix's output instead of the raw inputs, one
    // micro-batch at a time as the schedule reaches it (labels and weights
    // come from micro_batches; no raw inputs are loaded here).
    const size_t frozen_end = static_cast<size_t>(frozen_sublayer_count(frozen_blocks_));
    const Activations none;
    micro = micro_batches(*train_data_, indices, state_->epoch, micro_batch_count_, global_rows, &none);
    const auto split = micro_batch_rows(static_cast<int64_t>(indices.size()), micro_batch_count_);
    for (size_t m = 0; m < split.size(); ++m) {
      const auto [begin, length] = split[m];
      std::vector<int64_t> slice(indices.begin() + begin, indices.begin() + begin + length);
      micro[m].input_depth = frozen_end;
      micro[m].produce_input = [this, frozen_end, slice = std::move(slice)] {
        // The frozen prefix runs in the precision it runs in without the cache.
        AutocastGuard autocast(device_.type(), autocast_dtype_);
        return frozen_cache().frozen_output(*model_, *train_data_, slice, state_->epoch, frozen_end);
      };
    }
  } else {
    const Activations inputs = prefetch ? batch_inputs(loaded) : Activations{};
    micro = micro_batches(*train_data_, indices, state_->epoch, micro_batch_count_, global_rows,
                          prefetch ? &inputs : nullptr);
  }
  const torch::Tensor loss_sum =
      executor_->train(micro, parse_pipeline_schedule(config_.parallel.schedule), buckets_.get());
  pipeline_seconds_ += executor_->last_busy_seconds() + executor_->last_wait_seconds();
  pipeline_wait_seconds_ += executor_->last_wait_seconds();
  buckets_->finish(comm_timeout(config_));
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
  for (size_t j = stage_begin_; j < stage_end_; ++j) {
    const int64_t block = model_->sublayer(j).block();
    for (const auto& [name, p] : model_->sublayer(j).hf_parameters()) {
      if (!p.grad().defined()) continue;
      grads.push_back(p.grad());
      blocks.push_back(block);
    }
  }
  const bool reports = groups_->replica() == 0;
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
  if (grad_tracker_) grad_tracker_->add_step(block_squares);

  // One world all-reduce: the loss of every pipeline, the squared gradient
  // norm of every stage and stop requests.
  torch::Tensor totals = torch::tensor({loss_total, squared_norm, stop_wanted ? 1.0 : 0.0},
                                       torch::kDouble);
  world_->all_reduce(totals);
  StepResult result;
  result.loss = totals[0].item<double>() / static_cast<double>(global_rows);
  result.grad_norm = std::sqrt(totals[1].item<double>());
  result.stop = totals[2].item<double>() > 0;
  if (!std::isfinite(result.loss)) {
    throw TrainingDiverged("training diverged at step " + std::to_string(state_->step + 1) +
                           ": the loss is " + std::to_string(result.loss) + " (try a lower train.lr)");
  }
  if (!std::isfinite(result.grad_norm)) {
    throw TrainingDiverged("training diverged at step " + std::to_string(state_->step + 1) +
                           ": the gradient norm is " + std::to_string(result.grad_norm) +
                           " (try a lower train.lr or train.grad_clip_norm)");
  }
  clip_gradients(grads, result.grad_norm, config_.train.grad_clip_norm);
  last_lr_ = next_lr();
  optimizer_->step(last_lr_);
  record_tuning_step(seconds_since(step_started), global_rows);
  return result;
}

bool Trainer::idle() const { return groups_->replica() >= active_replicas_; }

Trainer::StepResult Trainer::idle_step(bool stop_wanted, int64_t global_rows) {
  // The same collectives as a training rank's step, in the same order, with
  // nothing to add: no loss, no gradient, no block statistics.
  if (grad_tracker_) grad_tracker_->add_step(std::vector<double>(static_cast<size_t>(num_blocks_), 0.0));
  torch::Tensor totals = torch::tensor({0.0, 0.0, stop_wanted ? 1.0 : 0.0}, torch::kDouble);
  world_->all_reduce(totals);
  StepResult result;
  result.loss = totals[0].item<double>() / static_cast<double>(global_rows);
  result.grad_norm = std::sqrt(totals[1].item<double>());
  result.stop = totals[2].item<double>() > 0;
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm))
    throw TrainingDiverged("training diverged at step " + std::to_string(state_->step + 1) +
                           " (reported by the training ranks)");
  record_tuning_step(0.0, global_rows);
  return result;
}

EvalResult Trainer::evaluate() {
  if (!eval_data_ || eval_data_->size() == 0) return EvalResult{};
  torch::NoGradGuard no_grad;
  model_->eval();
  // Each pipeline evaluates a contiguous shard; the last stages merge their
  // partial results and replica 0's last stage tells everyone.
  const int64_t total = eval_data_->size();
  // Idle pipelines (autodp.enabled=false) take no shard.
  const int64_t replicas = active_replicas_;
  const int64_t shard_begin = idle() ? 0 : total * groups_->replica() / replicas;
  const int64_t shard_end = idle() ? 0 : total * (groups_->replica() + 1) / replicas;
  const int64_t configured = config_.eval.batch_size > 0 ? config_.eval.batch_size : config_.train.batch_size;
  const int64_t batch_size = std::max<int64_t>(1, configured / replicas);
  std::unique_ptr<EvalAccumulator> accumulator = task_->make_evaluator();
  for (int64_t begin = shard_begin; begin < shard_end; begin += batch_size) {
    const int64_t end = std::min(begin + batch_size, shard_end);
    std::vector<int64_t> indices;
    for (int64_t i = begin; i < end; ++i) indices.push_back(i);
    std::vector<MicroBatch> micro = micro_batches(*eval_data_, indices, /*epoch=*/0, micro_batch_count_,
                                                  static_cast<int64_t>(indices.size()));
    const std::vector<torch::Tensor> logits = executor_->forward_only(micro);
    int64_t row = 0;
    for (size_t m = 0; m < logits.size(); ++m) {
      const int64_t rows = micro[m].labels.size(0);
      const std::vector<int64_t> ids(indices.begin() + row, indices.begin() + row + rows);
      // Metrics are computed on the host, in fp32 (bf16 logits under autocast).
      accumulator->add(logits[m].to(torch::kCPU, torch::kFloat), micro[m].labels.to(torch::kCPU),
                       torch::tensor(ids, torch::kInt64));
      row += rows;
    }
  }
  model_->train();

  const int last_stage = groups_->stages() - 1;
  std::string encoded;
  if (executor_->last() && !idle()) {
    if (replicas > 1) {
      const std::vector<torch::Tensor> parts =
          all_gather_variable(active_dp_ ? *active_dp_ : groups_->stage_dp(), accumulator->pack());
      std::unique_ptr<EvalAccumulator> merged = task_->make_evaluator();
      for (const torch::Tensor& part : parts) merged->merge(part);
      accumulator = std::move(merged);
    }
    const EvalResult local = accumulator->result();
    nlohmann::json j = {{"samples", local.samples}, {"loss", local.loss}, {"metrics", local.metrics}};
    encoded = j.dump();
  }
  if (world_->size() > 1) encoded = broadcast_string(*world_, encoded, groups_->world_rank_of(0, last_stage));
  const nlohmann::json j = nlohmann::json::parse(encoded);
  EvalResult result;
  result.samples = j.at("samples").get<int64_t>();
  result.loss = j.at("loss").get<double>();
  result.metrics = j.at("metrics").get<std::map<std::string, double>>();
  return result;
}

void Trainer::gather_model_to_rank0() {
  if (groups_->stages() == 1 || groups_->replica() != 0) return;
  // Replica 0's stages send their sub-layers' weights to stage 0 in model order.
  torch::NoGradGuard no_grad;
  Communicator& pipeline = groups_->pipeline();
  constexpr int kWeightTag = 21;
  if (groups_->stage() == 0) {
    for (int s = 1; s < groups_->stages(); ++s)
      for (size_t j = stage_ranges_[s].first; j < stage_ranges_[s].second; ++j)
        for (auto& [name, p] : model_->sublayer(j).hf_parameters()) {
          torch::Tensor buffer = torch::empty_like(p);
          pipeline.recv(buffer, s, kWeightTag);
          p.copy_(buffer);
        }
  } else {
    for (auto& [name, p] : stage_parameters()) pipeline.send(p.detach(), 0, kWeightTag);
  }
}

// True when training should stop early.
bool Trainer::update_early_stop(const EvalResult& result) {
  if (config_.eval.early_stop_patience <= 0) return false;
  const std::string metric = config_.eval.early_stop_metric.substr(5);  // drops "eval_"
  const bool higher_is_better = task_->higher_is_better(metric);
  const double value = result.metric(metric);
  const double delta = config_.eval.early_stop_min_delta;
  const bool improved = !state_->has_best || (higher_is_better ? value > state_->best_metric + delta
                                                                : value < state_->best_metric - delta);
  if (improved) {
    state_->has_best = true;
    state_->best_metric = value;
    state_->evals_without_improvement = 0;
    return false;
  }
  ++state_->evals_without_improvement;
  return state_->evals_without_improvement >= config_.eval.early_stop_patience;
}

TrainResult Trainer::run(const RunLimits& limits) {
  TrainResult result;
  const auto start = Clock::now();
  const double elapsed_before = state_->elapsed_seconds;
  const int64_t samples_before = state_->samples_seen;
  double window_loss = 0.0;
  int64_t window_steps = 0;
  auto window_start = Clock::now();
  int64_t window_samples = 0;
  bool stop = false;

  auto run_eval = [&](const char* when) {
    EvalResult eval = evaluate();
    result.eval = eval;
    MetricFields fields = {{"epoch", state_->epoch}, {"step", state_->step}, {"eval_loss", eval.loss},
                           {"elapsed_seconds", elapsed_before + seconds_since(start)}};
    for (const auto& [name, value] : eval.metrics) fields.emplace_back("eval_" + name, value);
    fields.emplace_back("eval_samples", eval.samples);
    metrics_->emit("eval", fields);
    if (update_early_stop(eval)) {
      spdlog::info("[train] early stop after {} evaluations without improvement of {} ({})",
                   state_->evals_without_improvement, config_.eval.early_stop_metric, when);
      result.early_stopped = true;
      stop = true;
    }
  };

  while (!stop && state_->epoch < config_.train.epochs && !training_done()) {
    sampler_->set_state({state_->epoch, state_->sampler_position});
    bool evaluated_this_epoch = false;
    const auto epoch_start = Clock::now();
    int64_t epoch_samples = 0;
    const FrozenPrefixCache::ServedCounts served_before =
        frozen_cache_ ? frozen_cache_->served() : FrozenPrefixCache::ServedCounts{};
    for (std::vector<int64_t> indices = sampler_->next_batch(); !indices.empty();
         indices = sampler_->next_batch()) {
      const int64_t rows = static_cast<int64_t>(indices.size());
      const StepResult step = train_step(indices, stop_requested());
      const double loss = step.loss;
      ++state_->step;
      state_->samples_seen += rows;
      state_->sampler_position = sampler_->state().position;
      window_loss += loss;
      ++window_steps;
      window_samples += rows;
      epoch_samples += rows;
      result.train_loss = loss;

      if (state_->step % config_.train.log_every_steps == 0 || training_done()) {
        const double seconds = seconds_since(window_start);
        result.train_loss = window_loss / static_cast<double>(window_steps);
        metrics_->emit("train", {{"epoch", state_->epoch}, {"step", state_->step},
                                 {"train_loss", result.train_loss}, {"lr", last_lr_}, {"global_batch", global_batch_},
                                 {"samples_per_sec", seconds > 0 ? window_samples / seconds : 0.0}});
        window_loss = 0.0;
        window_steps = 0;
        window_samples = 0;
        window_start = Clock::now();
      }
      metrics_->progress(state_->sampler_position / config_.train.batch_size, steps_per_epoch_,
                         "epoch " + std::to_string(state_->epoch) + " loss " + std::to_string(loss));

      if (config_.freeze.every_steps > 0 && state_->step % config_.freeze.every_steps == 0 &&
          !training_done()) {
        decide_freeze("step cadence");
      }
      if (config_.eval.every_steps > 0 && state_->step % config_.eval.every_steps == 0) {
        run_eval("step cadence");
        evaluated_this_epoch = sampler_->epoch_finished();
      }
      if (config_.checkpoint.every_steps > 0 && state_->step % config_.checkpoint.every_steps == 0) {
        result.last_checkpoint = save_checkpoint();
      }
      const bool limit_reached = limits.stop_after_step > 0 && state_->step >= limits.stop_after_step;
      if (step.stop || limit_reached) {
        state_->elapsed_seconds = elapsed_before + seconds_since(start);
        result.last_checkpoint = save_checkpoint();
        if (result.last_checkpoint.empty()) {
          spdlog::warn("[train] stopping at step {} without a checkpoint: checkpoint.dir is not set",
                       state_->step);
        }
        result.interrupted = true;
        result.steps = state_->step;
        result.epochs_completed = state_->epoch;
        result.train_seconds = seconds_since(start);
        result.pipeline_seconds = pipeline_seconds_;
        result.pipeline_wait_seconds = pipeline_wait_seconds_;
        return result;
      }
      if (stop || training_done()) break;
    }
    if (stop) break;
    if (training_done() && !sampler_->epoch_finished()) {
      break;  // max_steps ended the run inside an epoch
    }
    // Epoch complete.
    const double epoch_seconds = seconds_since(epoch_start);
    ++state_->epoch;
    state_->sampler_position = 0;
    metrics_->emit("epoch", {{"epoch", state_->epoch},
                             {"step", state_->step},
                             {"train_loss", result.train_loss},
                             {"frozen_blocks", static_cast<int64_t>(frozen_blocks_)},
                             {"stages", static_cast<int64_t>(groups_->stages())},
                             {"replicas", static_cast<int64_t>(active_replicas_)},
                             {"idle_ranks", static_cast<int64_t>((groups_->replicas() - active_replicas_) *
                                                                 groups_->stages())},
                             {"epoch_seconds", epoch_seconds},
                             {"elapsed_seconds", elapsed_before + seconds_since(start)},
                             {"samples_per_sec", epoch_seconds > 0 ? epoch_samples / epoch_seconds : 0.0},
                             {"samples", epoch_samples},
                             {"global_batch", global_batch_},
                             {"cache_hit_rate", served_from_cache_since(frozen_cache_.get(), served_before)}});
    if (config_.freeze.every_steps == 0 && !training_done()) decide_freeze("epoch boundary");
    if (config_.eval.every_epochs > 0 && state_->epoch % config_.eval.every_epochs == 0 && !evaluated_this_epoch) {
      run_eval("epoch cadence");
    }
    if (config_.checkpoint.every_epochs > 0 && state_->epoch % config_.checkpoint.every_epochs == 0) {
      state_->elapsed_seconds = elapsed_before + seconds_since(start);
      result.last_checkpoint = save_checkpoint();
    }
  }

  if (!result.eval && eval_data_ && eval_data_->size() > 0) run_eval("end of training");
  result.steps = state_->step;
  result.epochs_completed = state_->epoch;
  result.train_seconds = seconds_since(start);
  state_->elapsed_seconds = elapsed_before + result.train_seconds;
  const int64_t samples = state_->samples_seen - samples_before;
  result.samples_per_second = result.train_seconds > 0 ? samples / result.train_seconds : 0.0;
  result.pipeline_seconds = pipeline_seconds_;
  result.pipeline_wait_seconds = pipeline_wait_seconds_;

  if (config_.output.export_model) gather_model_to_rank0();
  if (!is_rank0()) return result;
  if (config_.output.export_model) export_hf_model(*model_, config_.output.dir);
  nlohmann::json summary = {{"steps", result.steps},
                            {"epochs_completed", result.epochs_completed},
                            {"train_loss", result.train_loss},
                            {"train_seconds", state_->elapsed_seconds},
                            {"samples_per_second", result.samples_per_second},
                            {"early_stopped", result.early_stopped},
                            {"model", model_->spec().preset},
                            {"pipeline_stages", groups_->stages()},
                            {"replicas", active_replicas_},
                            {"micro_batches", micro_batch_count_},
                            {"schedule", config_.parallel.schedule},
                            {"dataset", train_data_->name()}};
  if (result.eval) {
    summary["eval_loss"] = result.eval->loss;
    for (const auto& [name, value] : result.eval->metrics) summary["eval_" + name] = value;
  }
  write_file_atomic(config_.output.dir + "/summary.json", summary.dump(2) + "\n");
  MetricFields fields = {{"steps", result.steps}, {"train_loss", result.train_loss}};
  if (result.eval)
    for (const auto& [name, value] : result.eval->metrics) fields.emplace_back("eval_" + name, value);
  fields.emplace_back("samples_per_sec", result.samples_per_second);
  fields.emplace_back("train_seconds", state_->elapsed_seconds);
  metrics_->emit("summary", fields);
  return result;
}

}  // namespace pipet
