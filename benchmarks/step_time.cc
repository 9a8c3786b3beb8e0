// bench_step_time: the wall time of one full training step of our engine
// against PyTorch eager on the same architecture, weights, batch, optimizer
// and thread count, side by side in one table.
//
// A step is: forward, cross-entropy, backward, global grad-norm clipping,
// AdamW (no decay for 1-D parameters), zero_grad (gradients released). ms/step
// is the median over the timed steps; ratio = ours / pytorch (below 1 means we
// are faster). On a GPU a step synchronises once, where the trainer does (the
// loss and gradient norms read together), unless --breakdown drains the
// device after each part to time it.
//
// Correctness runs alongside: before timing, both sides run --check-steps
// steps with dropout off from the same initial weights; every step's loss and
// gradient norm must agree within --tolerance (relative), else the row's check
// is FAILED and the exit code is 20. See benchmarks/README.md for all flags.
//
// --profile DIR: after the timed steps, --profile-steps more steps of ours run
// under LibTorch's profiler; their op table (text and JSON, the schema of
// benchmarks/gpu/op_profile.py) and a Chrome trace go to DIR.
#include "benchmarks/harness.h"
#include "benchmarks/op_profiler.h"
#include "benchmarks/profile_table.h"
#include "benchmarks/pytorch_reference.h"
#include "runtime/core/allocator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/core/strings.h"
#include "runtime/core/threads.h"
#include "runtime/core/torch_compat.h"
#include "runtime/engine/optimizer.h"
#include "runtime/model/model.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#ifndef PIPET_BENCH_SOURCE_DIR
#error "PIPET_BENCH_SOURCE_DIR must name the benchmarks/ source directory"
#endif

