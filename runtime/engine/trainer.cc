#include "runtime/engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/strings.h"
#include "runtime/core/threads.h"
#include "runtime/data/dataset.h"
#include "runtime/data/sampler.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/export.h"
#include "runtime/engine/lr_schedule.h"
#include "runtime/engine/metrics.h"
#include "runtime/engine/optimizer.h"
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

Activations model_inputs(const Batch& batch) {
  Activations in;
  if (batch.pixel_values.defined()) {
    in.hidden = batch.pixel_values;
  } else {
    in.hidden = batch.input_ids;
    in.attention_mask = batch.attention_mask;
    in.token_type_ids = batch.token_type_ids;
  }
  return in;
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

}  // namespace

Trainer::Trainer(const TrainConfig& config) : config_(config), state_(std::make_unique<TrainerState>()) {
  validate_config(config_);
  const int threads = configure_threads(config_.runtime.threads);
  if (config_.runtime.device != "cpu") {
    throw ConfigError("runtime.device: '" + config_.runtime.device +
                      "' is not available in this build (CPU only; the GPU path is built with PIPET_WITH_CUDA)");
  }

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

  NamedTensors trainable;
  for (auto& [name, tensor] : model_->hf_parameters()) {
    if (tensor.requires_grad()) trainable.emplace_back(name, tensor);
  }
  optimizer_ = make_optimizer(config_.train, std::move(trainable));

  sampler_ = std::make_unique<EpochSampler>(train_data_->size(), config_.train.batch_size,
                                            config_.train.seed, /*shuffle=*/true, /*drop_last=*/true);
  steps_per_epoch_ = sampler_->batches_per_epoch();
  total_steps_ = steps_per_epoch_ * config_.train.epochs;
  if (config_.train.max_steps > 0) total_steps_ = std::min(total_steps_, config_.train.max_steps);
  schedule_ = std::make_unique<LrSchedule>(config_.train, total_steps_);

  ensure_writable_directory(config_.output.dir, "output.dir");
  metrics_ = std::make_unique<MetricsLog>(resolve_in(config_.output.dir, config_.output.metrics_file),
                                          /*print_to_stdout=*/true);
  if (!config_.checkpoint.dir.empty()) {
    checkpointer_ = std::make_unique<Checkpointer>(config_.checkpoint.dir, config_.checkpoint.keep);
  }
  if (config_.checkpoint.resume != "never") resume_from(config_.checkpoint.resume);

  int64_t parameters = 0;
  for (const auto& sublayer : model_->sublayers()) parameters += sublayer->parameter_count();
  spdlog::info("[train] model {}: {} sub-layers, {} parameters; data {}: {} train / {} eval samples; "
               "{} steps ({} per epoch), batch {}, {} threads, OpenMP wait policy {}",
               spec.preset, model_->num_sublayers(), parameters, train_data_->name(), train_data_->size(),
               eval_data_ ? eval_data_->size() : 0, total_steps_, steps_per_epoch_,
               config_.train.batch_size, threads, openmp_wait_policy_description());
}

Trainer::~Trainer() = default;

TransformerModel& Trainer::model() { return *model_; }
const TrainerState& Trainer::state() const { return *state_; }

void Trainer::resume_from(const std::string& path_or_auto) {
  std::optional<LoadedCheckpoint> checkpoint;
  if (path_or_auto == "auto") {
    if (!checkpointer_) return;
    checkpoint = checkpointer_->load_latest();
    if (!checkpoint) return;
  } else {
    checkpoint = Checkpointer::load(path_or_auto);
  }
  const std::string& path = checkpoint->path;
  const std::string differences = architecture_differences(checkpoint->model_config, hf_config_json(model_->spec()));
  if (!differences.empty()) {
    throw ModelError("checkpoint '" + path + "' was written for a different model: " + differences);
  }
  if (checkpoint->optimizer_name != optimizer_->name()) {
    throw ConfigError("train.optimizer: the checkpoint '" + path + "' holds " + checkpoint->optimizer_name +
                      " state but the configuration asks for " + optimizer_->name());
  }
  model_->load_hf_parameters(checkpoint->model, path + "/model.safetensors", /*allow_head_reinit=*/false);
  optimizer_->load_state(checkpoint->optimizer, path + "/optimizer.safetensors");
  restore_rng(checkpoint->rng, path + "/rng.safetensors");
  *state_ = checkpoint->state;
  spdlog::info("[checkpoint] resumed from {} at step {}, epoch {} (+{} samples)", path, state_->step,
               state_->epoch, state_->sampler_position);
}

std::string Trainer::save_checkpoint() {
  if (!checkpointer_) return "";
  CheckpointData data;
  data.state = *state_;
  data.model_config = hf_config_json(model_->spec());
  data.train_config = config_to_json(config_);
  data.optimizer_name = optimizer_->name();
  data.model = model_->hf_parameters();
  data.optimizer = optimizer_->state();
  data.rng = rng_state();
  const std::string path = checkpointer_->save(data);
  spdlog::info("[checkpoint] saved {}", path);
  return path;
}

