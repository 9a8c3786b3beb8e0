// bench_pipeline_step: training step time of the multi-process engine versus
// pipeline stages K and micro-batches M, with the measured pipeline bubble
// next to GPipe's theoretical (K-1)/(M+K-1). Runs under mpirun; every rank is
// one stage of one of R = ranks/K data-parallel pipelines (or, with
// --pipeline-only, the first K ranks form one pipeline and the rest wait).
//
// For each (K, M) a fresh pipet::Trainer runs --warmup steps, then
// --iterations timed steps on synthetic images (no evaluation, no export, no
// checkpoints, dropout 0, one intra-op thread per rank):
//   step ms   = this rank's train_seconds of the timed steps / steps, max over
//               the working ranks;
//   bubble    = pipeline_wait_seconds / pipeline_seconds of each working rank
//               (time blocked receiving from a neighbouring stage over time
//               inside the schedule), averaged over them;
//   theory    = (K-1)/(M+K-1).
// Correctness runs alongside: with the same seed, batch and fp32 every layout
// trains the same model, so each row's mean training loss over the timed
// steps must match the first row's within --tolerance (else exit 20).
#include "benchmarks/harness.h"
#include "benchmarks/mpi_benchmark.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/allocator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/engine/trainer.h"

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pipet::bench {
namespace {

constexpr int kExitCheckFailed = 20;
constexpr int kExitAboveCeiling = 21;

struct PipelineOptions {
  HarnessOptions harness{/*warmup=*/1, /*iterations=*/3, /*json_path=*/""};
  std::vector<int> stages;          // empty = every divisor of the rank count
  std::vector<int> micro_batches = {1, 2, 4, 8};
  bool pipeline_only = false;
  std::string model = "vit-small";
  int image_size = 32;
  int patch_size = 8;
  int batch = 32;
  std::string schedule = "gpipe";
  std::vector<std::string> assignments;  // extra key=value config overrides
  double tolerance = 1e-4;
  double max_step_ms = 0.0;        // 0 = off
  std::string log_level = "error";
};

// While alive, this process's stdout goes to `path`: the trainer of rank 0
// prints the engine's metrics stream (JSON lines) on stdout, which would
// interleave with the table. The same records are in output.dir/metrics.jsonl.
class StdoutToFile {
 public:
  explicit StdoutToFile(const std::string& path) {
    std::fflush(stdout);
    const int file = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (file < 0) throw IoError("cannot open " + path + " for the engine's output: " + std::strerror(errno));
    saved_ = ::dup(STDOUT_FILENO);
    const bool redirected = saved_ >= 0 && ::dup2(file, STDOUT_FILENO) >= 0;
    const int error = errno;
    ::close(file);
    if (!redirected) {
      if (saved_ >= 0) ::close(saved_);
      throw IoError("cannot redirect stdout to " + path + ": " + std::strerror(error));
    }
  }
  ~StdoutToFile() {
    std::fflush(stdout);
    ::dup2(saved_, STDOUT_FILENO);
    ::close(saved_);
  }
  StdoutToFile(const StdoutToFile&) = delete;
  StdoutToFile& operator=(const StdoutToFile&) = delete;

 private:
  int saved_ = -1;
};

struct Row {
  int stages = 0;
  int micro_batches = 0;
  int replicas = 0;
  double step_ms = 0.0;          // max over working ranks
  double step_ms_min = 0.0;      // min over working ranks
  double bubble = 0.0;           // mean over working ranks
  double bubble_min = 0.0;
  double bubble_max = 0.0;
  double theory = 0.0;
  double loss = 0.0;
  bool warmup_excluded = true;   // false: the engine reported no warm-up pipeline figures
  std::string check;
  nlohmann::json per_rank = nlohmann::json::array();
};

void validate(PipelineOptions& o, int ranks) {
  validate_harness_options(o.harness);
  if (o.stages.empty())
    for (int k = 1; k <= ranks; ++k)
      if (ranks % k == 0) o.stages.push_back(k);
  for (int k : o.stages) {
    if (k < 1) throw ConfigError("--stages: counts must be >= 1, got " + std::to_string(k));
    if (!o.pipeline_only && ranks % k != 0)
      throw ConfigError("--stages: K=" + std::to_string(k) + " does not divide the " + std::to_string(ranks) +
                        " ranks (use K dividing the rank count, or --pipeline-only)");
    if (o.pipeline_only && k > ranks)
      throw ConfigError("--stages: K=" + std::to_string(k) + " needs " + std::to_string(k) +
                        " ranks, the job has " + std::to_string(ranks));
  }
  for (int m : o.micro_batches)
    if (m < 1) throw ConfigError("--micro-batches: counts must be >= 1, got " + std::to_string(m));
  if (o.batch < 1) throw ConfigError("--batch must be >= 1, got " + std::to_string(o.batch));
  if (!(o.tolerance >= 0)) throw ConfigError("--tolerance must be >= 0");
  if (!(o.max_step_ms >= 0)) throw ConfigError("--max-step-ms must be >= 0 (0 = off)");
}

// The run's configuration; the engine's own validation names any bad key.
TrainConfig make_config(const PipelineOptions& o, int stages, int micro_batches, const std::string& output_dir) {
  TrainConfig config;
  const ConfigSource source{"bench_pipeline_step"};
  const int steps = o.harness.warmup + o.harness.iterations;
  const std::vector<std::pair<std::string, std::string>> settings = {
      {"model.preset", o.model},
      {"model.image_size", std::to_string(o.image_size)},
      {"model.patch_size", std::to_string(o.patch_size)},
      {"model.hidden_dropout", "0"},
      {"model.attention_dropout", "0"},
      {"data.dataset", "synthetic-image"},
      {"data.train_samples", std::to_string(o.batch * steps)},
      {"data.eval_samples", "0"},
      {"data.augment", "false"},
      {"train.batch_size", std::to_string(o.batch)},
      {"train.epochs", "1"},
      {"train.max_steps", std::to_string(steps)},
      {"train.log_every_steps", std::to_string(steps)},
      {"eval.every_epochs", "0"},
      {"eval.every_steps", "0"},
      {"checkpoint.every_epochs", "0"},
      {"output.dir", output_dir},
      {"output.export_model", "false"},
      {"parallel.pipeline_stages", std::to_string(stages)},
      {"parallel.micro_batches", std::to_string(micro_batches)},
      {"parallel.schedule", o.schedule},
      {"runtime.threads", "1"},
      {"runtime.log_level", o.log_level},
  };
  for (const auto& [key, value] : settings) apply_config_text(config, key, value, source);
  for (const std::string& assignment : o.assignments)
    apply_config_assignment(config, assignment, ConfigSource{"--set"});
  validate_config(config);
  return config;
}

// One (K, M) on this rank. `group` is the communicator the trainer runs on
// (null on a rank that sits this layout out); `world` spans every rank.
Row measure(const PipelineOptions& o, Communicator& world, Communicator* group, int stages, int micro_batches,
            const std::string& scratch) {
  Row row;
  row.stages = stages;
  row.micro_batches = micro_batches;
  row.theory = static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
  // Per rank: working?, step seconds, pipeline seconds, wait seconds, loss.
  torch::Tensor mine = torch::zeros({5}, torch::kFloat64);
  if (group != nullptr) {
    const std::string dir = scratch + "/k" + std::to_string(stages) + "-m" + std::to_string(micro_batches);
    const TrainConfig config = make_config(o, stages, micro_batches, dir);
    const StdoutToFile quiet(scratch + "/engine-stdout.log");
    Trainer trainer(config, group);
    TrainResult warm;
    if (o.harness.warmup > 0) warm = trainer.run({o.harness.warmup});
    group->barrier();  // the timed steps start together
    const TrainResult timed = trainer.run();
    const int64_t steps = timed.steps - o.harness.warmup;
    if (steps != o.harness.iterations)
      throw Error(ExitCode::kInternal, "the trainer ran " + std::to_string(steps) + " timed steps, expected " +
                                           std::to_string(o.harness.iterations));
    // run() reports the pipeline time since the trainer was built; a warm-up
    // segment that reports none leaves the warm-up steps in the figures.
    row.warmup_excluded = o.harness.warmup == 0 || warm.pipeline_seconds > 0;
    const double pipeline = timed.pipeline_seconds - warm.pipeline_seconds;
    const double wait = timed.pipeline_wait_seconds - warm.pipeline_wait_seconds;
    mine = torch::tensor({1.0, timed.train_seconds / static_cast<double>(steps), pipeline, wait, timed.train_loss},
                         torch::kFloat64);
  }
  const torch::Tensor all = world.all_gather(mine);  // [ranks, 5]
  torch::Tensor flags = torch::tensor({row.warmup_excluded ? 1.0 : 0.0}, torch::kFloat64);
  world.all_reduce(flags, {ReduceOp::kMin});
  row.warmup_excluded = flags.item<double>() > 0;

  std::vector<double> step_ms;
  std::vector<double> bubbles;
  for (int64_t r = 0; r < all.size(0); ++r) {
    const auto v = all[r];
    if (v[0].item<double>() == 0) continue;
    const double pipeline = v[2].item<double>();
    const double bubble = pipeline > 0 ? v[3].item<double>() / pipeline : 0.0;
    step_ms.push_back(v[1].item<double>() * 1000.0);
    bubbles.push_back(bubble);
    row.loss = v[4].item<double>();  // every rank reports the all-reduced loss
    row.per_rank.push_back({{"rank", r},
                            {"step_ms", v[1].item<double>() * 1000.0},
                            {"pipeline_seconds", pipeline},
                            {"wait_seconds", v[3].item<double>()},
                            {"bubble", bubble}});
  }
  row.replicas = o.pipeline_only ? 1 : world.size() / stages;
  row.step_ms = *std::max_element(step_ms.begin(), step_ms.end());
  row.step_ms_min = *std::min_element(step_ms.begin(), step_ms.end());
  double sum = 0.0;
  for (double b : bubbles) sum += b;
  row.bubble = sum / static_cast<double>(bubbles.size());
  row.bubble_min = *std::min_element(bubbles.begin(), bubbles.end());
  row.bubble_max = *std::max_element(bubbles.begin(), bubbles.end());
  return row;
}

int run(PipelineOptions& o, MpiRuntime& runtime) {
  std::unique_ptr<Communicator> world = make_world_communicator(runtime);
  validate(o, world->size());
  init_logging(world->rank(), o.log_level);
  const bool root = world->rank() == 0;
  // Every rank writes its metrics under its own scratch directory.
  ScratchDir scratch("pipet-bench-pipeline-r" + std::to_string(world->rank()));

  const nlohmann::json environment = environment_json();
  if (root) {
    std::cout << "bench_pipeline_step: " << o.model << " " << o.image_size << "px patch " << o.patch_size
              << ", global batch " << o.batch << ", schedule " << o.schedule << ", " << world->size() << " ranks"
              << (o.pipeline_only ? " (pipeline-only: K working ranks, R = 1)" : " (R = ranks / K)")
              << ", 1 thread per rank, warmup " << o.harness.warmup << ", timed steps " << o.harness.iterations
              << "\n"
              << environment_line(environment) << "\n";
    const int cores = environment.value("cores", 0);
    if (cores > 0 && world->size() > cores)
      std::cout << "warning: " << world->size() << " ranks on " << cores
                << " cores: ranks share cores, so timings are indicative\n";
    std::cout << std::flush;
  }

  std::vector<Row> rows;
  for (int stages : o.stages) {
    for (int micro_batches : o.micro_batches) {
      std::unique_ptr<Communicator> subgroup;
      Communicator* group = world.get();
      if (o.pipeline_only) {
        const bool working = world->rank() < stages;
        subgroup = world->subgroup(working ? 0 : -1, world->rank(), "bench-pipeline-k" + std::to_string(stages));
        group = subgroup.get();
      }
      rows.push_back(measure(o, *world, group, stages, micro_batches, scratch.path()));
      if (root) {
        const Row& r = rows.back();
        spdlog::info("[bench] K={} M={}: {:.1f} ms/step, bubble {:.3f}", r.stages, r.micro_batches, r.step_ms,
                     r.bubble);
      }
    }
  }

  int code = 0;
  const double reference_loss = rows.front().loss;
  for (Row& r : rows) {
    const double difference = relative_difference(r.loss, reference_loss);
    r.check = difference <= o.tolerance ? "ok" : "FAILED";
    if (r.check != "ok") code = kExitCheckFailed;
  }
  bool warmup_excluded = true;
  for (const Row& r : rows) warmup_excluded = warmup_excluded && r.warmup_excluded;

  ResultTable table({"K", "M", "R", "step ms", "min-max ms", "samples/s", "bubble", "min-max", "theory",
                     "loss", "check"});
  for (const Row& r : rows)
    table.add_row({std::to_string(r.stages), std::to_string(r.micro_batches), std::to_string(r.replicas),
                   format_fixed(r.step_ms, 1), format_fixed(r.step_ms_min, 1) + "-" + format_fixed(r.step_ms, 1),
                   format_fixed(o.batch / (r.step_ms / 1000.0), 1), format_fixed(r.bubble, 3),
                   format_fixed(r.bubble_min, 3) + "-" + format_fixed(r.bubble_max, 3), format_fixed(r.theory, 3),
                   format_fixed(r.loss, 6), r.check});
  if (root) {
    std::cout << "\n";
    table.print(std::cout);
    if (!warmup_excluded)
      std::cout << "note: the engine reports no pipeline time for the warm-up segment, so the bubble "
                   "figures include the warm-up steps\n";
    for (const Row& r : rows)
      if (r.check != "ok")
        std::cout << "check FAILED: K=" << r.stages << " M=" << r.micro_batches << " loss "
                  << format_fixed(r.loss, 8) << " differs from the first row's " << format_fixed(reference_loss, 8)
                  << " by more than --tolerance " << o.tolerance << "\n";
  }
  if (code == 0 && o.max_step_ms > 0) {
    for (const Row& r : rows) {
      if (r.step_ms <= o.max_step_ms) continue;
      if (root)
        std::cout << "above --max-step-ms " << format_fixed(o.max_step_ms, 1) << ": K=" << r.stages
                  << " M=" << r.micro_batches << " takes " << format_fixed(r.step_ms, 1) << " ms\n";
      code = kExitAboveCeiling;
    }
  }

  if (root && !o.harness.json_path.empty()) {
    nlohmann::json document;
    document["benchmark"] = "pipeline_step";
    document["environment"] = environment;
    document["options"] = {{"model", o.model},         {"image_size", o.image_size},
                           {"patch_size", o.patch_size}, {"batch", o.batch},
                           {"schedule", o.schedule},   {"ranks", world->size()},
                           {"pipeline_only", o.pipeline_only}, {"warmup", o.harness.warmup},
                           {"iterations", o.harness.iterations}, {"set", o.assignments},
                           {"warmup_excluded_from_bubble", warmup_excluded}};
    nlohmann::json results = nlohmann::json::array();
    for (const Row& r : rows)
      results.push_back({{"stages", r.stages},
                         {"micro_batches", r.micro_batches},
                         {"replicas", r.replicas},
                         {"step_ms", r.step_ms},
                         {"step_ms_min_rank", r.step_ms_min},
                         {"samples_per_second", o.batch / (r.step_ms / 1000.0)},
                         {"bubble", r.bubble},
                         {"bubble_min", r.bubble_min},
                         {"bubble_max", r.bubble_max},
                         {"bubble_theory", r.theory},
                         {"loss", r.loss},
                         {"check", r.check},
                         {"ranks", r.per_rank}});
    document["results"] = std::move(results);
    write_json_results(o.harness.json_path, document);
  }
  std::cout << std::flush;
  world->barrier();
  return code;
}

}  // namespace
}  // namespace pipet::bench

