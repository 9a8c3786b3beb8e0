#include "benchmarks/simulator/run_sim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "autopipe/compression.h"
#include "autopipe/cost_model.h"
#include "autopipe/micro_batch.h"
#include "benchmarks/simulator/json_fields.h"
#include "runtime/core/errors.h"

namespace pipet::sim {
namespace {

// Sub-layers stage 0 holds for f frozen blocks when the frozen prefix is
// pinned there: the prefix and the first trainable sub-layer after it
// (Trainer's pinned_sublayers; RunStepper::pinned says when).
int pinned_sublayers(int frozen_blocks) {
  return frozen_blocks > 0 ? frozen_sublayer_count(frozen_blocks) + 1 : 0;
}

// The engine's kTuningSteps: one warm-up and two timed steps per candidate M.
constexpr int kTuningSteps = 3;

class RunStepper {
 public:
  RunStepper(const ModelProfile& profile, const ClusterSpec& cluster, const RunSpec& run)
      : profile_(profile), cluster_(cluster), run_(run) {
    if (run.model != profile.model)
      throw ConfigError("run spec model '" + run.model + "' does not match the profile's model '" + profile.model + "'");
    world_ = run.ranks > 0 ? run.ranks : cluster.world_size();
    if (world_ > cluster.world_size())
      throw ConfigError("run spec parallel.ranks " + std::to_string(world_) + " exceeds the cluster's " +
                        std::to_string(cluster.world_size()) + " devices");
    if (run.initial_stages < 1 || world_ % run.initial_stages != 0)
      throw ConfigError("parallel.pipeline_stages " + std::to_string(run.initial_stages) + " must divide the " +
                        std::to_string(world_) + " ranks");
    if (run.initial_stages > static_cast<int>(profile.size()))
      throw ConfigError("parallel.pipeline_stages " + std::to_string(run.initial_stages) + " exceeds the " +
                        std::to_string(profile.size()) + " sub-layers");
    initial_replicas_ = world_ / run.initial_stages;
    if (run.global_batch % (static_cast<int64_t>(initial_replicas_) * run.micro_batches) != 0)
      throw ConfigError("train.batch_size " + std::to_string(run.global_batch) + " must split evenly into " +
                        std::to_string(initial_replicas_) + " pipelines x " + std::to_string(run.micro_batches) +
                        " micro-batches");
    if (run.freeze) {
      if (run.freeze_options.mode == FreezeMode::kAdaptive || run.freeze_options.mode == FreezeMode::kPaper)
        throw ConfigError(std::string("freeze.policy '") + to_string(run.freeze_options.mode) +
                          "' needs gradient norms the simulator does not have; simulate 'schedule' (its upper "
                          "bound) or 'manual' with the frozen counts a real run logged");
      if (!run.scale_lr && run.global_batch % world_ != 0)
        throw ConfigError("train.batch_size " + std::to_string(run.global_batch) + " must be divisible by the " +
                          std::to_string(world_) + " ranks when freezing is on");
      policy_ = std::make_unique<FreezePolicy>(run.freeze_options, profile.num_blocks);
    }
    if (run.epochs < 1 || run.steps_per_epoch < 1) throw ConfigError("train.epochs and steps per epoch must be >= 1");
    // The engine profiles one micro-batch of the starting layout.
    measured_rows_ = std::max<int64_t>(1, run.global_batch / (static_cast<int64_t>(initial_replicas_) * run.micro_batches));
    reference_max_ = reference_max_stage_cost(costs(0), run.initial_stages, run.partition);
    samples_ = run.samples > 0 ? run.samples : run.steps_per_epoch * run.global_batch;
  }