namespace pipet::bench {
namespace {

// Exit codes beyond errors.h's, documented in benchmarks/README.md.
constexpr int kExitCheckFailed = 20;
constexpr int kExitRatioAbove = 21;
constexpr int kExitPytorchMissing = 22;

struct StepTimeOptions {
  HarnessOptions harness;
  std::vector<std::string> models = {"vit-tiny", "bert-tiny"};
  std::vector<int> threads = {1};
  int64_t batch = 32;
  int64_t seq = 128;
  int64_t labels = 10;
  int rounds = 1;
  int check_steps = 2;
  double tolerance = 1e-4;
  double lr = 1e-3;
  double weight_decay = 0.01;
  double clip_norm = 1.0;
  uint64_t seed = 42;
  std::string python = "/usr/bin/python3";
  bool no_pytorch = false;
  bool require_pytorch = false;
  double fail_above_ratio = 0.0;
  bool breakdown = false;
  bool malloc_tuning = false;   // the PyTorch side gets the engine's malloc settings too
  bool allocator_tuned = false; // whether configure_allocator() applied them here
  std::string work_dir;
  std::string log_level = "warn";
  std::string device = "cpu";      // cpu | cuda (ours only: the GPU reference is benchmarks/gpu/)
  std::string precision = "fp32";  // fp32 | bf16 (autocast forward, fp32 weights and AdamW)
  std::string profile_dir;         // empty: no op profile
  int profile_steps = 5;
};

void validate(const StepTimeOptions& o) {
  validate_harness_options(o.harness);
  if (o.models.empty()) throw ConfigError("--models: give at least one model preset");
  if (o.threads.empty()) throw ConfigError("--threads: give at least one thread count");
  for (int t : o.threads) {
    if (t < 1) throw ConfigError("--threads: thread counts must be >= 1, got " + std::to_string(t));
  }
  if (o.batch < 1) throw ConfigError("--batch must be >= 1, got " + std::to_string(o.batch));
  if (o.seq < 2) throw ConfigError("--seq must be >= 2, got " + std::to_string(o.seq));
  if (o.labels < 2) throw ConfigError("--labels must be >= 2, got " + std::to_string(o.labels));
  if (o.rounds < 1) throw ConfigError("--rounds must be >= 1, got " + std::to_string(o.rounds));
  if (o.check_steps < 1) {
    throw ConfigError("--check-steps must be >= 1, got " + std::to_string(o.check_steps));
  }
  if (!(o.tolerance > 0.0)) throw ConfigError("--tolerance must be > 0");
  if (!(o.lr >= 0.0)) throw ConfigError("--lr must be >= 0");
  if (!(o.weight_decay >= 0.0)) throw ConfigError("--weight-decay must be >= 0");
  if (!(o.clip_norm > 0.0)) throw ConfigError("--clip-norm must be > 0");
  if (!(o.fail_above_ratio >= 0.0)) throw ConfigError("--fail-above-ratio must be >= 0 (0 = off)");
  if (o.device != "cpu" && o.device != "cuda")
    throw ConfigError("--device must be cpu or cuda, got '" + o.device + "'");
  if (o.precision != "fp32" && o.precision != "bf16")
    throw ConfigError("--precision must be fp32 or bf16, got '" + o.precision + "'");
  if (o.device == "cuda" && !torch::cuda::is_available())
    throw ConfigError("--device cuda: this LibTorch has no CUDA support or no GPU is visible");
  if (o.device == "cuda" && !o.no_pytorch)
    throw ConfigError("--device cuda times ours only (add --no-pytorch); the GPU references "
                      "(transformers eager and torch.compile) are benchmarks/gpu/hf_step_time.py");
  if (o.no_pytorch && o.require_pytorch) {
    throw ConfigError("--no-pytorch and --require-pytorch contradict each other");
  }
  if (o.profile_steps < 1) {
    throw ConfigError("--profile-steps must be >= 1, got " + std::to_string(o.profile_steps));
  }
}

// The shortest text that reads back as exactly `value`.
std::string number_arg(double value) {
  std::array<char, 32> buffer{};
  const auto end = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value).ptr;
  return std::string(buffer.data(), end);
}

// The parts of a step, timed separately (medians reported with --breakdown),
// under the names the reference uses.
constexpr const char* kPhaseNames[] = {"forward_loss", "backward", "clip", "optimizer_zero_grad"};
using PhaseSamples = std::map<std::string, std::vector<double>>;

struct StepValues {
  double loss = 0.0;
  double grad_norm = 0.0;
};

// The model's inputs and labels: a fixed random batch, saved for the reference.
struct FixedBatch {
  Activations inputs;
  torch::Tensor labels;
  std::vector<std::pair<std::string, torch::Tensor>> named() const {
    std::vector<std::pair<std::string, torch::Tensor>> all{{"labels", labels}};
    if (inputs.attention_mask.defined()) {
      all.emplace_back("input_ids", inputs.hidden);
      all.emplace_back("attention_mask", inputs.attention_mask);
      all.emplace_back("token_type_ids", inputs.token_type_ids);
    } else {
      all.emplace_back("pixel_values", inputs.hidden);
    }
    return all;
  }
};

// ViT: standard-normal pixels. BERT: every row keeps between half and all of
// its `seq` positions as tokens (ids 1..vocab-1, segment B in the second half
// of the tokens); the rest is padding (id 0, mask 0).
FixedBatch make_batch(const ModelSpec& spec, const StepTimeOptions& o) {
  FixedBatch batch;
  const int64_t b = o.batch;
  if (spec.family == ModelFamily::kVit) {
    batch.inputs.hidden = torch::randn({b, spec.num_channels, spec.image_size, spec.image_size});
  } else {
    const int64_t s = o.seq;
    const auto lengths = torch::randint(s / 2, s + 1, {b, 1}, torch::kLong);
    const auto positions = torch::arange(s, torch::kLong).unsqueeze(0);
    const auto tokens = positions.lt(lengths);
    const auto ids = torch::randint(1, spec.vocab_size, {b, s}, torch::kLong);
    batch.inputs.hidden = ids.masked_fill(tokens.logical_not(), 0);
    batch.inputs.attention_mask = tokens.to(torch::kLong);
    batch.inputs.token_type_ids =
        positions.ge(lengths.div(2, "floor")).logical_and(tokens).to(torch::kLong);
  }
  batch.labels = torch::randint(0, spec.num_labels, {b}, torch::kLong);
  return batch;
}

// One training step of our engine, as the trainer runs it: the loss and the
// gradient norms leave the device in one copy after backward (the step's one
// host synchronisation on a GPU), then clipping and AdamW are queued and the
// next step starts while they run. With `drain_phases` (CUDA --breakdown) the
// device is drained at each part's end so the parts can be timed, at some
// cost to the whole.
class OurStep {
 public:
  OurStep(TransformerModel& model, Optimizer& optimizer, const FixedBatch& batch, double lr,
          double clip_norm, torch::Device device, c10::ScalarType autocast_dtype, bool drain_phases)
      : model_(model), optimizer_(optimizer), batch_(batch), lr_(lr), clip_norm_(clip_norm),
        device_(device), autocast_dtype_(autocast_dtype), drain_phases_(drain_phases && device.is_cuda()) {}