int main(int argc, char** argv) {
  pipet::bench::PipelineOptions options;
  pipet::configure_allocator();  // as pipetransformer does, before any tensor
  CLI::App app{"Pipeline step time versus stages K and micro-batches M, with the measured bubble "
               "(run under mpirun; see benchmarks/README.md)",
               "bench_pipeline_step"};
  pipet::bench::add_harness_flags(app, options.harness);
  app.add_option("--stages", options.stages,
                 "Pipeline stage counts K, comma-separated (default: every divisor of the rank count)")
      ->delimiter(',');
  app.add_option("--micro-batches", options.micro_batches, "Micro-batch counts M, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_flag("--pipeline-only", options.pipeline_only,
               "Run each K on the first K ranks only (R = 1; the other ranks wait) instead of R = ranks/K "
               "replicas");
  app.add_option("--model", options.model, "Model preset")->capture_default_str();
  app.add_option("--image-size", options.image_size, "Image side in pixels (model.image_size)")
      ->capture_default_str();
  app.add_option("--patch-size", options.patch_size, "Patch side in pixels (model.patch_size)")
      ->capture_default_str();
  app.add_option("--batch", options.batch, "Global batch (over all replicas)")->capture_default_str();
  app.add_option("--schedule", options.schedule, "Pipeline schedule: gpipe or 1f1b")->capture_default_str();
  app.add_option("--set", options.assignments, "Extra config override key=value (repeatable)");
  app.add_option("--tolerance", options.tolerance,
                 "Largest relative difference of a row's loss from the first row's")
      ->capture_default_str();
  app.add_option("--max-step-ms", options.max_step_ms, "Exit 21 when any row's step time is above this; 0 = off")
      ->capture_default_str();
  app.add_option("--log-level", options.log_level, "debug | info | warn | error")->capture_default_str();
  return pipet::bench::run_mpi_benchmark(app, argc, argv, [&](pipet::MpiRuntime& runtime) {
    return pipet::bench::run(options, runtime);
  });
}