  RunReport run() {
    apply_layout(run_.initial_stages);
    int64_t step = 0;
    for (int epoch = 0; epoch < run_.epochs; ++epoch) {
      report_.stages_by_epoch.push_back(stages_);
      report_.frozen_by_epoch.push_back(frozen_);
      double epoch_seconds = 0.0;
      int64_t left = steps_in_epoch();
      while (left > 0) {
        int64_t chunk = left;
        if (policy_ && run_.freeze_every_steps > 0) {
          const int64_t to_decision = run_.freeze_every_steps - step % run_.freeze_every_steps;
          chunk = std::min(chunk, to_decision);
        }
        epoch_seconds += run_segment(epoch, chunk);
        step += chunk;
        left -= chunk;
        const bool last_step = epoch + 1 == run_.epochs && left == 0;
        if (policy_ && run_.freeze_every_steps > 0 && step % run_.freeze_every_steps == 0 && !last_step)
          epoch_seconds += decide(epoch, step);
      }
      if (policy_ && run_.freeze_every_steps == 0 && epoch + 1 < run_.epochs) epoch_seconds += decide(epoch + 1, step);
      report_.epoch_seconds.push_back(epoch_seconds);
      report_.total_seconds += epoch_seconds;
    }
    return report_;
  }

 private:
  // keep_global_batch: the configured steps; scale_lr: the epoch's samples
  // in batches of the current (grown) global batch.
  int64_t steps_in_epoch() const {
    if (!run_.scale_lr) return run_.steps_per_epoch;
    return std::max<int64_t>(1, samples_ / global_batch_);
  }

  // Trainer::costs_for: the compression criterion's costs, or (for the
  // partition) the costs that may count the frozen forward on the share of
  // samples the cache will not serve.
  std::vector<double> costs(int frozen_blocks, bool for_partition = false) const {
    std::vector<SubLayerCost> records;
    for (const SubLayerProfile& s : profile_.sublayers) {
      SubLayerCost cost;
      cost.name = s.name;
      cost.parameters = s.parameters;
      if (run_.measured_cost) {
        cost.forward_seconds = s.forward_seconds(static_cast<double>(measured_rows_));
        cost.backward_seconds = s.backward_seconds(static_cast<double>(measured_rows_));
      }
      cost.activation_bytes = s.output_bytes_per_row * measured_rows_;
      records.push_back(cost);
    }
    records = with_frozen_blocks(std::move(records), frozen_blocks);
    CostModelOptions options;
    options.basis = run_.measured_cost ? CostBasis::kMeasuredTime : CostBasis::kParameters;
    options.frozen_cost_factor = run_.frozen_cost;
    if (!for_partition) return balance_costs(records, options);
    if (partition_counts_frozen_forward()) {
      options.frozen_balance = FrozenBalance::kForward;
      options.served_share = served_share_;
    }
    return partition_costs(records, options);
  }

  bool partition_counts_frozen_forward() const {
    return run_.frozen_balance == "forward" || (run_.frozen_balance == "auto" && run_.schedule == Schedule::kOneFOneB);
  }

  std::vector<std::pair<int, int>> ranges_of(const std::vector<Stage>& plan) const {
    std::vector<std::pair<int, int>> out;
    for (const Stage& s : plan) out.emplace_back(s.begin, s.end);
    return out;
  }

  // Sub-layers pinned to stage 0 for f frozen blocks, as Trainer decides:
  // whenever AutoCache may serve the prefix (it replaces the prefix's forward
  // there), and under AutoPipe (the paper's layout) unless the what-if
  // autopipe.pin_frozen=false drops that; without AutoPipe and the cache
  // nothing is pinned, frozen sub-layers stay on their stages.
  int pinned(int frozen_blocks) const {
    const bool pin = run_.cache != CacheMode::kOff || (run_.autopipe && run_.pin_frozen);
    return pin ? pinned_sublayers(frozen_blocks) : 0;
  }

  // Trainer::fixed_ranges: without AutoPipe the starting partition stays,
  // its boundaries pushed only as far as a pinned prefix needs (none with
  // the cache off: then these are the starting ranges exactly); empty when
  // K differs from K0 or the stages can no longer hold the pinned prefix.
  std::vector<std::pair<int, int>> fixed_ranges(int stages, int frozen_blocks) const {
    if (static_cast<size_t>(stages) != initial_ranges_.size()) return {};
    const int count = static_cast<int>(profile_.size());
    std::vector<int> begins;
    for (const auto& range : initial_ranges_) begins.push_back(range.first);
    for (size_t s = 1; s < begins.size(); ++s) {
      begins[s] = std::max(begins[s], begins[s - 1] + 1);
      if (s == 1) begins[s] = std::max(begins[s], pinned(frozen_blocks));
    }
    if (begins.back() >= count) return {};
    std::vector<std::pair<int, int>> ranges;
    for (size_t s = 0; s < begins.size(); ++s)
      ranges.emplace_back(begins[s], s + 1 < begins.size() ? begins[s + 1] : count);
    return ranges;
  }

