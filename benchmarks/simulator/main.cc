// pipet-simulate: predicts PipeTransformer runs on a cluster that is not here.
//   profile    measure a model here (per sub-layer times) -> profile JSON
//   derive     per-sub-layer times of a ViT from FLOPs at a stated throughput
//   predict    one run: per-epoch f, K, R, M, step and epoch time, total
//   breakdown  baseline, freeze only, +AutoPipe, +AutoCache, +AutoDP, all four
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "benchmarks/simulator/cluster.h"
#include "benchmarks/simulator/json_fields.h"
#include "benchmarks/simulator/profile.h"
#include "benchmarks/simulator/profiler.h"
#include "benchmarks/simulator/run_sim.h"
#include "runtime/core/allocator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/threads.h"

namespace pipet::sim {
namespace {

// "section.key=value" onto a nested JSON object; the value is JSON when it
// parses as JSON, else a string.
void apply_assignment(nlohmann::json& spec, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set '" + assignment + "': expected key=value (e.g. freeze.alpha=0.5)");
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  nlohmann::json* node = &spec;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw ConfigError("--set '" + assignment + "': empty key component");
    if (dot == std::string::npos) {
      (*node)[part] = value;
      break;
    }
    if (!node->contains(part)) (*node)[part] = nlohmann::json::object();
    node = &(*node)[part];
    if (!node->is_object()) throw ConfigError("--set '" + assignment + "': '" + part + "' is not a section");
    start = dot + 1;
  }
}

RunSpec load_run(const std::string& path, const std::vector<std::string>& sets) {
  nlohmann::json spec = read_json_file(path, "run spec");
  for (const auto& s : sets) apply_assignment(spec, s);
  return run_spec_from_json(spec, path + (sets.empty() ? "" : " (with --set)"));
}

std::vector<int64_t> parse_rows(const std::string& text) {
  std::vector<int64_t> rows;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      rows.push_back(v);
    } catch (const std::exception&) {
      throw ConfigError("--rows: '" + item + "' is not an integer");
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return rows;
}

void write_or_print(const nlohmann::json& j, const std::string& path) {
  if (path.empty() || path == "-") {
    std::cout << j.dump(2) << "\n";
  } else {
    write_file_atomic(path, j.dump(2) + "\n");
    std::fprintf(stderr, "wrote %s\n", path.c_str());
  }
}

std::string hms(double seconds) {
  const long long s = static_cast<long long>(seconds + 0.5);
  char buffer[64];
  if (s >= 3600) std::snprintf(buffer, sizeof(buffer), "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60) std::snprintf(buffer, sizeof(buffer), "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buffer, sizeof(buffer), "%.2fs", seconds);
  return buffer;
}

nlohmann::json report_json(const RunReport& r) {
  nlohmann::json segments = nlohmann::json::array();
  for (const Segment& s : r.segments)
    segments.push_back({{"epoch", s.epoch}, {"steps", s.steps}, {"frozen_blocks", s.frozen_blocks},
                        {"stages", s.stages}, {"replicas", s.replicas}, {"micro_batches", s.micro_batches},
                        {"step_seconds", s.step_seconds}, {"seconds", s.seconds},
                        {"cache_hit_rate", s.cache_hit_rate}, {"busiest_compute_seconds", s.step.busiest_compute_seconds},
                        {"allreduce_seconds", s.step.allreduce_seconds}, {"p2p_bytes", s.step.p2p_bytes},
                        {"partition", s.partition}});
  nlohmann::json transitions = nlohmann::json::array();
  for (const Transition& t : r.transitions)
    transitions.push_back({{"epoch", t.epoch}, {"step", t.step}, {"frozen_before", t.frozen_before},
                           {"frozen_after", t.frozen_after}, {"stages_before", t.stages_before},
                           {"stages_after", t.stages_after}, {"bytes_moved", t.bytes_moved},
                           {"max_rank_bytes", t.max_rank_bytes}, {"cache_advance_ranks", t.cache_advance_ranks},
                           {"cache_advance_seconds", t.cache_advance_seconds},
                           {"seconds", t.seconds}});
  return {{"segments", segments}, {"transitions", transitions}, {"epoch_seconds", r.epoch_seconds},
          {"stages_by_epoch", r.stages_by_epoch}, {"frozen_by_epoch", r.frozen_by_epoch},
          {"total_seconds", r.total_seconds}};
}

void print_report(const RunReport& r, const RunSpec& run) {
  std::printf("%5s %6s %3s %3s %3s %4s %12s %12s %9s  %s\n", "epoch", "steps", "f", "K", "R", "M", "step ms",
              "segment", "cache", "stages");
  for (const Segment& s : r.segments)
    std::printf("%5d %6lld %3d %3d %3d %4d %12.2f %12s %8.0f%%  %s\n", s.epoch, static_cast<long long>(s.steps),
                s.frozen_blocks, s.stages, s.replicas, s.micro_batches, s.step_seconds * 1e3, hms(s.seconds).c_str(),
                100.0 * s.cache_hit_rate, s.partition.c_str());
  for (const Transition& t : r.transitions) {
    char advance[96] = "no cache advance";
    if (t.cache_advance_ranks > 0)
      std::snprintf(advance, sizeof advance, "cache advance %.3f s on %d rank(s) per node", t.cache_advance_seconds,
                    t.cache_advance_ranks);
    std::printf("transition after step %lld: f %d -> %d, K %d -> %d, %.1f MiB moved (max %.1f MiB per rank), "
                "%s, %.3f s\n",
                static_cast<long long>(t.step), t.frozen_before, t.frozen_after, t.stages_before, t.stages_after,
                t.bytes_moved / 1048576.0, t.max_rank_bytes / 1048576.0, advance, t.seconds);
  }
  std::printf("epoch seconds:");
  for (double s : r.epoch_seconds) std::printf(" %s", hms(s).c_str());
  std::printf("\nK by epoch:");
  for (int k : r.stages_by_epoch) std::printf(" %d", k);
  std::printf("\nf by epoch:");
  for (int f : r.frozen_by_epoch) std::printf(" %d", f);
  std::printf("\ntotal: %s (%.1f s) for %d epochs x %lld steps of batch %lld\n", hms(r.total_seconds).c_str(),
              r.total_seconds, run.epochs, static_cast<long long>(run.steps_per_epoch),
              static_cast<long long>(run.global_batch));
}

int run(int argc, char** argv) {
  CLI::App app{"pipet-simulate: predict PipeTransformer runs on another cluster"};
  app.require_subcommand(1);

  std::string config_file, output, cluster_file, profile_file, run_file, json_out, rows_text = "1,2,4,8,16,32";
  std::vector<std::string> config_sets, run_sets;
  ProfilerOptions profiler;

  CLI::App* profile = app.add_subcommand("profile", "Measure per-sub-layer times of a model on this machine");
  profile->add_option("--config", config_file, "pipetransformer config JSON (model, data, runtime.threads)");
  profile->add_option("--set", config_sets, "config key=value, as pipetransformer train --set");
  profile->add_option("--rows", rows_text, "micro-batch sizes to measure, ascending")->capture_default_str();
  profile->add_option("--repeats", profiler.repeats, "timed runs per point (median kept)")->capture_default_str();
  profile->add_option("--warmup", profiler.warmup, "untimed runs first")->capture_default_str();
  profile->add_option("-o,--output", output, "profile JSON to write (- = stdout)")->required();

  VitShape vit;
  DeviceThroughput device;
  double tflops = 4.0, overhead_us = 0.0, memory_gbps = 400.0;
  CLI::App* derive = app.add_subcommand("derive", "Per-sub-layer ViT times from FLOPs at a stated throughput");
  derive->add_option("--name", vit.name, "model name recorded in the profile")->required();
  derive->add_option("--image-size", vit.image_size)->capture_default_str();
  derive->add_option("--patch-size", vit.patch_size)->capture_default_str();
  derive->add_option("--hidden", vit.hidden)->capture_default_str();
  derive->add_option("--layers", vit.layers)->capture_default_str();
  derive->add_option("--heads", vit.heads)->capture_default_str();
  derive->add_option("--intermediate", vit.intermediate)->capture_default_str();
  derive->add_option("--classes", vit.classes)->capture_default_str();
  derive->add_option("--tflops", tflops, "achieved TFLOP/s on the transformer GEMMs")->capture_default_str();
  derive->add_option("--overhead-us", overhead_us, "fixed microseconds per sub-layer call")->capture_default_str();
  derive->add_option("--memory-gbps", memory_gbps, "device memory GB/s for the parameter passes")->capture_default_str();
  derive->add_option("--device", device.description, "what the throughput stands for")->required();
  derive->add_option("--rows", rows_text, "micro-batch sizes to tabulate")->capture_default_str();
  derive->add_option("-o,--output", output, "profile JSON to write (- = stdout)")->required();

  bool breakdown_mode = false;
  CLI::App* predict = app.add_subcommand("predict", "Predict one run on a cluster");
  CLI::App* breakdown = app.add_subcommand("breakdown", "The paper's speed-up breakdown on a cluster");
  for (CLI::App* sub : {predict, breakdown}) {
    sub->add_option("--cluster", cluster_file, "cluster spec JSON")->required();
    sub->add_option("--profile", profile_file, "profile JSON (profile or derive)")->required();
    sub->add_option("--run", run_file, "run spec JSON")->required();
    sub->add_option("--set", run_sets, "run spec key=value (e.g. freeze.alpha=0.5)");
    sub->add_option("--json", json_out, "also write the prediction as JSON");
  }
  breakdown->callback([&] { breakdown_mode = true; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (profile->parsed()) {
    TrainConfig config = config_file.empty() ? TrainConfig{} : load_config_file(config_file);
    for (const auto& s : config_sets) apply_config_assignment(config, s, {"--set"});
    profiler.rows = parse_rows(rows_text);
    write_or_print(profile_to_json(measure_profile(config, profiler)), output);
    return 0;
  }
  if (derive->parsed()) {
    device.achieved_flops = tflops * 1e12;
    device.call_overhead_seconds = overhead_us * 1e-6;
    device.memory_bandwidth = memory_gbps * 1e9;
    write_or_print(profile_to_json(derive_vit_profile(vit, device, parse_rows(rows_text))), output);
    return 0;
  }
  const ClusterSpec cluster = load_cluster(cluster_file);
  const ModelProfile model = load_profile(profile_file);
  const RunSpec spec = load_run(run_file, run_sets);
  std::printf("cluster %s: %d node(s) x %d devices, %.3g compute slots per node, speed x%.3g\n", cluster.name.c_str(),
              cluster.nodes, cluster.devices_per_node, cluster.compute_slots_per_node, cluster.speed_factor);
  std::printf("profile %s: %s\n", model.model.c_str(), model.source.c_str());
  if (!breakdown_mode) {
    const RunReport report = simulate_run(model, cluster, spec);
    print_report(report, spec);
    if (!json_out.empty()) write_or_print(report_json(report), json_out);
    return 0;
  }
  const std::vector<BreakdownRow> rows = simulate_breakdown(model, cluster, spec);
  nlohmann::json out = nlohmann::json::array();
  std::printf("\n%-32s %12s %10s %10s  %s\n", "configuration", "total", "speed-up", "published", "K by epoch");
  for (const BreakdownRow& row : rows) {
    std::string ks;
    for (int k : row.report.stages_by_epoch) ks += (ks.empty() ? "" : ",") + std::to_string(k);
    char published[32] = "-";
    if (row.published > 0) std::snprintf(published, sizeof(published), "%.2fx", row.published);
    std::printf("%-32s %12s %9.2fx %10s  %s (R %s)\n", row.name.c_str(), hms(row.report.total_seconds).c_str(),
                row.speedup, published, ks.c_str(), row.autodp ? "W/K" : "fixed");
    out.push_back({{"name", row.name}, {"speedup", row.speedup}, {"published", row.published},
                   {"report", report_json(row.report)}});
  }
  if (!json_out.empty()) write_or_print(out, json_out);
  return 0;
}

}  // namespace
}  // namespace pipet::sim

int main(int argc, char** argv) {
  // Like pipetransformer: passive OpenMP waiting, so the profile's timings
  // are taken under the engine's threading (may re-execute; see threads.h).
  pipet::prefer_passive_openmp_wait(argv);
  // And pipetransformer's malloc settings (runtime/app/cli.cc), before any
  // tensor: with glibc's defaults the profile's passes page-fault freed
  // blocks back in each time (the norm pass measured 6x the engine's).
  pipet::configure_allocator();
  try {
    return pipet::sim::run(argc, argv);
  } catch (const pipet::Error& e) {
    std::fprintf(stderr, "pipet-simulate: error: %s\n", e.what());
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipet-simulate: internal error: %s\n", e.what());
    return 1;
  }
}