  StepValues run(PhaseSamples* phases) {
    const double t0 = now_ms();
    torch::Tensor loss;
    {
      // Forward and loss under autocast (bf16), backward outside it, as the trainer does.
      AutocastGuard autocast(device_.type(), autocast_dtype_);
      const auto logits = model_.forward(batch_.inputs);
      loss = torch::nn::functional::cross_entropy(logits, batch_.labels);
    }
    if (drain_phases_) finish();
    const double t1 = now_ms();
    loss.backward();
    if (drain_phases_) finish();
    const double t2 = now_ms();
    std::vector<torch::Tensor> grads;
    for (const auto& [name, p] : optimizer_.parameters())
      if (p.grad().defined()) grads.push_back(p.grad());
    const torch::Tensor host =
        torch::cat({loss.detach().to(torch::kDouble).reshape({1}), squared_gradient_norms(grads)})
            .to(torch::kCPU);
    StepValues values;
    values.loss = host[0].item<double>();
    values.grad_norm = std::sqrt(host.narrow(0, 1, host.numel() - 1).sum().item<double>());
    clip_gradients(grads, values.grad_norm, clip_norm_);
    const double t3 = now_ms();
    optimizer_.step(lr_);
    optimizer_.zero_grad();
    if (drain_phases_) finish();
    const double t4 = now_ms();
    if (phases != nullptr) {
      (*phases)["forward_loss"].push_back(t1 - t0);
      (*phases)["backward"].push_back(t2 - t1);
      (*phases)["clip"].push_back(t3 - t2);
      (*phases)["optimizer_zero_grad"].push_back(t4 - t3);
    }
    return values;
  }

  // Waits for the queued work (the last step's AdamW) to finish.
  void finish() const {
    if (device_.is_cuda()) torch::cuda::synchronize();
  }

 private:
  TransformerModel& model_;
  Optimizer& optimizer_;
  const FixedBatch& batch_;
  double lr_;
  double clip_norm_;
  torch::Device device_;
  c10::ScalarType autocast_dtype_;
  bool drain_phases_;
};

// What one side measured for one (model, threads) row, over all rounds.
struct SideResult {
  std::vector<double> samples_ms;        // every timed step
  PhaseSamples phases;                   // every timed step, per part
  std::vector<double> check_losses;      // from the first round
  std::vector<double> check_grad_norms;

  // Adds a later round's timings (its check values repeat the first's).
  void absorb(const SideResult& round) {
    samples_ms.insert(samples_ms.end(), round.samples_ms.begin(), round.samples_ms.end());
    for (const auto& [name, values] : round.phases) {
      auto& into = phases[name];
      into.insert(into.end(), values.begin(), values.end());
    }
  }
  TimingStats stats() const { return summarize(samples_ms); }
  std::optional<double> phase_median(const std::string& name) const {
    const auto it = phases.find(name);
    if (it == phases.end() || it->second.empty()) return std::nullopt;
    return summarize(it->second).median_ms;
  }
};

// The files the reference reads, written once per model.
struct ModelFiles {
  std::string config;
  std::string weights;
  std::string batch;
};

struct Row {
  std::string model;
  ModelFamily family = ModelFamily::kVit;
  int threads = 1;
  SideResult ours;
  std::optional<SideResult> pytorch;
  std::string pytorch_error;  // set when the reference ran and failed
  std::string check = "n/a";  // ok | FAILED | n/a
  double max_relative_difference = 0.0;
  std::optional<double> ratio;
};

ModelSpec resolve_preset(const std::string& preset, const StepTimeOptions& o) {
  ModelConfig config;
  config.preset = preset;
  config.num_labels = o.labels;
  ModelSpec spec;
  try {
    spec = resolve_model_spec(config, o.labels);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("--models: ") + e.what());
  }
  if (spec.family == ModelFamily::kBert && o.seq > spec.max_position_embeddings) {
    throw ConfigError("--seq " + std::to_string(o.seq) + " exceeds " + preset +
                      "'s max_position_embeddings (" + std::to_string(spec.max_position_embeddings) +
                      ")");
  }
  return spec;
}