  // Trainer::plan_ranges and apply_layout: the fixed ranges without AutoPipe
  // (while they hold), else the partition with the prefix pinned as
  // `pinned` says; then active replicas, batch and M.
  void apply_layout(int stages) {
    stages_ = stages;
    const std::vector<double> c = costs(frozen_, /*for_partition=*/true);
    const auto fixed = run_.autopipe ? std::vector<std::pair<int, int>>{} : fixed_ranges(stages, frozen_);
    if (fixed.empty()) {
      plan_ = partition(c, stages, run_.partition, pinned(frozen_));
    } else {
      plan_.clear();
      for (const auto& [b, e] : fixed) {
        Stage st;
        st.begin = b;
        st.end = e;
        for (int j = b; j < e; ++j) st.cost += c[j];
        plan_.push_back(st);
      }
    }
    if (initial_ranges_.empty()) initial_ranges_ = ranges_of(plan_);
    if (world_ % stages != 0)
      throw ConfigError(std::to_string(stages) + " stages do not divide the " + std::to_string(world_) + " ranks");
    replicas_ = run_.autodp ? world_ / stages : std::min(world_ / stages, initial_replicas_);
    // autodp.batch_policy (autodp/batch_policy.h's arithmetic).
    global_batch_ = run_.scale_lr ? run_.global_batch / initial_replicas_ * replicas_ : run_.global_batch;
    if (global_batch_ % replicas_ != 0)
      throw ConfigError("train.batch_size " + std::to_string(run_.global_batch) + " does not split over " +
                        std::to_string(replicas_) + " replicas");
    const int64_t pipeline_batch = global_batch_ / replicas_;
    micro_batches_ = stages == run_.initial_stages ? run_.micro_batches : default_micro_batches(stages, pipeline_batch);
    tuning_queue_.clear();
    if (run_.tune_micro_batches) {
      tuning_queue_ = table_.unmeasured(stages, pipeline_batch);
      if (tuning_queue_.empty() && table_.best(stages)) micro_batches_ = *table_.best(stages);
    }
  }

  StepLayout layout(int micro_batches) const {
    StepLayout l;
    l.stages = stages_;
    l.replicas = replicas_;
    l.micro_batches = micro_batches;
    l.schedule = run_.schedule;
    l.ranges = ranges_of(plan_);
    l.frozen_sublayers = frozen_sublayer_count(frozen_);
    l.global_batch = global_batch_;
    if (cache_serving()) {
      const double entry = static_cast<double>(profile_.cache_entry_bytes) * static_cast<double>(samples_);
      const double memory_share = entry > 0 ? std::min(1.0, cluster_.cache_memory_bytes / entry) : 1.0;
      l.cache_serves = true;
      l.cache_memory_hits = std::min(coverage_, memory_share);
      l.cache_disk_hits = coverage_ - l.cache_memory_hits;
      l.cache_fills = coverage_ < capacity_share() - 1e-12;
    }
    return l;
  }

  double capacity_share() const {
    const double need = static_cast<double>(profile_.cache_entry_bytes) * static_cast<double>(samples_);
    return need > 0 ? std::min(1.0, (cluster_.cache_memory_bytes + cluster_.cache_disk_bytes) / need) : 1.0;
  }

  bool cache_serving() const {
    return run_.cache != CacheMode::kOff && policy_ && frozen_ > 0 && cache_enabled_;
  }

