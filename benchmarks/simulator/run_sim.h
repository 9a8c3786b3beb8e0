// Stepping a whole run the way the engine does: freeze decisions at epoch
// boundaries (or every N steps) from freeze/'s FreezePolicy, AutoPipe's
// compression and partition from autopipe/ (frozen prefix plus one trainable
// sub-layer pinned to stage 0 under AutoPipe or AutoCache, as
// Trainer::plan_ranges; without either, frozen sub-layers stay on their
// stages and run forward only), the engine's
// micro-batch rule, AutoDP's replica count W / K, AutoCache's on/off/auto
// policy from autocache/, and transitions; each layout's step time from
// simulate_step. Switching AutoPipe, AutoDP or AutoCache off gives the
// paper's breakdown configurations (the engine's autopipe.enabled,
// autodp.enabled and autocache.mode).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "autocache/cache_policy.h"
#include "autopipe/partition.h"
#include "benchmarks/simulator/cluster.h"
#include "benchmarks/simulator/profile.h"
#include "benchmarks/simulator/step_sim.h"
#include "freeze/freeze_policy.h"

namespace pipet::sim {

struct RunSpec {
  std::string model;            // must match the profile's
  int64_t global_batch = 32;    // train.batch_size (kept at every layout: keep_global_batch)
  int epochs = 1;
  int64_t steps_per_epoch = 1;  // train.samples / batch (drop_last), or given
  int64_t samples = 0;          // dataset size (0: steps_per_epoch x batch), for the cache
  int optimizer_slots = 2;      // AdamW 2 moments, SGD momentum 1 (state moved at transitions)
  int ranks = 0;                // 0: the whole cluster
  int initial_stages = 1;       // parallel.pipeline_stages (K0)
  int micro_batches = 1;        // parallel.micro_batches at K0
  Schedule schedule = Schedule::kGpipe;
  int64_t bucket_bytes = 25LL * 1024 * 1024;

  bool freeze = false;          // freeze.policy != none
  FreezeOptions freeze_options; // adaptive is not simulated (no gradients): schedule or manual
  int64_t freeze_every_steps = 0;

  // autopipe.enabled: compress and repartition at a freeze change; off, K
  // and the starting partition stay. With autocache.mode off that is all
  // (frozen sub-layers stay on their stages, nothing moves); with the cache
  // on or auto the prefix is pinned to stage 0, the boundaries move only as
  // far as it needs, and K compresses once they cannot hold it.
  bool autopipe = true;
  // autopipe.pin_frozen, a what-if the engine does not have: false lets
  // AutoPipe too leave the frozen prefix unpinned (partition and
  // compression with pinned_prefix 0) when autocache.mode is off. With the
  // cache on or auto the prefix stays pinned (the cache serves it there).
  bool pin_frozen = true;
  PartitionMethod partition = PartitionMethod::kOptimal;
  bool measured_cost = false;   // autopipe.cost = measured (else parameters)
  double frozen_cost = 1.0 / 6.0;
  // autopipe.frozen_balance: the partition counts a frozen sub-layer's
  // forward on the samples the cache will not serve (forward), or as the
  // compression criterion does (lambda); auto = forward under 1F1B.
  std::string frozen_balance = "auto";
  bool divisor_compression = false;  // autopipe.compression = divisors
  bool tune_micro_batches = false;
  // autodp.enabled: replicas = ranks / K; off: at most ranks / K0 replicas
  // train, the other ranks sit out.
  bool autodp = true;
  // autodp.batch_policy: keep_global_batch (train.batch_size split over the
  // replicas) or scale_lr (per-replica batch fixed, global batch grows).
  bool scale_lr = false;
  CacheMode cache = CacheMode::kOff;
  double cache_margin = 0.1;
};

// From the run-spec JSON (sections like the engine's config: train,
// parallel, freeze, autopipe, autodp, autocache); ConfigError names the key.
RunSpec run_spec_from_json(const nlohmann::json& j, const std::string& where);

struct Segment {
  int epoch = 0;
  int64_t steps = 0;
  int frozen_blocks = 0;
  int stages = 1, replicas = 1, micro_batches = 1;
  int64_t global_batch = 0;
  double step_seconds = 0.0;
  double seconds = 0.0;             // steps x step time (+ tuning steps at their own times)
  double cache_hit_rate = 0.0;      // share of the first stage's rows served from the cache
  StepReport step;
  std::string partition;            // autopipe describe()
};

struct Transition {
  int epoch = 0;
  int64_t step = 0;
  int frozen_before = 0, frozen_after = 0;
  int stages_before = 1, stages_after = 1;
  double bytes_moved = 0.0;         // all ranks (move_training_state's traffic)
  double max_rank_bytes = 0.0;      // the most any rank receives
  // AutoCache's advance: the node's entries split over its training
  // first-stage ranks of the new layout (the slowest node's share).
  int cache_advance_ranks = 0;      // ranks per node advancing (the fewest of any node that has them)
  double cache_advance_seconds = 0.0;
  double seconds = 0.0;
};

struct RunReport {
  std::vector<Segment> segments;
  std::vector<Transition> transitions;
  double total_seconds = 0.0;
  std::vector<int> stages_by_epoch;  // K at the start of each epoch
  std::vector<int> frozen_by_epoch;  // f at the start of each epoch
  std::vector<double> epoch_seconds;
};

RunReport simulate_run(const ModelProfile& profile, const ClusterSpec& cluster, const RunSpec& run);

// The paper's speed-up breakdown (ViT-B/16 ImageNet, REFERENCE.md): the
// configurations and the published figure for each (0 when unpublished).
struct BreakdownRow {
  std::string name;
  bool freeze, autopipe, autodp;
  CacheMode cache;
  double published = 0.0;
  RunReport report;
  double speedup = 0.0;  // baseline total / this total
};
// Runs the six configurations from `run` (its freeze options used where
// freezing is on): baseline (no freezing), freeze only, +AutoPipe,
// +AutoPipe+AutoDP, +AutoPipe+AutoCache, all four.
std::vector<BreakdownRow> simulate_breakdown(const ModelProfile& profile, const ClusterSpec& cluster,
                                             const RunSpec& run);

}  // namespace pipet::sim