// --profile: --profile-steps more steps under LibTorch's profiler, after the
// timed ones, so the timed figures carry no profiler overhead. Writes
// DIR/ours-<model>-b<batch>-t<threads>.ops.txt, .ops.json and .trace.json.
void profile_ours(OurStep& step, const ModelSpec& spec, const StepTimeOptions& o, int threads,
                  const torch::Device& device) {
  const std::string prefix = o.profile_dir + "/ours-" + spec.preset + "-b" +
                             std::to_string(o.batch) + "-t" + std::to_string(threads);
  std::vector<ProfiledEvent> events;
  double wall_ms = 0.0;
  {
    OpProfiler profiler(device.is_cuda());
    const double start = now_ms();
    for (int i = 0; i < o.profile_steps; ++i) step.run(nullptr);
    step.finish();
    wall_ms = now_ms() - start;
    events = profiler.finish(prefix + ".trace.json");
  }
  ProfileInfo info;
  info.source = "pipetransformer";
  info.label = spec.preset + " batch " + std::to_string(o.batch) + " " + o.precision +
               " threads " + std::to_string(threads);
  info.device = o.device;
  info.torch_version = TORCH_VERSION;
  info.steps = o.profile_steps;
  info.wall_ms_per_step = wall_ms / o.profile_steps;
  const auto profile = summarize_profile(events, std::move(info));
  std::ostringstream table;
  print_profile_table(profile, table, 80);
  write_file_atomic(prefix + ".ops.txt", table.str());
  write_json_results(prefix + ".ops.json", profile_json(profile));
  std::cout << "op profile: " << prefix << ".ops.txt, .ops.json, .trace.json ("
            << o.profile_steps << " steps, " << format_fixed(profile.info.wall_ms_per_step, 2)
            << " ms/step under the profiler)\n"
            << std::flush;
}

SideResult time_ours(const ModelSpec& spec, const std::map<std::string, torch::Tensor>& initial,
                     const FixedBatch& batch, const StepTimeOptions& o, int threads, bool profile) {
  configure_threads(threads);
  TransformerModel model(spec);
  model.load_hf_parameters(initial, "the benchmark's initial weights", /*allow_head_reinit=*/false);
  TrainLoopConfig train;
  train.optimizer = "adamw";
  train.lr = o.lr;
  train.weight_decay = o.weight_decay;
  const torch::Device device = o.device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  model.to(device);
  FixedBatch on_device;
  on_device.inputs.hidden = batch.inputs.hidden.to(device);
  if (batch.inputs.attention_mask.defined()) {
    on_device.inputs.attention_mask = batch.inputs.attention_mask.to(device);
    on_device.inputs.token_type_ids = batch.inputs.token_type_ids.to(device);
  }
  on_device.labels = batch.labels.to(device);
  auto optimizer = make_optimizer(train, model.hf_parameters());
  OurStep step(model, *optimizer, on_device, o.lr, o.clip_norm, device,
               o.precision == "bf16" ? torch::kBFloat16 : torch::kFloat, /*drain_phases=*/o.breakdown);

  SideResult result;
  model.eval();  // dropout off: the reference computes the same losses
  for (int i = 0; i < o.check_steps; ++i) {
    const auto values = step.run(nullptr);
    result.check_losses.push_back(values.loss);
    result.check_grad_norms.push_back(values.grad_norm);
  }
  model.train();
  for (int i = 0; i < o.harness.warmup; ++i) step.run(nullptr);
  // On a GPU the parts of an undrained step are only its launch times: they
  // are kept with --breakdown alone (which drains at each part's end).
  PhaseSamples* phases = device.is_cuda() && !o.breakdown ? nullptr : &result.phases;
  result.samples_ms = time_iterations(0, o.harness.iterations, [&] { step.run(phases); }).samples_ms;
  step.finish();
  if (profile) profile_ours(step, spec, o, threads, device);
  return result;
}

std::vector<double> doubles(const nlohmann::json& reply, const char* key) {
  const auto it = reply.find(key);
  if (it == reply.end() || !it->is_array()) {
    throw ReferenceFailed(std::string("the PyTorch reference's JSON has no array '") + key + "'");
  }
  std::vector<double> values;
  for (const auto& v : *it) {
    if (!v.is_number()) {
      throw ReferenceFailed(std::string("the PyTorch reference's '") + key + "' holds a non-number");
    }
    values.push_back(v.get<double>());
  }
  return values;
}

SideResult time_pytorch(const PythonTorch& python, const ModelSpec& spec, const ModelFiles& files,
                        const StepTimeOptions& o, int threads) {
  const std::string script = std::string(PIPET_BENCH_SOURCE_DIR) + "/reference/step_time.py";
  const std::vector<std::string> args = {
      "--family", spec.family == ModelFamily::kVit ? "vit" : "bert",
      "--config", files.config,
      "--weights", files.weights,
      "--batch", files.batch,
      "--threads", std::to_string(threads),
      "--warmup", std::to_string(o.harness.warmup),
      "--iterations", std::to_string(o.harness.iterations),
      "--check-steps", std::to_string(o.check_steps),
      "--lr", number_arg(o.lr),
      "--beta1", number_arg(TrainLoopConfig{}.adam_beta1),
      "--beta2", number_arg(TrainLoopConfig{}.adam_beta2),
      "--eps", number_arg(TrainLoopConfig{}.adam_eps),
      "--weight-decay", number_arg(o.weight_decay),
      "--clip-norm", number_arg(o.clip_norm)};
  const auto reply = run_python_reference(
      python, script, args, threads,
      o.malloc_tuning ? allocator_environment() : std::vector<std::string>{});
  const auto reported_threads = reply.value("threads", -1);
  if (reported_threads != threads) {
    throw ReferenceFailed("the PyTorch reference ran with " + std::to_string(reported_threads) +
                          " threads, asked for " + std::to_string(threads));
  }
  SideResult result;
  result.samples_ms = doubles(reply, "samples_ms");
  summarize(result.samples_ms);  // rejects an empty list
  result.check_losses = doubles(reply, "check_losses");
  result.check_grad_norms = doubles(reply, "check_grad_norms");
  const auto phases = reply.find("phases_ms");
  if (phases != reply.end() && phases->is_object()) {
    for (const char* name : kPhaseNames) {
      if (phases->contains(name)) result.phases[name] = doubles(*phases, name);
    }
  }
  return result;
}