  StepReport step_report(int micro_batches) {
    const StepLayout l = layout(micro_batches);
    std::ostringstream key;
    key << l.stages << ' ' << l.replicas << ' ' << l.micro_batches << ' ' << l.frozen_sublayers << ' '
        << l.cache_serves << ' ' << l.cache_memory_hits << ' ' << l.cache_disk_hits << ' ' << l.cache_fills;
    for (const auto& [b, e] : l.ranges) key << ' ' << b << '-' << e;
    auto it = memo_.find(key.str());
    if (it != memo_.end()) return it->second;
    StepOptions options;
    options.bucket_bytes = run_.bucket_bytes;
    const StepReport report = simulate_step(profile_, cluster_, l, options);
    memo_.emplace(key.str(), report);
    return report;
  }

  // The fewest training first-stage ranks (pipelines' stage 0) on any node
  // that has one: replicas / nodes when pipelines stay inside a node.
  int advancing_ranks_per_node() const {
    std::map<int, int> per_node;
    for (int p = 0; p < replicas_; ++p) ++per_node[cluster_.node_of(p * stages_)];
    int fewest = std::numeric_limits<int>::max();
    for (const auto& [node, count] : per_node) fewest = std::min(fewest, count);
    return per_node.empty() ? 1 : fewest;
  }

  // Share of the data set the first-stage ranks of one node see per epoch.
  double node_share() const {
    int on_node0 = 0;
    for (int p = 0; p < replicas_; ++p)
      if (cluster_.node_of(p * stages_) == 0) ++on_node0;
    return static_cast<double>(on_node0) / replicas_;
  }

  double run_segment(int epoch, int64_t steps) {
    Segment seg;
    seg.epoch = epoch;
    seg.steps = steps;
    seg.frozen_blocks = frozen_;
    seg.stages = stages_;
    seg.replicas = replicas_;
    seg.global_batch = global_batch_;
    seg.partition = describe(plan_);
    const bool serving = cache_serving();
    seg.cache_hit_rate = serving ? coverage_ : 0.0;
    double seconds = 0.0;
    int64_t left = steps;
    // The engine's micro-batch tuner: three real steps per unmeasured M.
    while (!tuning_queue_.empty() && left > 0) {
      const int m = tuning_queue_.front();
      const int64_t n = std::min<int64_t>(kTuningSteps, left);
      const StepReport r = step_report(m);
      seconds += static_cast<double>(n) * r.seconds;
      left -= n;
      if (n == kTuningSteps) {
        table_.record(stages_, m, static_cast<double>(global_batch_) / r.seconds);
        tuning_queue_.erase(tuning_queue_.begin());
        if (tuning_queue_.empty()) micro_batches_ = *table_.best(stages_);
      }
    }
    seg.micro_batches = micro_batches_;
    seg.step = step_report(micro_batches_);
    seg.step_seconds = seg.step.seconds;
    seconds += static_cast<double>(left) * seg.step.seconds;
    seg.seconds = seconds;
    if (serving) {
      // Samples seen in this segment are cached for later segments (never
      // hits within the epoch: the sampler draws each sample once).
      const double seen = node_share() * static_cast<double>(steps) / static_cast<double>(steps_in_epoch());
      coverage_ = std::min(capacity_share(), coverage_ + (1.0 - coverage_) * seen);
    }
    report_.segments.push_back(seg);
    return seconds;
  }

