#include "runtime/engine/trainer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "autodp/batch_policy.h"
#include "autopipe/cost_model.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/stopwatch.h"
#include "runtime/core/strings.h"
#include "runtime/core/tensor_names.h"
#include "runtime/core/threads.h"
#include "runtime/data/dataset.h"
#include "runtime/data/sampler.h"
#include "runtime/data/subset_dataset.h"
#include "runtime/engine/autopipe_planner.h"
#include "runtime/engine/batch_feeder.h"
#include "runtime/engine/cache_coordinator.h"
#include "runtime/engine/elastic_controller.h"
#include "runtime/engine/evaluation.h"
#include "runtime/engine/export.h"
#include "runtime/engine/freeze_controller.h"
#include "runtime/engine/lr_schedule.h"
#include "runtime/engine/metrics.h"
#include "runtime/engine/micro_batch_tuner.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/run_checkpoints.h"
#include "runtime/engine/stage_layout.h"
#include "runtime/engine/stop_signal.h"
#include "runtime/engine/sublayer_profile.h"
#include "runtime/engine/train_step.h"
#include "runtime/model/model.h"

namespace pipet {
namespace {

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

std::chrono::milliseconds comm_timeout(const TrainConfig& config) {
  return std::chrono::milliseconds(static_cast<int64_t>(config.parallel.comm_timeout_s * 1000.0));
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

// Freezing can compress the pipeline to one stage with a replica on every
// rank: the batch must allow that layout too.
void check_batch_for_freezing(const TrainConfig& config, bool scale_lr, int replicas, int world_size,
                              int64_t train_samples) {
  const int64_t largest_batch = config.train.batch_size / replicas * world_size;
  if (scale_lr && config.autodp.enabled && largest_batch > train_samples) {
    throw ConfigError("autodp.batch_policy scale_lr: the global batch grows to " + std::to_string(largest_batch) +
                      " samples when the pipeline compresses to one stage on " + std::to_string(world_size) +
                      " ranks, more than the " + std::to_string(train_samples) +
                      " training samples; lower train.batch_size or use keep_global_batch");
  }
  if (!scale_lr && config.train.batch_size % world_size != 0) {
    throw ConfigError("train.batch_size " + std::to_string(config.train.batch_size) + " must be divisible by the " +
                      std::to_string(world_size) +
                      " ranks when freezing is on: the pipeline may compress to one stage with a "
                      "replica on every rank");
  }
}

}  // namespace

// The counters of one run() segment: totals since it started, the logging
// window of train events and the current epoch's figures.
struct Trainer::Segment {
  TrainResult result;
  SteadyClock::time_point start = SteadyClock::now();
  double elapsed_before = 0.0;  // training time of earlier segments
  int64_t samples_before = 0;
  bool stop = false;            // early stop
  double window_loss = 0.0;
  int64_t window_steps = 0;
  int64_t window_samples = 0;
  SteadyClock::time_point window_start = SteadyClock::now();
  bool evaluated_this_epoch = false;
  SteadyClock::time_point epoch_start;
  int64_t epoch_samples = 0;
  FrozenPrefixCache::ServedCounts served_before;