// Compares every check step's loss and gradient norm; sets check and the
// largest relative difference.
void compare(Row& row, double tolerance) {
  const auto& ours = row.ours;
  const auto& theirs = *row.pytorch;
  if (ours.check_losses.size() != theirs.check_losses.size() ||
      ours.check_grad_norms.size() != theirs.check_grad_norms.size()) {
    row.check = "FAILED";
    row.pytorch_error = "the reference ran a different number of check steps";
    return;
  }
  double worst = 0.0;
  for (size_t i = 0; i < ours.check_losses.size(); ++i) {
    worst = std::max(worst, relative_difference(ours.check_losses[i], theirs.check_losses[i]));
    worst = std::max(worst,
                     relative_difference(ours.check_grad_norms[i], theirs.check_grad_norms[i]));
  }
  row.max_relative_difference = worst;
  row.check = worst <= tolerance ? "ok" : "FAILED";
}

std::string format_exponent(double value) {
  std::ostringstream out;
  out << std::scientific << std::setprecision(1) << value;
  return out.str();
}

nlohmann::json side_json(const SideResult& side, int64_t batch) {
  const auto stats = side.stats();
  auto j = stats.to_json();
  j["samples_per_s"] = batch * 1000.0 / stats.median_ms;
  nlohmann::json phases = nlohmann::json::object();
  for (const char* name : kPhaseNames) {
    if (const auto median = side.phase_median(name)) phases[name] = *median;
  }
  j["phases_median_ms"] = std::move(phases);
  j["check_losses"] = side.check_losses;
  j["check_grad_norms"] = side.check_grad_norms;
  return j;
}

void print_breakdown(const std::vector<Row>& rows, std::ostream& out) {
  ResultTable table({"model", "threads", "side", "forward+loss", "backward", "clip",
                     "adamw+zero_grad", "step"});
  const auto add = [&](const Row& row, const char* side, const SideResult& r) {
    const auto cell = [&](const char* key) {
      const auto median = r.phase_median(key);
      return median ? format_fixed(*median, 2) : std::string("n/a");
    };
    table.add_row({row.model, std::to_string(row.threads), side, cell("forward_loss"),
                   cell("backward"), cell("clip"), cell("optimizer_zero_grad"),
                   format_fixed(r.stats().median_ms, 2)});
  };
  for (const auto& row : rows) {
    add(row, "ours", row.ours);
    if (row.pytorch) add(row, "pytorch", *row.pytorch);
  }
  out << "\nbreakdown (median ms per part of the step):\n";
  table.print(out);
}

void print_header(const StepTimeOptions& o, const nlohmann::json& environment,
                  const PythonTorch& python) {
  std::cout << "bench_step_time: one training step (forward, cross-entropy, backward, clip "
            << o.clip_norm << ", AdamW lr " << o.lr << " wd " << o.weight_decay
            << ", zero_grad)\n"
            << environment_line(environment) << "\n"
            << "pytorch: "
            << (python.available ? "torch " + python.version + " eager via " + python.python
                                 : "unavailable (" + python.reason + ")")
            << "\nwarmup " << o.harness.warmup << ", iterations " << o.harness.iterations
            << ", rounds " << o.rounds << ", check steps " << o.check_steps << ", tolerance "
            << o.tolerance << ", malloc tuning: ours "
            << (o.allocator_tuned ? "on (as the engine ships)" : "off (tuned through the environment)")
            << ", pytorch " << (o.malloc_tuning ? "on (same settings)" : "off (its default)")
            << "\n";
  const double load = environment.value("load_average_1min", -1.0);
  const int cores = environment.value("cores", 0);
  if (cores > 0 && load > 0.75 * cores) {
    std::cout << "warning: load average " << format_fixed(load, 2) << " on " << cores
              << " cores: other processes compete for the CPU, so timings (threads > 1 "
                 "above all) are unreliable\n";
  }
  const bool multithreaded = std::any_of(o.threads.begin(), o.threads.end(), [](int t) { return t > 1; });
  const auto wait_policy = environment.value("omp_wait_policy", std::string());
  if (multithreaded && wait_policy != "PASSIVE" && wait_policy != "passive") {
    std::cout << "warning: OMP_WAIT_POLICY is not PASSIVE: idle OpenMP workers spin while "
                 "OpenBLAS's own threads run the GEMMs, which can make threads > 1 slower than 1 "
                 "on both sides (docs/benchmarks.md)\n";
  }
  std::cout << "\n" << std::flush;
}