  // Trainer::decide_freeze. Returns the transition's seconds.
  double decide(int epoch, int64_t step) {
    const int before = frozen_;
    const int after = policy_->decide({});
    auto update_cache = [&] {
      if (run_.cache == CacheMode::kOn) cache_enabled_ = true;
      if (run_.cache != CacheMode::kAuto || frozen_ == 0) return;
      CacheMeasurement m;
      m.depth = frozen_sublayer_count(frozen_);
      const double rows = static_cast<double>(global_batch_ / replicas_);
      for (int j = 0; j < m.depth; ++j) m.frozen_forward_seconds += profile_.sublayers[j].frozen_forward_seconds(rows);
      m.frozen_forward_seconds /= cluster_.speed_factor;
      m.cache_read_seconds = rows * static_cast<double>(profile_.cache_entry_bytes) / cluster_.cache_memory_bandwidth;
      CachePolicyOptions options;
      options.mode = CacheMode::kAuto;
      options.margin = run_.cache_margin;
      cache_enabled_ = decide_cache(options, cache_enabled_, m).enabled;
    };
    if (after == before) {
      update_cache();
      return 0.0;
    }
    Transition t;
    t.epoch = epoch;
    t.step = step;
    t.frozen_before = before;
    t.frozen_after = after;
    t.stages_before = stages_;
    const std::vector<std::pair<int, int>> old_ranges = ranges_of(plan_);
    const int old_stages = stages_;
    CompressionOptions compression;
    compression.method = run_.partition;
    if (run_.divisor_compression)
      for (int k = 1; k <= world_; ++k)
        if (world_ % k == 0) compression.allowed_stage_counts.push_back(k);
    // Without AutoPipe K stays while the starting partition holds the pinned
    // prefix (always with the cache off); past that point it compresses.
    const bool keep_stages = !run_.autopipe && !fixed_ranges(stages_, after).empty();
    const int new_stages =
        keep_stages ? stages_
                    : compress_stage_count(costs(after), pinned(after), stages_, reference_max_, compression).stages;
    // Trainer::estimate_cache_served_share: the entries about to be advanced
    // to the new depth (none at the first freeze); an auto cache that is off
    // serves none.
    served_share_ = partition_counts_frozen_forward() && run_.cache != CacheMode::kOff && before > 0 &&
                            (run_.cache == CacheMode::kOn || cache_enabled_)
                        ? coverage_
                        : 0.0;
    frozen_ = after;
    apply_layout(new_stages);
    t.stages_after = stages_;
    {
      move_costs(old_stages, old_ranges, t);
      t.seconds = cluster_.transition_fixed_seconds + transfer_seconds_;
      if (run_.cache != CacheMode::kOff && before > 0 && coverage_ > 0) {
        // Trainer::decide_freeze: the node's training first-stage ranks of
        // the new layout push its entries through the newly frozen blocks,
        // each a shard of the samples; the node with the fewest is last.
        const double entries = coverage_ * static_cast<double>(samples_);
        const double rows = static_cast<double>(global_batch_ / replicas_);
        double per_batch = 0.0;
        for (int j = frozen_sublayer_count(before); j < frozen_sublayer_count(after); ++j)
          per_batch += profile_.sublayers[j].frozen_forward_seconds(rows);
        t.cache_advance_ranks = advancing_ranks_per_node();
        t.cache_advance_seconds = entries / rows * per_batch / cluster_.speed_factor / t.cache_advance_ranks;
        t.seconds += t.cache_advance_seconds;
      }
    }
    update_cache();
    report_.transitions.push_back(t);
    return t.seconds;
  }

  // move_training_state's traffic: each rank receives the parameters of the
  // sub-layers it newly holds, and the optimizer slots of those that stay
  // trainable, from the rank of its own old replica that held them.
  void move_costs(int old_stages, const std::vector<std::pair<int, int>>& old_ranges, Transition& t) {
    const std::vector<std::pair<int, int>> new_ranges = ranges_of(plan_);
    const int new_frozen_end = frozen_sublayer_count(frozen_);
    const int ranks = stages_ * replicas_;
    transfer_seconds_ = 0.0;
    for (int r = 0; r < ranks; ++r) {
      const int old_stage = r % old_stages;
      const auto [old_begin, old_end] = old_ranges[old_stage];
      const auto [begin, end] = new_ranges[r % stages_];
      double seconds = 0.0, bytes = 0.0;
      for (int j = begin; j < end; ++j) {
        if (j >= old_begin && j < old_end) continue;
        const double params = static_cast<double>(profile_.sublayers[j].parameters);
        const double b = 4.0 * params * (1.0 + (j >= new_frozen_end ? run_.optimizer_slots : 0));
        int sender_stage = 0;
        while (old_ranges[sender_stage].second <= j) ++sender_stage;
        const int sender = (r / old_stages) * old_stages + sender_stage;
        const LinkSpec& link = cluster_.node_of(sender) == cluster_.node_of(r) ? cluster_.intra : cluster_.inter;
        seconds += b / link.bandwidth;
        bytes += b;
      }
      t.bytes_moved += bytes;
      t.max_rank_bytes = std::max(t.max_rank_bytes, bytes);
      transfer_seconds_ = std::max(transfer_seconds_, seconds);
    }
  }