  double elapsed() const { return elapsed_before + seconds_since(start); }
};

Trainer::Trainer(const TrainConfig& config, Communicator* world) : config_(config), world_(world) {
  validate_config(config_);
  if (!world_) {
    own_world_ = std::make_unique<LocalCommunicator>("world");
    world_ = own_world_.get();
  }
  world_->set_default_timeout(comm_timeout(config_));
  StepSettings step_settings;
  step_settings.fault_step = injected_fault_step(world_->rank());
  device_ = ComputeDevice::from_config(config_.runtime, world_->rank());
  std::unique_ptr<ProcessGroups> groups =
      make_process_groups(*world_, device_, static_cast<int>(config_.parallel.pipeline_stages));
  const int replicas = groups->replicas();
  const int64_t micro_batches = config_.parallel.micro_batches;
  if (config_.train.batch_size % (replicas * micro_batches) != 0) {
    throw ConfigError("train.batch_size " + std::to_string(config_.train.batch_size) + " must split evenly into " +
                      std::to_string(replicas) + " data-parallel pipelines x parallel.micro_batches " +
                      std::to_string(micro_batches) + " micro-batches; use a multiple of " +
                      std::to_string(replicas * micro_batches));
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
  if (config_.freeze.policy != "none" && config_.freeze.probe_samples > 0) {
    // The freeze probe: seeded training samples the run never trains on.
    ProbeSplit probe = split_probe(train_data_, config_.freeze.probe_samples, config_.train.seed);
    train_data_ = probe.train;
    probe_data_ = probe.probe;
  }
  task_ = make_task(config_, eval_data_);
  {
    const std::string watched = config_.eval.early_stop_metric.substr(5);  // drops "eval_"
    const std::vector<std::string> known = task_->metric_names();
    if (config_.eval.early_stop_patience > 0 && std::find(known.begin(), known.end(), watched) == known.end())
      throw ConfigError("eval.early_stop_metric '" + config_.eval.early_stop_metric + "' is not reported by the " +
                        task_->name() + " task; it reports eval_" + join(known, ", eval_"));
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
  if (device_.is_cuda()) model_->to(device_.device);
  if (static_cast<size_t>(groups->stages()) > model_->num_sublayers()) {
    throw ConfigError("parallel.pipeline_stages " + std::to_string(groups->stages()) + " exceeds the " +
                      std::to_string(model_->num_sublayers()) + " sub-layers of model " + spec.preset);
  }

  const bool scale_lr =
      batch_policy_from_string(config_.autodp.batch_policy, "autodp.batch_policy") == BatchPolicy::kScaleLr;
  std::unique_ptr<FreezeController> freeze;
  if (config_.freeze.policy != "none") {
    freeze = std::make_unique<FreezeController>(config_.freeze, static_cast<int>(spec.num_layers));
    check_batch_for_freezing(config_, scale_lr, replicas, world_->size(), train_data_->size());
  }
  std::unique_ptr<MicroBatchTuner> tuner;
  if (config_.autopipe.tune_micro_batches)
    tuner = std::make_unique<MicroBatchTuner>(
        *world_, resolve_in(config_.output.dir, config_.autopipe.micro_batch_file),
        TunedRunShape{spec.preset, config_.train.batch_size, config_.autodp.batch_policy, world_->size()});
  if (config_.autocache.mode != "off" && freeze)
    cache_ = std::make_unique<CacheCoordinator>(config_.autocache, *world_, *model_, *train_data_, device_,
                                                config_.data.seq_len, config_.train.seed);
  SubLayerTimes times;
  if (config_.autopipe.cost == "measured")
    times = profile_sublayers(*model_, *train_data_, device_,
                              std::max<int64_t>(1, config_.train.batch_size / (replicas * micro_batches)), *world_);
  AutoPipePlanner planner(config_.autopipe, config_.parallel.schedule, config_.autocache.mode != "off",
                          sublayer_costs(*model_, times), groups->stages());

  sampler_ = std::make_unique<EpochSampler>(train_data_->size(), config_.train.batch_size, config_.train.seed,
                                            /*shuffle=*/true, /*drop_last=*/true);
  auto layout = std::make_unique<StageLayout>(config_.parallel, config_.autodp, config_.train, *world_, device_,
                                              *model_, *task_, std::move(groups));
  elastic_ = std::make_unique<ElasticController>(std::move(layout), std::move(planner), std::move(freeze),
                                                 std::move(tuner), cache_.get(), *world_, *model_, *sampler_,
                                                 config_.parallel.schedule);
  initial_stages_ = elastic_->layout().stages();
  steps_per_epoch_ = sampler_->batches_per_epoch();
  total_steps_ = steps_per_epoch_ * config_.train.epochs;
  if (config_.train.max_steps > 0) total_steps_ = std::min(total_steps_, config_.train.max_steps);
  schedule_ = std::make_unique<LrSchedule>(config_.train, total_steps_);

  feeder_ = std::make_unique<BatchFeeder>(train_data_, config_.data.prefetch_batches, device_, config_.train.seed);
  step_settings.schedule = parse_pipeline_schedule(config_.parallel.schedule);
  step_settings.comm_timeout = comm_timeout(config_);
  step_settings.grad_clip_norm = config_.train.grad_clip_norm;
  step_settings.prefetch = config_.data.prefetch_batches > 0;
  step_ = std::make_unique<StepRunner>(step_settings, *world_, *model_, *train_data_, *feeder_, *elastic_,
                                       cache_.get());
  if (probe_data_) {
    probe_evaluator_ = std::make_unique<Evaluator>(
        probe_data_, *task_, config_.eval.batch_size > 0 ? config_.eval.batch_size : config_.train.batch_size,
        *world_, *feeder_);
    elastic_->set_probe([this] { return probe_evaluator_->run(*model_, elastic_->layout()).loss; });
  }
  evaluator_ = std::make_unique<Evaluator>(
      eval_data_, *task_, config_.eval.batch_size > 0 ? config_.eval.batch_size : config_.train.batch_size, *world_,
      *feeder_);

  // Rank 0 speaks for the job: metrics, summary and the exported model.
  if (is_rank0()) {
    ensure_writable_directory(config_.output.dir, "output.dir");
    metrics_ = std::make_unique<MetricsLog>(resolve_in(config_.output.dir, config_.output.metrics_file),
                                            /*print_to_stdout=*/true);
  } else {
    metrics_ = std::make_unique<MetricsLog>("", /*print_to_stdout=*/false);
  }
  checkpoints_ = std::make_unique<RunCheckpoints>(config_.checkpoint, *world_);
  if (config_.checkpoint.resume != "never") resume(config_.checkpoint.resume);
  // A run resumed with a frozen prefix decides about AutoCache now (a fresh
  // process has no timings: a probe batch), not only at the next decision
  // point, which may be an epoch away.
  if (elastic_->layout().frozen_blocks() > 0) elastic_->decide_cache(progress_.epoch);

  int64_t parameters = 0;
  for (const auto& sublayer : model_->sublayers()) parameters += sublayer->parameter_count();
  spdlog::info("[train] model {}: {} sub-layers, {} parameters; data {}: {} train / {} eval samples; "
               "{} steps ({} per epoch), batch {}, {} threads, OpenMP wait policy {}",
               spec.preset, model_->num_sublayers(), parameters, train_data_->name(), train_data_->size(),
               eval_data_ ? eval_data_->size() : 0, total_steps_, steps_per_epoch_, config_.train.batch_size, threads,
               openmp_wait_policy_description());
}

Trainer::~Trainer() = default;

TransformerModel& Trainer::model() { return *model_; }
const ProcessGroups& Trainer::groups() const { return elastic_->layout().groups(); }
bool Trainer::is_rank0() const { return world_->rank() == 0; }

std::pair<size_t, size_t> Trainer::stage_range() const {
  const StageLayout& layout = elastic_->layout();
  return {layout.stage_begin(), layout.stage_end()};
}

const TrainerState& Trainer::state() const {
  snapshot_ = progress_;
  snapshot_.batch_policy = config_.autodp.batch_policy;
  elastic_->save_into(snapshot_);
  return snapshot_;
}

EvalResult Trainer::evaluate() { return evaluator_->run(*model_, elastic_->layout()); }

void Trainer::resume(const std::string& resume) {
  // The run's K0 (initial_stages_) decides whether this is the saving layout.
  const std::optional<ResumePoint> point = checkpoints_->load_for_resume(resume, initial_stages_);
  if (!point) return;
  const LoadedCheckpoint& primary = point->primary();
  const std::string& path = point->saved.source;
  TrainerState saved = primary.state;
  const std::string differences = architecture_differences(primary.model_config, hf_config_json(model_->spec()));
  if (!differences.empty())
    throw ModelError("checkpoint '" + path + "' was written for a different model: " +
                     first_tensor_difference(point->saved, model_->hf_parameters()) + "; " + differences);
  if (primary.optimizer_name != elastic_->layout().optimizer().name()) {
    throw ConfigError("train.optimizer: the checkpoint '" + path + "' holds " + primary.optimizer_name +
                      " state but the configuration asks for " + elastic_->layout().optimizer().name());
  }
  if (saved.batch_policy != config_.autodp.batch_policy) {
    throw ConfigError("autodp.batch_policy: checkpoint '" + path + "' was written with " + saved.batch_policy +
                      " but the configuration asks for " + config_.autodp.batch_policy +
                      "; resume with the same policy (it decides the batch and LR of every layout)");
  }
  FreezeController* freeze = elastic_->freeze();
  if (!freeze && (saved.frozen_prefix != 0 || (point->same_layout && saved.pipeline_stages != initial_stages_)))
    throw ConfigError("checkpoint '" + path + "' has " + std::to_string(saved.frozen_prefix) +
                      " frozen blocks on " + std::to_string(saved.pipeline_stages) +
                      " stages; resume it with the same freeze.policy");
  if (point->same_layout) {
    // The layout the parts were written in, before loading them.
    if (saved.frozen_prefix != 0 || saved.pipeline_stages != initial_stages_)
      elastic_->restore(static_cast<int>(saved.frozen_prefix), static_cast<int>(saved.pipeline_stages),
                        saved.cache_served_share);
  } else {
    // Another layout: AutoPipe plans this job's stages for the frozen prefix.
    elastic_->restore_onto(static_cast<int>(saved.frozen_prefix), saved.cache_served_share);
    // The open interval's statistics, summed over the saving ranks as the
    // next decision's all-reduce would have: rank 0 carries them.
    std::vector<double> totals(saved.freeze_interval_sums.size(), 0.0);
    if (world_->rank() == 0)
      for (const auto& [part, loaded] : point->parts)
        for (size_t b = 0; b < totals.size() && b < loaded.state.freeze_interval_sums.size(); ++b)
          totals[b] += loaded.state.freeze_interval_sums[b];
    saved.freeze_interval_sums = totals;
  }
  if (freeze) {
    freeze->restore_policy(saved);
    // The statistics the next decisions see: the open interval and the
    // smoothing window's past intervals, so they decide as uninterrupted.
    freeze->restore_statistics(saved, primary.path + "/trainer_state.json");
  }
  const StageLayout& layout = elastic_->layout();
  // The LR schedule and the run's length count steps of the saved batch
  // (keep_global_batch) or samples in steps of it (scale_lr): another
  // batch would silently shift both. Checkpoints from before the batch was
  // recorded (0) are taken as they are.
  if (saved.global_batch != 0 && saved.global_batch != layout.global_batch()) {
    throw ConfigError("train.batch_size: checkpoint '" + path + "' trained with a global batch of " +
                      std::to_string(saved.global_batch) + " in its layout, this job's " +
                      layout_text(layout.stages(), layout.active_replicas()) + " gives " +
                      std::to_string(layout.global_batch()) + " (autodp.batch_policy " + config_.autodp.batch_policy +
                      (config_.autodp.batch_policy == "scale_lr" ? ", which ties the batch to the replica count" : "") +
                      "); resume with the same train.batch_size and replicas");
  }
  // This rank's sub-layers, by name, from whichever parts hold them.
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, param] : layout.stage_parameters()) {
      const torch::Tensor stored = point->model_tensor(name);
      if (!stored.defined())
        throw ModelError("checkpoint '" + path + "' holds no tensor '" + name + "' (stage " +
                         std::to_string(layout.stage()) + " of " +
                         layout_text(layout.stages(), layout.active_replicas()) + " needs it)");
      if (!stored.sizes().equals(param.sizes()))
        throw ModelError(point->model_file(name) + ": tensor '" + name + "' has shape " +
                         shape_string(stored.sizes()) + ", the model expects " + shape_string(param.sizes()));
      param.copy_(stored);
    }
  }
  layout.optimizer().load_state(
      layout.optimizer().slots_from([&](const std::string& key) { return point->optimizer_tensor(key); }),
      path + " (optimizer state)");
  // The torch generator only draws for a model driven outside the executor
  // (counter-based dropout needs none): a rank's own, when it had one.
  if (point->same_layout) restore_rng(primary.rng, primary.path + "/rng.safetensors");
  progress_ = saved;
  if (is_rank0()) {
    spdlog::info("[checkpoint] resumed step {} saved on {} onto {} rank{} ({}x{}) from {}, epoch {} (+{} samples)",
                 progress_.step, point->saved.layout_text(), world_->size(), world_->size() == 1 ? "" : "s",
                 layout.stages(), layout.active_replicas(), path, progress_.epoch, progress_.sampler_position);
    if (cache_ && layout.frozen_blocks() > 0)
      spdlog::info("[autocache] starts empty after the resume: the frozen prefix's outputs are computed, and "
                   "cached again, as samples come");
  }
}

std::string Trainer::save_checkpoint() {
  CheckpointData data;
  data.state = state();
  data.model_config = hf_config_json(model_->spec());
  data.train_config = config_to_json(config_);
  const StageLayout& layout = elastic_->layout();
  data.optimizer_name = layout.optimizer().name();
  data.model = layout.stage_parameters();
  data.optimizer = layout.optimizer().state();
  data.rng = rng_state();
  return checkpoints_->save(data, layout.stages(), layout.groups().replicas(), initial_stages_, layout.micro_batches());
}

double Trainer::next_lr() const {
  const StageLayout& layout = elastic_->layout();
  const double position = layout.scale_lr() ? schedule_position(progress_.epoch, steps_per_epoch_,
                                                                progress_.sampler_position, config_.train.batch_size)
                                            : static_cast<double>(progress_.step);
  return schedule_->lr_at_position(position) * layout.lr_scale();
}

bool Trainer::training_done() const {
  if (!elastic_->layout().scale_lr()) return progress_.step >= total_steps_;
  return schedule_position(progress_.epoch, steps_per_epoch_, progress_.sampler_position, config_.train.batch_size) >=
         static_cast<double>(total_steps_);
}

void Trainer::run_eval(const char* when, Segment& segment) {
  EvalResult eval = evaluate();
  segment.result.eval = eval;
  MetricFields fields = {{"epoch", progress_.epoch}, {"step", progress_.step}, {"eval_loss", eval.loss},
                         {"elapsed_seconds", segment.elapsed()}};
  for (const auto& [name, value] : eval.metrics) fields.emplace_back("eval_" + name, value);
  fields.emplace_back("eval_samples", eval.samples);
  metrics_->emit("eval", fields);
  if (update_early_stop(config_.eval, *task_, eval, progress_)) {
    spdlog::info("[train] early stop after {} evaluations without improvement of {} ({})",
                 progress_.evals_without_improvement, config_.eval.early_stop_metric, when);
    segment.result.early_stopped = true;
    segment.stop = true;
  }
}

bool Trainer::step_once(const std::vector<int64_t>& indices, Segment& segment) {
  const int64_t rows = static_cast<int64_t>(indices.size());
  const double lr = next_lr();
  const StepResult step =
      step_->run(indices, progress_.epoch, progress_.step, *sampler_, lr, stop_requested());
  last_lr_ = lr;
  elastic_->record_step(step.seconds, rows);
  ++progress_.step;
  progress_.samples_seen += rows;
  progress_.sampler_position = sampler_->state().position;
  segment.window_loss += step.loss;
  ++segment.window_steps;
  segment.window_samples += rows;
  segment.epoch_samples += rows;
  segment.result.train_loss = step.loss;
  if (progress_.step % config_.train.log_every_steps == 0 || training_done()) {
    const double seconds = seconds_since(segment.window_start);
    segment.result.train_loss = segment.window_loss / static_cast<double>(segment.window_steps);
    metrics_->emit("train", {{"epoch", progress_.epoch},
                             {"step", progress_.step},
                             {"train_loss", segment.result.train_loss},
                             {"lr", last_lr_},
                             {"global_batch", elastic_->layout().global_batch()},
                             {"samples_per_sec", seconds > 0 ? segment.window_samples / seconds : 0.0}});
    segment.window_loss = 0.0;
    segment.window_steps = 0;
    segment.window_samples = 0;
    segment.window_start = SteadyClock::now();
  }
  metrics_->progress(progress_.sampler_position / config_.train.batch_size, steps_per_epoch_,
                     "epoch " + std::to_string(progress_.epoch) + " loss " + std::to_string(step.loss));
  return step.stop;
}

void Trainer::end_epoch(Segment& segment) {
  const double epoch_seconds = seconds_since(segment.epoch_start);
  ++progress_.epoch;
  progress_.sampler_position = 0;
  const StageLayout& layout = elastic_->layout();
  metrics_->emit("epoch", {{"epoch", progress_.epoch},
                           {"step", progress_.step},
                           {"train_loss", segment.result.train_loss},
                           {"frozen_blocks", static_cast<int64_t>(layout.frozen_blocks())},
                           {"stages", static_cast<int64_t>(layout.stages())},
                           {"replicas", static_cast<int64_t>(layout.active_replicas())},
                           {"idle_ranks", static_cast<int64_t>(layout.idle_ranks())},
                           {"epoch_seconds", epoch_seconds},
                           {"elapsed_seconds", segment.elapsed()},
                           {"samples_per_sec", epoch_seconds > 0 ? segment.epoch_samples / epoch_seconds : 0.0},
                           {"samples", segment.epoch_samples},
                           {"global_batch", layout.global_batch()},
                           {"cache_hit_rate", cache_ ? CacheCoordinator::share_from_cache(cache_->served(),
                                                                                          segment.served_before)
                                                     : 0.0}});
  if (config_.freeze.every_steps == 0 && !training_done())
    elastic_->decide("epoch boundary", progress_.epoch, progress_.step, *metrics_);
  if (config_.eval.every_epochs > 0 && progress_.epoch % config_.eval.every_epochs == 0 &&
      !segment.evaluated_this_epoch)
    run_eval("epoch cadence", segment);
  if (config_.checkpoint.every_epochs > 0 && progress_.epoch % config_.checkpoint.every_epochs == 0) {
    progress_.elapsed_seconds = segment.elapsed();
    segment.result.last_checkpoint = save_checkpoint();
  }
}

// The loop, top to bottom: each step of each epoch, then the decisions,
// evaluations and checkpoints their cadences ask for, until the run's
// length, an early stop, a stop request or `limits` ends it.
TrainResult Trainer::run(const RunLimits& limits) {
  Segment segment;
  segment.elapsed_before = progress_.elapsed_seconds;
  segment.samples_before = progress_.samples_seen;
  while (!segment.stop && progress_.epoch < config_.train.epochs && !training_done()) {
    sampler_->set_state({progress_.epoch, progress_.sampler_position});
    segment.evaluated_this_epoch = false;
    segment.epoch_start = SteadyClock::now();
    segment.epoch_samples = 0;
    if (cache_) segment.served_before = cache_->served();
    for (std::vector<int64_t> indices = sampler_->next_batch(); !indices.empty(); indices = sampler_->next_batch()) {
      const bool stop_asked = step_once(indices, segment);
      const int64_t step = progress_.step;
      if (config_.freeze.every_steps > 0 && step % config_.freeze.every_steps == 0 && !training_done())
        elastic_->decide("step cadence", progress_.epoch, step, *metrics_);
      if (config_.eval.every_steps > 0 && step % config_.eval.every_steps == 0) {
        run_eval("step cadence", segment);
        segment.evaluated_this_epoch = sampler_->epoch_finished();
      }
      if (config_.checkpoint.every_steps > 0 && step % config_.checkpoint.every_steps == 0)
        segment.result.last_checkpoint = save_checkpoint();
      if (stop_asked || (limits.stop_after_step > 0 && step >= limits.stop_after_step)) {
        progress_.elapsed_seconds = segment.elapsed();
        segment.result.last_checkpoint = save_checkpoint();
        if (segment.result.last_checkpoint.empty())
          spdlog::warn("[train] stopping at step {} without a checkpoint: checkpoint.dir is not set", step);
        segment.result.interrupted = true;
        segment.result.steps = step;
        segment.result.epochs_completed = progress_.epoch;
        segment.result.train_seconds = seconds_since(segment.start);
        segment.result.pipeline_seconds = step_->pipeline_seconds();
        segment.result.pipeline_wait_seconds = step_->pipeline_wait_seconds();
        return segment.result;
      }
      if (segment.stop || training_done()) break;
    }
    // An early stop, or max_steps ending the run inside an epoch.
    if (segment.stop || (training_done() && !sampler_->epoch_finished())) break;
    end_epoch(segment);
  }
  return finish(segment);
}

TrainResult Trainer::finish(Segment& segment) {
  TrainResult& result = segment.result;
  if (!result.eval && evaluator_->has_data()) run_eval("end of training", segment);
  result.steps = progress_.step;
  result.epochs_completed = progress_.epoch;
  result.train_seconds = seconds_since(segment.start);
  progress_.elapsed_seconds = segment.elapsed_before + result.train_seconds;
  const int64_t samples = progress_.samples_seen - segment.samples_before;
  result.samples_per_second = result.train_seconds > 0 ? samples / result.train_seconds : 0.0;
  result.pipeline_seconds = step_->pipeline_seconds();
  result.pipeline_wait_seconds = step_->pipeline_wait_seconds();

  const StageLayout& layout = elastic_->layout();
  if (config_.output.export_model) gather_model_to_first_stage(*model_, layout);
  if (!is_rank0()) return result;
  if (config_.output.export_model) export_hf_model(*model_, config_.output.dir);
  nlohmann::json summary = {{"steps", result.steps},
                            {"epochs_completed", result.epochs_completed},
                            {"train_loss", result.train_loss},
                            {"train_seconds", progress_.elapsed_seconds},
                            {"samples_per_second", result.samples_per_second},
                            {"early_stopped", result.early_stopped},
                            {"model", model_->spec().preset},
                            {"pipeline_stages", layout.stages()},
                            {"replicas", layout.active_replicas()},
                            {"micro_batches", layout.micro_batches()},
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
  fields.emplace_back("train_seconds", progress_.elapsed_seconds);
  metrics_->emit("summary", fields);
  return result;
}

}  // namespace pipet