// Initial weights (from the seed) and the batch, in memory for our side and,
// when the reference runs, as files for it (ViT-B/16's weights alone are
// 350 MB: not written for a run that times ours only).
struct ModelInputs {
  std::map<std::string, torch::Tensor> initial;
  FixedBatch batch;
  ModelFiles files;
};

ModelInputs prepare_model(const ModelSpec& spec, const StepTimeOptions& o,
                          const std::string& work_dir, bool write_files) {
  ModelInputs inputs;
  torch::manual_seed(o.seed);
  {
    TransformerModel init(spec);
    for (const auto& [name, tensor] : init.hf_parameters()) {
      inputs.initial[name] = tensor.detach().clone();
    }
  }
  inputs.batch = make_batch(spec, o);
  if (!write_files) return inputs;
  const std::string dir = work_dir + "/" + spec.preset;
  ensure_writable_directory(dir, "--work-dir");
  inputs.files = {dir + "/config.json", dir + "/model.safetensors", dir + "/batch.safetensors"};
  write_file_atomic(inputs.files.config, hf_config_json(spec).dump(2) + "\n");
  save_safetensors(inputs.files.weights, {inputs.initial.begin(), inputs.initial.end()});
  save_safetensors(inputs.files.batch, inputs.batch.named());
  return inputs;
}

// One table row: --rounds rounds alternating the two sides, so a change in
// machine load during the run affects both alike, then the check.
Row measure_row(const ModelSpec& spec, const ModelInputs& inputs, const PythonTorch& python,
                const StepTimeOptions& o, int threads) {
  Row row;
  row.model = spec.preset;
  row.family = spec.family;
  row.threads = threads;
  for (int round = 0; round < o.rounds; ++round) {
    spdlog::info("[bench] {} threads={} round {}: timing ours", spec.preset, threads, round + 1);
    const bool profile = round == 0 && !o.profile_dir.empty();
    const auto ours = time_ours(spec, inputs.initial, inputs.batch, o, threads, profile);
    if (round == 0) {
      row.ours = ours;
    } else {
      row.ours.absorb(ours);
    }
    if (!python.available || !row.pytorch_error.empty()) continue;
    spdlog::info("[bench] {} threads={} round {}: timing pytorch", spec.preset, threads, round + 1);
    try {
      const auto theirs = time_pytorch(python, spec, inputs.files, o, threads);
      if (round == 0) {
        row.pytorch = theirs;
      } else {
        row.pytorch->absorb(theirs);
      }
    } catch (const ReferenceFailed& e) {
      row.pytorch.reset();
      row.pytorch_error = e.what();
    }
  }
  if (row.pytorch) {
    compare(row, o.tolerance);
    row.ratio = row.ours.stats().median_ms / row.pytorch->stats().median_ms;
  } else if (!row.pytorch_error.empty()) {
    row.check = "FAILED";
  }
  if (!row.pytorch_error.empty()) {
    std::cerr << "bench_step_time: " << spec.preset << " threads=" << threads
              << ": check FAILED: " << row.pytorch_error << "\n";
  }
  return row;
}