  const ModelProfile& profile_;
  const ClusterSpec& cluster_;
  const RunSpec& run_;
  int world_ = 1;
  int initial_replicas_ = 1;
  int64_t measured_rows_ = 1;
  int64_t samples_ = 0;
  double reference_max_ = 0.0;
  std::unique_ptr<FreezePolicy> policy_;
  int frozen_ = 0;
  int stages_ = 1, replicas_ = 1, micro_batches_ = 1;
  int64_t global_batch_ = 1;
  std::vector<Stage> plan_;
  std::vector<std::pair<int, int>> initial_ranges_;
  MicroBatchTable table_;
  std::vector<int> tuning_queue_;
  bool cache_enabled_ = false;
  double served_share_ = 0.0;  // the partition's estimate at the last freeze change
  double coverage_ = 0.0;
  double transfer_seconds_ = 0.0;
  std::map<std::string, StepReport> memo_;
  RunReport report_;
};

FreezeOptions freeze_options_from(const JsonFields& f) {
  FreezeOptions o;
  o.mode = freeze_mode_from_string(f.text("policy", "none"), "freeze.policy");
  o.alpha = f.number("alpha", 1.0 / 3.0);
  o.warmup_decisions = static_cast<int>(f.integer_at_least("warmup_decisions", 0, 0));
  o.max_frozen_fraction = f.number("max_fraction", 1.0);
  if (f.has("manual")) {
    const nlohmann::json& list = f.raw("manual");
    if (!list.is_array()) f.fail(f.key_path("manual"), "must be a list of frozen block counts");
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_number_integer())
        f.fail(f.key_path("manual[" + std::to_string(i) + "]"), "must be an integer, got " + list[i].dump());
      o.manual_schedule.push_back(list[i].get<int>());
    }
  }
  return o;
}

}  // namespace