double Trainer::train_step(const Batch& batch) {
  model_->train();
  optimizer_->zero_grad();
  torch::Tensor logits = model_->forward(model_inputs(batch));
  torch::Tensor loss = task_->loss(logits, batch.labels);
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value)) {
    throw TrainingDiverged("training diverged at step " + std::to_string(state_->step + 1) +
                           ": the loss is " + std::to_string(loss_value) + " (try a lower train.lr)");
  }
  loss.backward();
  const double grad_norm = clip_grad_norm(optimizer_->parameters(), config_.train.grad_clip_norm);
  if (!std::isfinite(grad_norm)) {
    throw TrainingDiverged("training diverged at step " + std::to_string(state_->step + 1) +
                           ": the gradient norm is " + std::to_string(grad_norm) +
                           " (try a lower train.lr or train.grad_clip_norm)");
  }
  optimizer_->step(schedule_->lr_at(state_->step));
  return loss_value;
}

EvalResult Trainer::evaluate() {
  if (!eval_data_ || eval_data_->size() == 0) return EvalResult{};
  torch::NoGradGuard no_grad;
  model_->eval();
  const int64_t batch_size = config_.eval.batch_size > 0 ? config_.eval.batch_size : config_.train.batch_size;
  std::unique_ptr<EvalAccumulator> accumulator = task_->make_evaluator();
  for (int64_t begin = 0; begin < eval_data_->size(); begin += batch_size) {
    const int64_t end = std::min(begin + batch_size, eval_data_->size());
    std::vector<int64_t> indices;
    for (int64_t i = begin; i < end; ++i) indices.push_back(i);
    Batch batch = eval_data_->get_batch(indices, /*epoch=*/0);
    accumulator->add(model_->forward(model_inputs(batch)), batch.labels, batch.sample_ids);
  }
  model_->train();
  return accumulator->result();
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
    MetricFields fields = {{"epoch", state_->epoch}, {"step", state_->step}, {"eval_loss", eval.loss}};
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

  while (!stop && state_->epoch < config_.train.epochs && state_->step < total_steps_) {
    sampler_->set_state({state_->epoch, state_->sampler_position});
    bool evaluated_this_epoch = false;
    for (std::vector<int64_t> indices = sampler_->next_batch(); !indices.empty();
         indices = sampler_->next_batch()) {
      Batch batch = train_data_->get_batch(indices, state_->epoch);
      const double loss = train_step(batch);
      ++state_->step;
      state_->samples_seen += batch.size();
      state_->sampler_position = sampler_->state().position;
      window_loss += loss;
      ++window_steps;
      window_samples += batch.size();
      result.train_loss = loss;

      if (state_->step % config_.train.log_every_steps == 0 || state_->step == total_steps_) {
        const double seconds = seconds_since(window_start);
        result.train_loss = window_loss / static_cast<double>(window_steps);
        metrics_->emit("train", {{"epoch", state_->epoch}, {"step", state_->step},
                                 {"train_loss", result.train_loss}, {"lr", schedule_->lr_at(state_->step - 1)},
                                 {"samples_per_sec", seconds > 0 ? window_samples / seconds : 0.0}});
        window_loss = 0.0;
        window_steps = 0;
        window_samples = 0;
        window_start = Clock::now();
      }
      metrics_->progress(state_->sampler_position / config_.train.batch_size, steps_per_epoch_,
                         "epoch " + std::to_string(state_->epoch) + " loss " + std::to_string(loss));

      if (config_.eval.every_steps > 0 && state_->step % config_.eval.every_steps == 0) {
        run_eval("step cadence");
        evaluated_this_epoch = sampler_->epoch_finished();
      }
      if (config_.checkpoint.every_steps > 0 && state_->step % config_.checkpoint.every_steps == 0) {
        result.last_checkpoint = save_checkpoint();
      }
      const bool limit_reached = limits.stop_after_step > 0 && state_->step >= limits.stop_after_step;
      if (stop_requested() || limit_reached) {
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
        return result;
      }
      if (stop || state_->step >= total_steps_) break;
    }
    if (stop) break;
    if (state_->step >= total_steps_ && !sampler_->epoch_finished()) {
      break;  // max_steps ended the run inside an epoch
    }
    // Epoch complete.
    ++state_->epoch;
    state_->sampler_position = 0;
    metrics_->emit("epoch", {{"epoch", state_->epoch}, {"step", state_->step},
                             {"train_loss", result.train_loss}});
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

  if (config_.output.export_model) export_hf_model(*model_, config_.output.dir);
  nlohmann::json summary = {{"steps", result.steps},
                            {"epochs_completed", result.epochs_completed},
                            {"train_loss", result.train_loss},
                            {"train_seconds", state_->elapsed_seconds},
                            {"samples_per_second", result.samples_per_second},
                            {"early_stopped", result.early_stopped},
                            {"model", model_->spec().preset},
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