void print_results(const std::vector<Row>& rows, const StepTimeOptions& o,
                   const PythonTorch& python) {
  ResultTable table({"model", "batch", "threads", "ours ms/step", "ours min-max",
                     "pytorch ms/step", "pytorch min-max", "ratio", "ours samples/s",
                     "pytorch samples/s", "check", "max rel diff"});
  const auto range = [](const TimingStats& s) {
    return format_fixed(s.min_ms, 2) + "-" + format_fixed(s.max_ms, 2);
  };
  const std::string missing = python.available ? "failed" : "unavailable";
  for (const auto& row : rows) {
    const auto ours = row.ours.stats();
    const bool have = row.pytorch.has_value();
    const auto theirs = have ? row.pytorch->stats() : TimingStats{};
    table.add_row({row.model, std::to_string(o.batch), std::to_string(row.threads),
                   format_fixed(ours.median_ms, 2), range(ours),
                   have ? format_fixed(theirs.median_ms, 2) : missing,
                   have ? range(theirs) : "-",
                   row.ratio ? format_fixed(*row.ratio, 3) + "x" : "-",
                   format_fixed(o.batch * 1000.0 / ours.median_ms, 1),
                   have ? format_fixed(o.batch * 1000.0 / theirs.median_ms, 1) : "-",
                   row.check, have ? format_exponent(row.max_relative_difference) : "-"});
  }
  table.print(std::cout);
  std::cout << "\nms/step = median wall time of one full step; ratio = ours / pytorch "
               "(< 1: ours faster); samples/s = batch / (ms/step / 1000)\n";
  if (o.breakdown) print_breakdown(rows, std::cout);
  std::cout << std::flush;
}

// 0, or the documented code of the first verdict that fails (check, ratio,
// missing reference), with a line on stderr saying why.
int verdict(const std::vector<Row>& rows, const StepTimeOptions& o, const PythonTorch& python) {
  if (std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.check == "FAILED"; })) {
    std::cerr << "bench_step_time: a correctness check FAILED (see the check column)\n";
    return kExitCheckFailed;
  }
  if (o.fail_above_ratio > 0.0) {
    int code = 0;
    for (const auto& row : rows) {
      if (!row.ratio) {
        std::cerr << "bench_step_time: --fail-above-ratio " << o.fail_above_ratio << ": "
                  << row.model << " threads=" << row.threads
                  << " has no PyTorch figure to compare with\n";
        code = kExitRatioAbove;
      } else if (*row.ratio > o.fail_above_ratio) {
        std::cerr << "bench_step_time: " << row.model << " threads=" << row.threads << ": ratio "
                  << format_fixed(*row.ratio, 3) << " is above --fail-above-ratio "
                  << o.fail_above_ratio << "\n";
        code = kExitRatioAbove;
      }
    }
    if (code != 0) return code;
  }
  if (o.require_pytorch && !python.available) {
    std::cerr << "bench_step_time: --require-pytorch: " << python.reason << "\n";
    return kExitPytorchMissing;
  }
  return 0;
}

nlohmann::json results_json(const std::vector<Row>& rows, const StepTimeOptions& o,
                            const nlohmann::json& environment, const PythonTorch& python) {
  nlohmann::json document;
  document["benchmark"] = "step_time";
  document["environment"] = environment;
  document["pytorch"] = python.available ? nlohmann::json{{"python", python.python},
                                                          {"torch_version", python.version}}
                                         : nlohmann::json{{"unavailable", python.reason}};
  document["options"] = {{"batch", o.batch},
                         {"seq", o.seq},
                         {"labels", o.labels},
                         {"warmup", o.harness.warmup},
                         {"iterations", o.harness.iterations},
                         {"rounds", o.rounds},
                         {"check_steps", o.check_steps},
                         {"tolerance", o.tolerance},
                         {"malloc_tuning", o.malloc_tuning},
                         {"lr", o.lr},
                         {"weight_decay", o.weight_decay},
                         {"clip_norm", o.clip_norm},
                         {"seed", o.seed},
                         {"device", o.device},
                         {"precision", o.precision}};
  nlohmann::json results = nlohmann::json::array();
  for (const auto& row : rows) {
    nlohmann::json r{{"model", row.model},
                     {"batch", o.batch},
                     {"threads", row.threads},
                     {"ours", side_json(row.ours, o.batch)},
                     {"check", row.check}};
    if (row.family == ModelFamily::kBert) r["seq"] = o.seq;
    if (row.pytorch) {
      r["pytorch"] = side_json(*row.pytorch, o.batch);
      r["max_relative_difference"] = row.max_relative_difference;
    }
    if (row.ratio) r["ratio"] = *row.ratio;
    if (!row.pytorch_error.empty()) r["pytorch_error"] = row.pytorch_error;
    results.push_back(std::move(r));
  }
  document["results"] = std::move(results);
  return document;
}

