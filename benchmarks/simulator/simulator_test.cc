// The simulator: schedule costing against hand-computed cases, the run
// stepping against the published ViT-B/16 sequence, and input errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "benchmarks/simulator/cluster.h"
#include "benchmarks/simulator/profile.h"
#include "benchmarks/simulator/run_sim.h"
#include "benchmarks/simulator/step_sim.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

namespace pipet::sim {
namespace {

using pipet::testing::error_message;

// L blocks, every sub-layer `params` parameters, forward 1 s and backward
// 2 s per sample (one point: proportional to rows), no parameter passes.
ModelProfile uniform_profile(int blocks, int64_t params = 1000, int64_t out_bytes = 0) {
  ModelProfile p;
  p.model = "uniform";
  p.num_blocks = blocks;
  for (int i = 0; i < 2 * blocks + 2; ++i) {
    SubLayerProfile s;
    if (i == 0) s.name = "embedding";
    else if (i == 2 * blocks + 1) s.name = "head";
    else {
      s.block = (i - 1) / 2;
      s.name = "block" + std::to_string(s.block) + ((i - 1) % 2 == 0 ? ".attention" : ".mlp");
    }
    s.parameters = params;
    s.output_bytes_per_row = out_bytes;
    s.times.push_back({1, 1.0, 2.0, 0.5});
    p.sublayers.push_back(s);
  }
  validate_profile(p, "test");
  return p;
}

ClusterSpec dedicated(int devices, double bandwidth = 1e18, double latency = 0.0) {
  ClusterSpec c;
  c.name = "test";
  c.nodes = 1;
  c.devices_per_node = devices;
  c.compute_slots_per_node = devices;
  c.intra = {bandwidth, latency};
  c.inter = {bandwidth, latency};
  return c;
}

// Even split of 2L + 2 sub-layers over K stages.
std::vector<std::pair<int, int>> even_ranges(int count, int stages) {
  std::vector<std::pair<int, int>> r;
  for (int s = 0; s < stages; ++s) r.emplace_back(s * count / stages, (s + 1) * count / stages);
  return r;
}

StepLayout pipeline(int stages, int replicas, int micro, Schedule schedule, int count) {
  StepLayout l;
  l.stages = stages;
  l.replicas = replicas;
  l.micro_batches = micro;
  l.schedule = schedule;
  l.ranges = even_ranges(count, stages);
  l.global_batch = static_cast<int64_t>(micro) * replicas;  // one row per micro-batch
  return l;
}

TEST(SimulatorStep, HandComputedSchedulesSharingAndAllReduce) {
  // 3 blocks: 8 sub-layers; 4 stages of 2: forward 2 s, backward 4 s per micro-batch.
  const ModelProfile p = uniform_profile(3);
  for (Schedule schedule : {Schedule::kGpipe, Schedule::kOneFOneB}) {
    // Uniform stages, free links: (M + K - 1) x (forward + backward).
    EXPECT_NEAR(simulate_step(p, dedicated(4), pipeline(4, 1, 8, schedule, 8)).seconds, 11 * 6.0, 1e-9)
        << to_string(schedule);
    EXPECT_NEAR(simulate_step(p, dedicated(4), pipeline(4, 1, 1, schedule, 8)).seconds, 4 * 6.0, 1e-9);
    EXPECT_NEAR(simulate_step(p, dedicated(2), pipeline(2, 1, 3, schedule, 8)).seconds, 4 * 12.0, 1e-9);
  }
  // One stage: M x (8 forward + 16 backward).
  EXPECT_NEAR(simulate_step(p, dedicated(1), pipeline(1, 1, 3, Schedule::kGpipe, 8)).seconds, 3 * 24.0, 1e-9);

  // Transfers: 4 stages, M = 1, 1 MB per sample at 1 MB/s with 0.5 s
  // latency: each of the 3 forward and 3 backward hops adds 1.5 s.
  const ModelProfile heavy = uniform_profile(3, 1000, 1000000);
  EXPECT_NEAR(simulate_step(heavy, dedicated(4, 1e6, 0.5), pipeline(4, 1, 1, Schedule::kGpipe, 8)).seconds,
              24.0 + 6 * 1.5 + 2 * 2 * 0.5 /* world all-reduce: 2 log2(4) latencies */, 1e-9);

  // Two replicas, one bucket: compute 24 s, then a ring all-reduce of
  // 8 x 1000 x 4 bytes: 2(n-1)/n x B = B bytes at 1000 B/s (32 s) after
  // 2(n-1) = 2 latencies, then the world all-reduce's 2 log2(2) latencies.
  StepOptions one_bucket;
  one_bucket.bucket_bytes = 1LL << 40;
  const StepReport dp = simulate_step(p, dedicated(2, 1000.0, 0.25), pipeline(1, 2, 1, Schedule::kGpipe, 8), one_bucket);
  EXPECT_NEAR(dp.seconds, 24.0 + 32.0 + 0.5 + 0.5, 1e-9);
  EXPECT_NEAR(dp.allreduce_seconds, 32.5, 1e-9);
  EXPECT_DOUBLE_EQ(dp.allreduce_bytes, 32000.0);
  // Buckets of one sub-layer each start during backward and overlap it: the
  // last sub-layer's backward (2 s) is all that is left unhidden after the
  // first bucket, so the step is shorter than compute + all-reduce.
  StepOptions small;
  small.bucket_bytes = 1;
  const double overlapped =
      simulate_step(p, dedicated(2, 1000.0, 0.0), pipeline(1, 2, 1, Schedule::kGpipe, 8), small).seconds;
  EXPECT_LT(overlapped, 24.0 + 32.0 - 1.0);
  EXPECT_GE(overlapped, 2.0 + 32.0);  // the first bucket starts after 2 s of backward at the earliest

  // Compute sharing: 4 ranks on 2 slots, all computing at once, run at half
  // speed: K = 1, R = 4, no transfer cost.
  ClusterSpec shared = dedicated(4);
  shared.compute_slots_per_node = 2;
  EXPECT_NEAR(simulate_step(p, shared, pipeline(1, 4, 1, Schedule::kGpipe, 8)).seconds, 2 * 24.0, 1e-6);
  // A pipeline's bubble gives the core to the others: 4 stages on 2 slots
  // are slower than on 4 but faster than fully serialised.
  const double two_slots = simulate_step(p, shared, pipeline(4, 1, 4, Schedule::kGpipe, 8)).seconds;
  EXPECT_GT(two_slots, 7 * 6.0);
  EXPECT_LT(two_slots, 4 * 4 * 6.0);
}

TEST(SimulatorStep, DataParallelStepChargesThePassesAsTrainStepRunsThem) {
  // Trainer::train_step with 2 replicas of one stage (M = 1, one bucket):
  // forward + backward, the bucket all-reduce, GradientBuckets' copies on
  // both replicas, the norm pass on replica 0 only (replica 1 waits for it
  // at the world all-reduce), then the optimizer on both.
  // 8 sub-layers x 1000 parameters: copies 8 s, norm 16 s, optimizer 4 s.
  ModelProfile p = uniform_profile(3);
  p.bucket_copy_seconds_per_parameter = 1e-3;
  p.norm_seconds_per_parameter = 2e-3;
  p.optimizer_seconds_per_parameter = 0.5e-3;
  StepOptions one_bucket;
  one_bucket.bucket_bytes = 1LL << 40;
  const StepLayout layout = pipeline(1, 2, 1, Schedule::kGpipe, 8);
  // A core each: 4 (optimizer) + 24 (compute) + 32 (32,000 B at 1000 B/s) + 8 + 16.
  const StepReport own = simulate_step(p, dedicated(2, 1000.0, 0.0), layout, one_bucket);
  EXPECT_NEAR(own.seconds, 4.0 + 24.0 + 32.0 + 8.0 + 16.0, 1e-9);
  EXPECT_NEAR(own.busiest_compute_seconds, 24.0 + 8.0 + 16.0 + 4.0, 1e-9);  // replica 0
  // One core for both ranks: what both run takes twice as long, the norm
  // pass (replica 0 alone) does not: 8 + 48 + 32 + 16 + 16 = 120 s, where
  // charging the norm to both replicas would give 128 s.
  ClusterSpec one_core = dedicated(2, 1000.0, 0.0);
  one_core.compute_slots_per_node = 1;
  EXPECT_NEAR(simulate_step(p, one_core, layout, one_bucket).seconds, 8.0 + 48.0 + 32.0 + 16.0 + 16.0, 1e-6);
}

TEST(SimulatorStep, RowsBucketsInterpolationAndProfileJson) {
  EXPECT_EQ(micro_batch_rows(10, 4), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(micro_batch_rows(3, 8), (std::vector<int64_t>{1, 1, 1}));
  // Backward order, a new bucket once the open one holds >= 8000 bytes.
  const ModelProfile p = uniform_profile(3);  // 1000 parameters = 4000 bytes each
  EXPECT_EQ(gradient_buckets(p, 0, 8, 0, 8000, 4), (std::vector<std::vector<int>>{{7, 6}, {5, 4}, {3, 2}, {1, 0}}));
  EXPECT_EQ(gradient_buckets(p, 2, 8, 3, 1, 4), (std::vector<std::vector<int>>{{7}, {6}, {5}, {4}, {3}}));

  SubLayerProfile s;
  s.times = {{2, 1.0, 2.0, 0.5}, {4, 1.5, 3.0, 0.7}, {8, 2.5, 5.0, 1.1}};
  EXPECT_DOUBLE_EQ(s.forward_seconds(3), 1.25);
  EXPECT_DOUBLE_EQ(s.forward_seconds(16), 4.5);           // last segment extended
  EXPECT_DOUBLE_EQ(s.backward_seconds(1), 1.5);           // first segment extended
  EXPECT_DOUBLE_EQ(s.frozen_forward_seconds(6), 0.9);
  s.times = {{4, 1.0, 2.0, 0.5}};
  EXPECT_DOUBLE_EQ(s.forward_seconds(2), 0.5);  // one point: proportional

  // JSON round trip, then the errors a hand-edited file gets.
  ModelProfile q = uniform_profile(2);
  q.optimizer_seconds_per_parameter = 1e-9;
  const nlohmann::json j = profile_to_json(q);
  const ModelProfile back = profile_from_json(j, "p.json");
  EXPECT_EQ(back.sublayers.size(), 6u);
  EXPECT_DOUBLE_EQ(back.optimizer_seconds_per_parameter, 1e-9);
  EXPECT_DOUBLE_EQ(back.sublayers[3].frozen_forward_seconds(1), 0.5);
  auto err = [](nlohmann::json bad) { return error_message<ConfigError>([&] { profile_from_json(bad, "p.json"); }); };
  nlohmann::json swapped = j;
  std::swap(swapped["sublayers"][1], swapped["sublayers"][2]);
  EXPECT_NE(err(swapped).find("p.json: sublayers[1] 'block0.mlp' is out of model order"), std::string::npos)
      << err(swapped);
  nlohmann::json negative = j;
  negative["sublayers"][2]["times"][0]["backward"] = -1.0;
  EXPECT_NE(err(negative).find("sublayers[2].times[0].backward must be >= 0"), std::string::npos) << err(negative);
  nlohmann::json typo = j;
  typo["optimiser_seconds_per_parameter"] = 1.0;
  EXPECT_NE(err(typo).find("optimiser_seconds_per_parameter is not a known setting"), std::string::npos);

  const nlohmann::json cluster = {{"nodes", 2}, {"devices_per_node", 8}, {"intra", {{"bandwidth_gbps", 8}}},
                                  {"inter", {{"bandwidth_gbps", 5}, {"latency_us", 20}}}};
  const ClusterSpec c = cluster_from_json(cluster, "c.json");
  EXPECT_EQ(c.world_size(), 16);
  EXPECT_EQ(c.node_of(9), 1);
  EXPECT_DOUBLE_EQ(c.compute_slots_per_node, 8.0);
  EXPECT_DOUBLE_EQ(c.inter.latency, 20e-6);
  nlohmann::json no_bw = cluster;
  no_bw["intra"].erase("bandwidth_gbps");
  EXPECT_NE(error_message<ConfigError>([&] { cluster_from_json(no_bw, "c.json"); }).find("c.json: intra.bandwidth_gbps is missing"),
            std::string::npos);
}

// The stage ranges of a partition's description ("[0,4) 12 | [4,7) 9"
// -> "[0,4) [4,7)"), without the costs, which change as blocks freeze.
std::string ranges_only(const std::string& partition) {
  std::string out;
  size_t at = 0;
  while ((at = partition.find('[', at)) != std::string::npos) {
    const size_t close = partition.find(')', at);
    out += (out.empty() ? "" : " ") + partition.substr(at, close + 1 - at);
    at = close;
  }
  return out;
}

// ViT-B/16 with 100 classes from FLOPs (the derived profile the projection uses).
ModelProfile vit_b16_profile() {
  VitShape v;
  v.name = "vit-b16";
  v.classes = 100;
  DeviceThroughput d;
  d.description = "test";
  return derive_vit_profile(v, d, {1, 50, 400});
}

nlohmann::json vit_run(double frozen_cost) {
  return {{"model", "vit-b16"},
          {"train", {{"batch_size", 800}, {"epochs", 6}, {"steps_per_epoch", 4}}},
          {"parallel", {{"pipeline_stages", 8}, {"micro_batches", 16}}},
          {"freeze", {{"policy", "schedule"}, {"alpha", 1.0 / 3.0}}},
          {"autopipe", {{"frozen_cost", frozen_cost}}}};
}

TEST(SimulatorRun, PublishedVitB16SequenceTransitionsAndBreakdown) {
  const ModelProfile p = vit_b16_profile();
  EXPECT_EQ(p.sublayers[1].parameters, 2362368 + 1536);
  EXPECT_EQ(p.sublayers[2].parameters, 4722432 + 1536);
  EXPECT_EQ(p.sublayers[0].parameters, 742656);
  EXPECT_EQ(p.cache_entry_bytes, 197 * 768 * 4);
  // 17.6 GMACs forward per image (REFERENCE.md): 35.1 GFLOP.
  double flops = 0;
  for (double f : vit_forward_flops_per_row({"vit-b16", 224, 16, 3, 768, 12, 12, 3072, 100, 4})) flops += f;
  EXPECT_NEAR(flops / 1e9, 35.1, 0.2);

  ClusterSpec c = dedicated(8, 8e9, 10e-6);
  c.nodes = 2;
  c.inter = {5e9, 20e-6};
  c.cache_memory_bytes = 1e12;  // holds the 3,200 samples' entries
  // lambda_frozen 0 (the public code): K = 8, 8, 4, 2, 2, 1 with the f of the
  // alpha 1/3 bound, and AutoDP fills the freed ranks.
  const RunReport r = simulate_run(p, c, run_spec_from_json(vit_run(0.0), "run"));
  EXPECT_EQ(r.frozen_by_epoch, (std::vector<int>{0, 4, 7, 9, 10, 11}));
  EXPECT_EQ(r.stages_by_epoch, (std::vector<int>{8, 8, 4, 2, 2, 1}));
  ASSERT_EQ(r.segments.size(), 6u);
  EXPECT_EQ(r.segments.back().replicas, 16);
  EXPECT_EQ(r.segments[2].micro_batches, 8);   // default for K = 4, batch 200: smallest candidate >= 2K
  EXPECT_EQ(r.segments[0].micro_batches, 16);  // configured at K0
  // Stage 0 holds the frozen prefix (9 sub-layers at f = 4) and at least
  // one trainable sub-layer.
  EXPECT_GE(std::stoi(r.segments[1].partition.substr(3)), 10) << r.segments[1].partition;
  // Freezing removes backward work, but with lambda 0 and no cache the
  // frozen forward still runs on stage 0: the run is faster than training
  // everything at K0 yet not every epoch is (f = 7 at K = 4 has stage 0
  // recomputing 7 blocks for a 200-sample batch).
  EXPECT_LT(r.segments.back().step_seconds, r.segments[0].step_seconds / 2);
  double sum = 0;
  for (double s : r.epoch_seconds) sum += s;
  EXPECT_NEAR(sum, r.total_seconds, 1e-9 * sum);
  ASSERT_EQ(r.transitions.size(), 5u);
  EXPECT_GT(r.transitions[0].bytes_moved, 0);
  // lambda 1/6: the prefix weighs on stage 0 and compression stops at K = 4
  // until f = 11, where stage 0 must hold 23 + 1 of the 26 sub-layers and
  // four stages no longer fit (a forced shrink, as in the engine).
  EXPECT_EQ(simulate_run(p, c, run_spec_from_json(vit_run(1.0 / 6.0), "run")).stages_by_epoch,
            (std::vector<int>{8, 8, 4, 4, 4, 2}));

  // The engine's measured vit-b16 transition (docs/benchmarks.md): f 0 -> 6,
  // K 4 -> 2, R 1 -> 2 with AdamW moved 732 MiB at 32 px (5 tokens), with
  // the partition at lambda_frozen 0 (it was measured before the partition
  // counted the frozen forward under 1F1B).
  VitShape small;
  small.name = "vit-b16";
  small.image_size = 32;
  small.classes = 10;
  DeviceThroughput d;
  d.description = "test";
  nlohmann::json move = {{"model", "vit-b16"},
                         {"train", {{"batch_size", 8}, {"epochs", 2}, {"steps_per_epoch", 2}}},
                         {"parallel", {{"pipeline_stages", 4}}},
                         {"freeze", {{"policy", "manual"}, {"manual", {6}}}},
                         {"autopipe", {{"frozen_cost", 0.0}, {"frozen_balance", "lambda"}}}};
  const RunReport moved = simulate_run(derive_vit_profile(small, d, {1}), dedicated(4), run_spec_from_json(move, "run"));
  ASSERT_EQ(moved.transitions.size(), 1u);
  EXPECT_EQ(moved.transitions[0].stages_after, 2);
  EXPECT_NEAR(moved.transitions[0].bytes_moved / 1048576.0, 732.0, 8.0);

  // The breakdown: every configuration, the published figures beside them.
  const auto rows = simulate_breakdown(p, c, run_spec_from_json(vit_run(0.0), "run"));
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_DOUBLE_EQ(rows[0].speedup, 1.0);
  EXPECT_DOUBLE_EQ(rows[5].published, 2.83);
  // Freeze only (autopipe.enabled=false, no cache): K and the starting
  // partition stay however many blocks freeze, and nothing moves.
  EXPECT_EQ(rows[1].report.stages_by_epoch, (std::vector<int>{8, 8, 8, 8, 8, 8}));
  for (const Segment& s : rows[1].report.segments)
    EXPECT_EQ(ranges_only(s.partition), ranges_only(rows[1].report.segments[0].partition));
  ASSERT_EQ(rows[1].report.transitions.size(), 5u);
  for (const Transition& t : rows[1].report.transitions) EXPECT_EQ(t.bytes_moved, 0.0);
  EXPECT_EQ(rows[2].report.segments.back().replicas, 2);  // no AutoDP: R0 = 2
  EXPECT_GT(rows[4].speedup, rows[2].speedup);            // AutoDP uses the freed ranks
  // Cache hits skip the frozen prefix once the cache is filled.
  EXPECT_GT(rows[5].report.segments.back().cache_hit_rate, 0.5);
  EXPECT_LT(rows[5].report.segments.back().step_seconds, rows[4].report.segments.back().step_seconds);
  // AutoCache's advance runs on every training first stage of a node: with
  // AutoDP the 16 / K replicas spread over both nodes; without it the two
  // training pipelines both sit on node 0 once K < 8.
  size_t advances = 0;
  for (const Transition& t : rows[5].report.transitions) {
    if (t.frozen_before == 0) continue;
    EXPECT_EQ(t.cache_advance_ranks, 16 / t.stages_after / 2) << "K " << t.stages_after;
    EXPECT_GT(t.cache_advance_seconds, 0.0);
    ++advances;
  }
  EXPECT_EQ(advances, 4u);
  for (const Transition& t : rows[3].report.transitions) {
    if (t.frozen_before == 0) continue;
    EXPECT_EQ(t.cache_advance_ranks, 2) << "K " << t.stages_after;
  }
}

TEST(SimulatorRun, FreezeOnlyWithoutCacheLeavesFrozenSubLayersOnTheirStages) {
  // 3 blocks = 8 sub-layers (forward 1 s, backward 2 s, frozen forward
  // 0.5 s per row) on 4 stages of 2, 4 micro-batches of 1 row. With 2
  // blocks frozen ([0, 5)) stages 0 and 1 are frozen through (forward 1 s
  // each), stage 2 runs sub-layer 4 frozen and 5 trained (forward 1.5 s,
  // backward 2 s) and sends no gradient back, stage 3 trains (2 s + 4 s).
  // Stage 3 is the bottleneck: its first forward starts at 1 + 1 + 1.5,
  // then 4 x (2 + 4) s, then stage 2's last backward: 3.5 + 24 + 2.
  const ModelProfile p = uniform_profile(3, 1000, 100);
  for (Schedule schedule : {Schedule::kGpipe, Schedule::kOneFOneB}) {
    StepLayout l = pipeline(4, 1, 4, schedule, 8);
    l.frozen_sublayers = 5;
    const StepReport r = simulate_step(p, dedicated(4), l);
    EXPECT_NEAR(r.seconds, 29.5, 1e-9) << to_string(schedule);
    // 3 activation hops and 1 gradient hop (stage 3 -> 2) per micro-batch.
    EXPECT_DOUBLE_EQ(r.p2p_bytes, 4 * (3 + 1) * 100.0) << to_string(schedule);
    // 3 frozen: stages 0 to 2 run forwards only (1, 1, 1 s), stage 3
    // forwards 1.5 s and trains the head (2 s): 3 + 4 x 3.5 = 17 s.
    l.frozen_sublayers = 7;
    EXPECT_NEAR(simulate_step(p, dedicated(4), l).seconds, 17.0, 1e-9) << to_string(schedule);
  }
  // Two replicas: only the stages that train reduce gradients (sub-layer 5
  // on stage 2, 6 and 7 on stage 3: 3 x 1000 parameters x 4 bytes).
  StepLayout two = pipeline(4, 2, 4, Schedule::kGpipe, 8);
  two.frozen_sublayers = 5;
  EXPECT_DOUBLE_EQ(simulate_step(p, dedicated(8), two).allreduce_bytes, 12000.0);

  // The run: f = 0, 1, 2, 3 without AutoPipe and the cache. The starting
  // partition (2 sub-layers a stage) never changes, K stays 4, no state
  // moves, and the f = 2 epoch steps in the 29.5 s computed above.
  const nlohmann::json spec = {{"model", "uniform"},
                               {"train", {{"batch_size", 4}, {"epochs", 4}, {"steps_per_epoch", 2}}},
                               {"parallel", {{"pipeline_stages", 4}, {"micro_batches", 4}, {"schedule", "gpipe"}}},
                               {"freeze", {{"policy", "manual"}, {"manual", {1, 2, 3}}}},
                               {"autopipe", {{"enabled", false}}}};
  const RunReport r = simulate_run(p, dedicated(4), run_spec_from_json(spec, "run"));
  EXPECT_EQ(r.frozen_by_epoch, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(r.stages_by_epoch, (std::vector<int>{4, 4, 4, 4}));
  ASSERT_EQ(r.segments.size(), 4u);
  for (const Segment& s : r.segments) EXPECT_EQ(ranges_only(s.partition), "[0,2) [2,4) [4,6) [6,8)") << s.partition;
  EXPECT_NEAR(r.segments[0].step_seconds, 7 * 6.0, 1e-9);  // (M + K - 1) x (forward + backward)
  EXPECT_NEAR(r.segments[2].step_seconds, 29.5, 1e-9);
  EXPECT_NEAR(r.segments[3].step_seconds, 17.0, 1e-9);
  ASSERT_EQ(r.transitions.size(), 3u);
  for (const Transition& t : r.transitions) {
    EXPECT_EQ(t.stages_after, 4);
    EXPECT_EQ(t.bytes_moved, 0.0);
    EXPECT_EQ(t.max_rank_bytes, 0.0);
  }

  // With the cache on the prefix must be on stage 0: at f = 1 (3 frozen
  // sub-layers plus the next) stage 0 takes [0, 4) and state moves; at
  // f = 2 four stages can no longer hold [0, 6) plus one sub-layer each.
  nlohmann::json cached = spec;
  cached["autocache"] = {{"mode", "on"}};
  const RunReport c = simulate_run(p, dedicated(4), run_spec_from_json(cached, "run"));
  EXPECT_EQ(c.segments[1].partition.substr(0, 5), "[0,4)") << c.segments[1].partition;
  EXPECT_GT(c.transitions[0].bytes_moved, 0.0);
  EXPECT_LT(c.stages_by_epoch[2], 4);

  // AutoPipe pins the prefix (lambda 1: stage 0 holds [0, 4)); the what-if
  // autopipe.pin_frozen=false balances the frozen sub-layers like the rest.
  nlohmann::json pipe = spec;
  pipe["autopipe"] = {{"enabled", true}, {"frozen_cost", 1.0}};
  const RunReport pinned = simulate_run(p, dedicated(4), run_spec_from_json(pipe, "run"));
  EXPECT_EQ(pinned.segments[1].partition.substr(0, 5), "[0,4)") << pinned.segments[1].partition;
  pipe["autopipe"]["pin_frozen"] = false;
  const RunReport unpinned = simulate_run(p, dedicated(4), run_spec_from_json(pipe, "run"));
  EXPECT_EQ(ranges_only(unpinned.segments[1].partition), "[0,2) [2,4) [4,6) [6,8)") << unpinned.segments[1].partition;
  EXPECT_EQ(unpinned.stages_by_epoch[1], 4);
  EXPECT_LT(unpinned.segments[1].step_seconds, pinned.segments[1].step_seconds);
}

TEST(SimulatorRun, CacheAdvanceSplitsOverTheNodesFirstStages) {
  // 4 blocks, frozen forward 0.5 s per row and sub-layer, 16 samples, one
  // node of 4 devices. The cache fills in the epoch at f = 1, so the change
  // to f = 2 advances all 16 entries through 2 sub-layers (1 s per entry),
  // split over the R = 4 / K first stages of the new layout.
  const ModelProfile p = uniform_profile(4);
  const nlohmann::json spec = {{"model", "uniform"},
                               {"train", {{"batch_size", 8}, {"epochs", 3}, {"steps_per_epoch", 2}}},
                               {"parallel", {{"pipeline_stages", 4}, {"micro_batches", 2}}},
                               {"freeze", {{"policy", "manual"}, {"manual", {1, 2}}}},
                               {"autopipe", {{"frozen_cost", 0.0}}},
                               {"autocache", {{"mode", "on"}}}};
  const RunReport r = simulate_run(p, dedicated(4), run_spec_from_json(spec, "run"));
  ASSERT_EQ(r.transitions.size(), 2u);
  EXPECT_EQ(r.transitions[0].cache_advance_seconds, 0.0) << "nothing is cached before the first freeze";
  const Transition& t = r.transitions[1];
  ASSERT_EQ(t.frozen_before, 1);
  ASSERT_EQ(t.frozen_after, 2);
  EXPECT_EQ(t.cache_advance_ranks, 4 / t.stages_after);
  EXPECT_NEAR(t.cache_advance_seconds, 16.0 / (4 / t.stages_after), 1e-9);
  EXPECT_GE(t.seconds, t.cache_advance_seconds) << "the advance is part of the transition";

  // The what-if knob of the single advancing rank is gone with it.
  nlohmann::json old = spec;
  old["autocache"]["advance_ranks_per_node"] = 8;
  EXPECT_NE(error_message<ConfigError>([&] { run_spec_from_json(old, "run.json"); })
                .find("autocache.advance_ranks_per_node is not a known setting"),
            std::string::npos);
}

TEST(SimulatorRun, UnderOneFOneBThePartitionCountsTheFrozenForwardTheCacheDoesNotServe) {
  const ModelProfile p = vit_b16_profile();
  ClusterSpec c = dedicated(8, 8e9, 10e-6);
  c.nodes = 2;
  c.inter = {5e9, 20e-6};
  c.cache_memory_bytes = 1e12;
  auto run = [&](const std::string& balance) {
    nlohmann::json spec = vit_run(0.0);
    spec["parallel"]["schedule"] = "1f1b";
    spec["autopipe"]["frozen_balance"] = balance;
    spec["autocache"] = {{"mode", "on"}};
    return simulate_run(p, c, run_spec_from_json(spec, "run"));
  };
  const RunReport counted = run("auto");
  const RunReport lambda = run("lambda");
  // K comes from the compression criterion alone: unchanged.
  EXPECT_EQ(counted.stages_by_epoch, lambda.stages_by_epoch);
  // Epoch 1 fills the cache (f = 4, K = 8): at lambda 0 stage 0 takes the
  // frozen forward and two trainable sub-layers; counted, it keeps one, and
  // the step is faster.
  EXPECT_EQ(counted.segments[1].cache_hit_rate, 0.0);
  EXPECT_LT(counted.segments[1].step_seconds, 0.9 * lambda.segments[1].step_seconds)
      << counted.segments[1].partition << " vs " << lambda.segments[1].partition;
  EXPECT_LT(counted.total_seconds, lambda.total_seconds);
}

TEST(SimulatorRun, InputErrorsNameTheKey) {
  const ModelProfile p = vit_b16_profile();
  const ClusterSpec c = dedicated(8);
  auto err = [&](nlohmann::json spec) {
    return error_message<ConfigError>([&] { simulate_run(p, c, run_spec_from_json(spec, "run.json")); });
  };
  nlohmann::json adaptive = vit_run(0.0);
  adaptive["freeze"]["policy"] = "adaptive";
  EXPECT_NE(err(adaptive).find("'adaptive' needs gradient norms"), std::string::npos);
  nlohmann::json typo = vit_run(0.0);
  typo["parallel"]["micro_batch"] = 4;
  EXPECT_NE(err(typo).find("run.json: parallel.micro_batch is not a known setting"), std::string::npos) << err(typo);
  nlohmann::json balance = vit_run(0.0);
  balance["autopipe"]["frozen_balance"] = "time";
  EXPECT_NE(err(balance).find("autopipe.frozen_balance must be auto, lambda or forward, got 'time'"),
            std::string::npos)
      << err(balance);
  nlohmann::json odd = vit_run(0.0);
  odd["parallel"]["pipeline_stages"] = 3;
  EXPECT_NE(err(odd).find("parallel.pipeline_stages 3 must divide the 8 ranks"), std::string::npos) << err(odd);
  nlohmann::json model = vit_run(0.0);
  model["model"] = "vit-small";
  EXPECT_NE(err(model).find("does not match the profile's model 'vit-b16'"), std::string::npos);
  nlohmann::json both = vit_run(0.0);
  both["train"]["samples"] = 1000;
  EXPECT_NE(err(both).find("train.steps_per_epoch or train.samples must be given (exactly one)"), std::string::npos);
  StepLayout l = pipeline(4, 4, 1, Schedule::kGpipe, static_cast<int>(p.size()));
  EXPECT_NE(error_message<ConfigError>([&] { simulate_step(p, c, l); }).find("need 16 ranks; cluster 'test' has 8"),
            std::string::npos);
}

}  // namespace
}  // namespace pipet::sim