RunSpec run_spec_from_json(const nlohmann::json& j, const std::string& where) {
  JsonFields root(j, where);
  RunSpec r;
  r.model = root.text("model");
  {
    const JsonFields t = root.object("train");
    r.global_batch = t.integer_at_least("batch_size", 1);
    r.epochs = static_cast<int>(t.integer_at_least("epochs", 1));
    if (t.has("steps_per_epoch") == t.has("samples"))
      t.fail(t.key_path("steps_per_epoch"), "or train.samples must be given (exactly one)");
    if (t.has("samples")) {
      r.samples = t.integer_at_least("samples", 1);
      r.steps_per_epoch = r.samples / r.global_batch;
      if (r.steps_per_epoch < 1)
        t.fail(t.key_path("samples"), "holds fewer samples than one batch of " + std::to_string(r.global_batch));
    } else {
      r.steps_per_epoch = t.integer_at_least("steps_per_epoch", 1);
    }
    const std::string optimizer = t.text("optimizer", "adamw");
    if (optimizer == "adamw") r.optimizer_slots = 2;
    else if (optimizer == "sgd") r.optimizer_slots = 1;
    else t.fail(t.key_path("optimizer"), "must be adamw or sgd, got '" + optimizer + "'");
    t.reject_unknown();
  }
  if (root.has("parallel")) {
    const JsonFields p = root.object("parallel");
    r.ranks = static_cast<int>(p.integer_at_least("ranks", 0, 0));
    r.initial_stages = static_cast<int>(p.integer_at_least("pipeline_stages", 1, 1));
    r.micro_batches = static_cast<int>(p.integer_at_least("micro_batches", 1, 1));
    r.schedule = schedule_from_string(p.text("schedule", "1f1b"), where + ": parallel.schedule");
    r.bucket_bytes = static_cast<int64_t>(p.positive("bucket_mb", 25.0) * 1024.0 * 1024.0);
    p.reject_unknown();
  }
  if (root.has("freeze")) {
    const JsonFields f = root.object("freeze");
    r.freeze_options = freeze_options_from(f);
    r.freeze = r.freeze_options.mode != FreezeMode::kNone;
    r.freeze_every_steps = f.integer_at_least("every_steps", 0, 0);
    f.reject_unknown();
  }
  if (root.has("autopipe")) {
    const JsonFields a = root.object("autopipe");
    r.autopipe = a.flag("enabled", true);
    r.partition = partition_method_from_string(a.text("partition", "optimal"), where + ": autopipe.partition");
    const std::string cost = a.text("cost", "parameters");
    if (cost != "parameters" && cost != "measured")
      a.fail(a.key_path("cost"), "must be parameters or measured, got '" + cost + "'");
    r.measured_cost = cost == "measured";
    r.frozen_cost = a.number("frozen_cost", 1.0 / 6.0);
    r.frozen_balance = a.text("frozen_balance", "auto");
    if (r.frozen_balance != "auto" && r.frozen_balance != "lambda" && r.frozen_balance != "forward")
      a.fail(a.key_path("frozen_balance"), "must be auto, lambda or forward, got '" + r.frozen_balance + "'");
    const std::string compression = a.text("compression", "halve");
    if (compression != "halve" && compression != "divisors")
      a.fail(a.key_path("compression"), "must be halve or divisors, got '" + compression + "'");
    r.divisor_compression = compression == "divisors";
    r.tune_micro_batches = a.flag("tune_micro_batches", false);
    r.pin_frozen = a.flag("pin_frozen", true);
    a.reject_unknown();
  }
  if (root.has("autodp")) {
    const JsonFields d = root.object("autodp");
    r.autodp = d.flag("enabled", true);
    const std::string policy = d.text("batch_policy", "keep_global_batch");
    if (policy != "keep_global_batch" && policy != "scale_lr")
      d.fail(d.key_path("batch_policy"), "must be keep_global_batch or scale_lr, got '" + policy + "'");
    r.scale_lr = policy == "scale_lr";
    d.reject_unknown();
  }
  if (root.has("autocache")) {
    const JsonFields c = root.object("autocache");
    r.cache = parse_cache_mode(c.text("mode", "off"), where + ": autocache.mode");
    r.cache_margin = c.number("margin", 0.1);
    c.reject_unknown();
  }
  root.reject_unknown();
  if (r.scale_lr && r.freeze_every_steps > 0)
    throw ConfigError(where + ": autodp.batch_policy scale_lr is simulated with decisions at epoch boundaries only "
                      "(freeze.every_steps 0)");
  return r;
}

RunReport simulate_run(const ModelProfile& profile, const ClusterSpec& cluster, const RunSpec& run) {
  if (run.freeze) validate_freeze_options(run.freeze_options, profile.num_blocks);
  RunStepper stepper(profile, cluster, run);
  return stepper.run();
}

std::vector<BreakdownRow> simulate_breakdown(const ModelProfile& profile, const ClusterSpec& cluster,
                                             const RunSpec& run) {
  if (!run.freeze) throw ConfigError("breakdown: the run spec needs a freeze policy (schedule or manual)");
  std::vector<BreakdownRow> rows = {
      {"baseline (GPipe + DDP)", false, false, false, CacheMode::kOff, 1.0, {}, 0.0},
      {"freeze only", true, false, false, CacheMode::kOff, 0.95, {}, 0.0},
      {"freeze + AutoPipe", true, true, false, CacheMode::kOff, 0.0, {}, 0.0},
      {"freeze + AutoPipe + AutoCache", true, true, false, CacheMode::kOn, 1.26, {}, 0.0},
      {"freeze + AutoPipe + AutoDP", true, true, true, CacheMode::kOff, 2.27, {}, 0.0},
      {"all four", true, true, true, CacheMode::kOn, 2.83, {}, 0.0},
  };
  for (BreakdownRow& row : rows) {
    RunSpec spec = run;
    spec.freeze = row.freeze;
    spec.autopipe = row.autopipe;
    spec.autodp = row.autodp;
    spec.cache = row.cache;
    row.report = simulate_run(profile, cluster, spec);
  }
  for (BreakdownRow& row : rows) row.speedup = rows[0].report.total_seconds / row.report.total_seconds;
  return rows;
}

}  // namespace pipet::sim