int run(const StepTimeOptions& o) {
  validate(o);
  init_logging(0, o.log_level);
  // Ours runs as the engine ships (runtime/app calls the same function).

  PythonTorch python;
  python.python = o.python;
  if (o.no_pytorch) {
    python.reason = "--no-pytorch";
  } else {
    python = probe_python_torch(o.python);
  }

  // Every model is resolved before anything is printed or timed.
  std::vector<ModelSpec> specs;
  for (const auto& preset : o.models) specs.push_back(resolve_preset(preset, o));

  std::optional<ScratchDir> scratch;
  std::string work_dir = o.work_dir;
  if (work_dir.empty()) {
    scratch.emplace("pipet-bench-step-time");
    work_dir = scratch->path();
  } else {
    ensure_writable_directory(work_dir, "--work-dir");
  }
  if (!o.profile_dir.empty()) ensure_writable_directory(o.profile_dir, "--profile");

  const auto environment = environment_json();
  print_header(o, environment, python);
  std::vector<Row> rows;
  for (const auto& spec : specs) {
    const auto inputs = prepare_model(spec, o, work_dir, /*write_files=*/python.available);
    for (int threads : o.threads) rows.push_back(measure_row(spec, inputs, python, o, threads));
  }
  print_results(rows, o, python);
  const int code = verdict(rows, o, python);
  if (!o.harness.json_path.empty()) {
    write_json_results(o.harness.json_path, results_json(rows, o, environment, python));
  }
  return code;
}

}  // namespace
}  // namespace pipet::bench

int main(int argc, char** argv) {
  using pipet::bench::StepTimeOptions;
  StepTimeOptions options;
  // Before any tensor exists, exactly as pipetransformer's CLI does.
  options.allocator_tuned = pipet::configure_allocator();
  CLI::App app{"Training step time: our engine vs PyTorch eager (see benchmarks/README.md)",
               "bench_step_time"};
  pipet::bench::add_harness_flags(app, options.harness);
  app.add_option("--models", options.models, "Model presets to time, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--threads", options.threads,
                 "Intra-op thread counts, comma-separated; one row per count")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--batch", options.batch, "Samples per step")->capture_default_str();
  app.add_option("--seq", options.seq, "BERT sequence length (padded; rows keep 50-100% tokens)")
      ->capture_default_str();
  app.add_option("--labels", options.labels, "Classes of the classifier head")->capture_default_str();
  app.add_option("--rounds", options.rounds,
                 "Alternate ours and PyTorch this many times, pooling the timed steps")
      ->capture_default_str();
  app.add_option("--check-steps", options.check_steps,
                 "Dropout-off steps whose loss and grad norm must match PyTorch")
      ->capture_default_str();
  app.add_option("--tolerance", options.tolerance, "Largest relative difference the check accepts")
      ->capture_default_str();
  app.add_option("--lr", options.lr, "AdamW learning rate")->capture_default_str();
  app.add_option("--weight-decay", options.weight_decay, "AdamW weight decay (2-D+ parameters)")
      ->capture_default_str();
  app.add_option("--clip-norm", options.clip_norm, "Global gradient-norm clipping threshold")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "Seed of the initial weights and the batch")
      ->capture_default_str();
  app.add_option("--python", options.python, "Interpreter that has torch (the reference)")
      ->capture_default_str();
  app.add_flag("--no-pytorch", options.no_pytorch, "Time ours only");
  app.add_flag("--require-pytorch", options.require_pytorch,
               "Exit 22 when the PyTorch reference is unavailable");
  app.add_option("--fail-above-ratio", options.fail_above_ratio,
                 "Exit 21 when any ratio (ours/pytorch) is above this; 0 = off")
      ->capture_default_str();
  app.add_flag("--malloc-tuning", options.malloc_tuning,
               "Give the PyTorch side the engine's glibc malloc settings too (mmap threshold "
               "32 MiB, trim threshold 1 GiB); ours always runs with them, as pipetransformer does");
  app.add_flag("--breakdown", options.breakdown,
               "Also print forward/backward/clip/optimizer medians per side");
  app.add_option("--work-dir", options.work_dir,
                 "Keep the weights/batch/config exchanged with the PyTorch reference here (written only "
                 "when it runs; default: a temp dir, removed)")
      ->capture_default_str();
  app.add_option("--log-level", options.log_level, "debug | info | warn | error")
      ->capture_default_str();
  app.add_option("--device", options.device, "cpu | cuda (cuda: ours only, with --no-pytorch)")
      ->capture_default_str();
  app.add_option("--precision", options.precision,
                 "fp32 | bf16 (autocast forward; fp32 weights, gradients and AdamW state)")
      ->capture_default_str();
  auto* profile = app.add_option("--profile", options.profile_dir,
                                 "After the timed steps, profile --profile-steps more steps of "
                                 "ours and write the op table (.ops.txt, .ops.json) and a Chrome "
                                 "trace to this directory");
  app.add_option("--profile-steps", options.profile_steps, "Steps the op profile sums over")
      ->capture_default_str()
      ->needs(profile);
  return pipet::bench::run_benchmark(app, argc, argv, [&] { return pipet::bench::run(options); });
}
