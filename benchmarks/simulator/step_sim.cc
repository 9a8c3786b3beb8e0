#include "benchmarks/simulator/step_sim.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "runtime/core/errors.h"

namespace pipet::sim {

Schedule schedule_from_string(const std::string& name, const std::string& what) {
  if (name == "gpipe") return Schedule::kGpipe;
  if (name == "1f1b") return Schedule::kOneFOneB;
  throw ConfigError(what + ": unknown schedule '" + name + "'; use gpipe or 1f1b");
}

const char* to_string(Schedule schedule) { return schedule == Schedule::kGpipe ? "gpipe" : "1f1b"; }

std::vector<int64_t> micro_batch_rows(int64_t pipeline_rows, int micro_batches) {
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(micro_batches, pipeline_rows));
  std::vector<int64_t> rows;
  for (int64_t m = 0; m < count; ++m) rows.push_back(pipeline_rows / count + (m < pipeline_rows % count ? 1 : 0));
  return rows;
}

std::vector<std::vector<int>> gradient_buckets(const ModelProfile& profile, int begin, int end, int frozen_sublayers,
                                               int64_t bucket_bytes, int64_t bytes_per_parameter) {
  std::vector<std::vector<int>> buckets;
  int64_t open_bytes = 0;
  for (int j = end; j-- > begin;) {
    if (j < frozen_sublayers || profile.sublayers[j].parameters == 0) continue;
    if (buckets.empty() || open_bytes >= bucket_bytes) {
      buckets.emplace_back();
      open_bytes = 0;
    }
    buckets.back().push_back(j);
    open_bytes += profile.sublayers[j].parameters * bytes_per_parameter;
  }
  return buckets;
}

void validate_layout(const StepLayout& l, const ModelProfile& profile, const ClusterSpec& cluster) {
  auto fail = [](const std::string& what) { throw ConfigError("simulated layout: " + what); };
  if (l.stages < 1 || l.replicas < 1) fail("stages and replicas must be >= 1");
  if (l.stages * l.replicas > cluster.world_size())
    fail(std::to_string(l.stages) + " stages x " + std::to_string(l.replicas) + " replicas need " +
         std::to_string(l.stages * l.replicas) + " ranks; cluster '" + cluster.name + "' has " +
         std::to_string(cluster.world_size()));
  if (l.micro_batches < 1) fail("micro_batches must be >= 1");
  if (static_cast<int>(l.ranges.size()) != l.stages)
    fail(std::to_string(l.ranges.size()) + " stage ranges for " + std::to_string(l.stages) + " stages");
  int next = 0;
  for (size_t s = 0; s < l.ranges.size(); ++s) {
    if (l.ranges[s].first != next || l.ranges[s].second <= l.ranges[s].first)
      fail("stage " + std::to_string(s) + " range [" + std::to_string(l.ranges[s].first) + ", " +
           std::to_string(l.ranges[s].second) + ") does not continue the previous stage with at least one sub-layer");
    next = l.ranges[s].second;
  }
  if (next != static_cast<int>(profile.size()))
    fail("the stages cover " + std::to_string(next) + " of the " + std::to_string(profile.size()) + " sub-layers");
  if (l.frozen_sublayers < 0 || l.frozen_sublayers >= static_cast<int>(profile.size()))
    fail("frozen_sublayers must leave the head trainable");
  if (l.global_batch < 1 || l.global_batch % l.replicas != 0)
    fail("global batch " + std::to_string(l.global_batch) + " does not split evenly over " +
         std::to_string(l.replicas) + " replicas");
  if (l.cache_serves) {
    if (l.frozen_sublayers == 0 || l.frozen_sublayers > l.ranges[0].second)
      fail("the cache serves the frozen prefix, which must be non-empty and on the first stage");
    if (l.cache_memory_hits < 0 || l.cache_disk_hits < 0 || l.cache_memory_hits + l.cache_disk_hits > 1 + 1e-12)
      fail("cache hit fractions must be >= 0 and sum to at most 1");
  }
}

namespace {

// ----- The event engine --------------------------------------------------

// Something that takes time: a rank computing, bytes moving over links, or
// a plain delay (latency). Computation and transfers progress at a rate
// shared with everyone using the same resource at the same time.
struct Activity {
  enum Kind { kCompute, kFlow, kTimer } kind = kTimer;
  double remaining = 0.0;   // compute: seconds at full speed; flow: bytes; timer: seconds
  int node = -1;            // compute: the node whose slots it shares
  std::vector<int> links;   // flow: the link resources it crosses
  double cap = 0.0;         // flow: bytes/s it gets at most
  std::function<void()> done;
};

struct Op {
  enum Kind { kCompute, kSend, kRecv, kLaunch, kWaitCollectives, kWaitSends, kBarrier } kind = kCompute;
  double work = 0.0;   // compute seconds at full speed
  int peer = -1;       // send / recv
  int64_t tag = 0;     // message identity between the pair
  double bytes = 0.0;  // send, launch
  int group = -1;      // launch: the stage's data-parallel group
};

class Simulation {
 public:
  Simulation(const ClusterSpec& cluster, int ranks, std::vector<std::vector<int>> groups)
      : cluster_(cluster), groups_(std::move(groups)), ranks_(static_cast<size_t>(ranks)) {
    group_busy_.assign(groups_.size(), false);
    group_queue_.resize(groups_.size());
  }

  void set_program(int rank, std::vector<Op> ops) { ranks_[rank].ops = std::move(ops); }

  // Runs every program to its end; barrier completion times in order.
  std::vector<double> run() {
    for (size_t r = 0; r < ranks_.size(); ++r) advance(static_cast<int>(r));
    while (!activities_.empty()) step_time();
    for (size_t r = 0; r < ranks_.size(); ++r)
      if (ranks_[r].pc < ranks_[r].ops.size())
        throw Error(ExitCode::kInternal, "simulator deadlock: rank " + std::to_string(r) + " stopped at op " +
                                             std::to_string(ranks_[r].pc) + " of " +
                                             std::to_string(ranks_[r].ops.size()));
    return barrier_times_;
  }

  double busy_compute(int rank) const { return ranks_[rank].compute_total; }
  std::vector<std::pair<double, double>> group_spans(int group) const {
    auto it = group_spans_.find(group);
    return it == group_spans_.end() ? std::vector<std::pair<double, double>>{} : it->second;
  }
  double p2p_bytes() const { return p2p_bytes_; }
  double collective_bytes() const { return collective_bytes_; }

 private:
  struct RankState {
    std::vector<Op> ops;
    size_t pc = 0;
    bool blocked = false;
    int pending_sends = 0;
    int pending_collectives = 0;
    int launches = 0;  // collectives launched so far (sequence within its group)
    double compute_total = 0.0;
  };
  struct Collective {
    std::set<int> arrived;
    double bytes = 0.0;
  };

  void start(Activity a) { activities_.push_back(std::make_unique<Activity>(std::move(a))); }

  // Links: intra of node n = n, NIC of node n = nodes + n.
  std::vector<int> links_between(int a, int b) const {
    const int na = cluster_.node_of(a), nb = cluster_.node_of(b);
    if (na == nb) return {na};
    return {cluster_.nodes + na, cluster_.nodes + nb};
  }
  const LinkSpec& link_spec(int a, int b) const {
    return cluster_.node_of(a) == cluster_.node_of(b) ? cluster_.intra : cluster_.inter;
  }

  // Executes ops until the rank computes, blocks or finishes.
  void advance(int r) {
    RankState& s = ranks_[r];
    s.blocked = false;
    while (s.pc < s.ops.size()) {
      const Op& op = s.ops[s.pc];
      switch (op.kind) {
        case Op::kCompute: {
          ++s.pc;
          if (op.work <= 0) break;
          s.compute_total += op.work;
          Activity a;
          a.kind = Activity::kCompute;
          a.remaining = op.work;
          a.node = cluster_.node_of(r);
          a.done = [this, r] { advance(r); };
          start(std::move(a));
          return;
        }
        case Op::kSend: {
          ++s.pc;
          ++s.pending_sends;
          p2p_bytes_ += op.bytes;
          const int dst = op.peer;
          const int64_t tag = op.tag;
          const double bytes = op.bytes;
          const std::vector<int> links = links_between(r, dst);
          const double cap = link_spec(r, dst).bandwidth;
          auto deliver = [this, r, dst, tag] {
            --ranks_[r].pending_sends;
            mailbox_.insert({r, dst, tag});
            wake(r);
            wake(dst);
          };
          Activity delay;
          delay.kind = Activity::kTimer;
          delay.remaining = link_spec(r, dst).latency;
          delay.done = [this, bytes, links, cap, deliver] {
            Activity flow;
            flow.kind = Activity::kFlow;
            flow.remaining = bytes;
            flow.links = links;
            flow.cap = cap;
            flow.done = deliver;
            start(std::move(flow));
          };
          start(std::move(delay));
          break;
        }
        case Op::kRecv: {
          auto it = mailbox_.find({op.peer, r, op.tag});
          if (it == mailbox_.end()) {
            s.blocked = true;
            return;
          }
          mailbox_.erase(it);
          ++s.pc;
          break;
        }
        case Op::kLaunch: {
          ++s.pc;
          ++s.pending_collectives;
          const int seq = s.launches++;
          Collective& c = collectives_[{op.group, seq}];
          c.arrived.insert(r);
          c.bytes = op.bytes;
          if (c.arrived.size() == groups_[op.group].size()) {
            group_queue_[op.group].push_back(seq);
            pump_group(op.group);
          }
          break;
        }
        case Op::kWaitCollectives:
          if (s.pending_collectives > 0) {
            s.blocked = true;
            return;
          }
          ++s.pc;
          break;
        case Op::kWaitSends:
          if (s.pending_sends > 0) {
            s.blocked = true;
            return;
          }
          ++s.pc;
          break;
        case Op::kBarrier: {
          const int64_t index = op.tag;
          std::set<int>& arrived = barriers_[index];
          arrived.insert(r);
          s.blocked = true;
          if (arrived.size() == ranks_.size()) {
            // A small all-reduce over the world: 2 log2(W) latency steps.
            double latency = 0.0;
            if (ranks_.size() > 1) {
              const bool crosses = cluster_.node_of(static_cast<int>(ranks_.size()) - 1) != 0;
              latency = 2.0 * std::ceil(std::log2(static_cast<double>(ranks_.size()))) *
                        (crosses ? cluster_.inter.latency : cluster_.intra.latency);
            }
            Activity a;
            a.kind = Activity::kTimer;
            a.remaining = latency;
            a.done = [this, index] {
              barrier_times_.push_back(now_);
              for (size_t q = 0; q < ranks_.size(); ++q) {
                ++ranks_[q].pc;
                advance(static_cast<int>(q));
              }
              barriers_.erase(index);
            };
            start(std::move(a));
          }
          return;
        }
      }
    }
  }

  void wake(int r) {
    if (ranks_[r].blocked && ranks_[r].pc < ranks_[r].ops.size() && ranks_[r].ops[ranks_[r].pc].kind != Op::kBarrier)
      advance(r);
  }

  // Collectives of one group run one after another (one stream/communicator).
  void pump_group(int g) {
    if (group_busy_[g] || group_queue_[g].empty()) return;
    const int seq = group_queue_[g].front();
    group_queue_[g].pop_front();
    group_busy_[g] = true;
    const std::vector<int>& members = groups_[g];
    const double n = static_cast<double>(members.size());
    const double bytes = collectives_[{g, seq}].bytes;
    collective_bytes_ += bytes;
    std::set<int> nodes;
    for (int m : members) nodes.insert(cluster_.node_of(m));
    std::vector<int> links;
    const LinkSpec* spec = &cluster_.intra;
    if (nodes.size() > 1) {
      spec = &cluster_.inter;
      for (int node : nodes) links.push_back(cluster_.nodes + node);
    } else {
      links.push_back(*nodes.begin());
    }
    const double started = now_;
    Activity delay;
    delay.kind = Activity::kTimer;
    delay.remaining = 2.0 * (n - 1.0) * spec->latency;
    const double volume = 2.0 * (n - 1.0) / n * bytes;
    const double cap = spec->collective_or_bandwidth();
    delay.done = [this, g, seq, links, volume, started, cap] {
      Activity flow;
      flow.kind = Activity::kFlow;
      flow.remaining = volume;
      flow.links = links;
      flow.cap = cap;
      flow.done = [this, g, seq, started] {
        group_spans_[g].emplace_back(started, now_);
        for (int m : collectives_[{g, seq}].arrived) {
          --ranks_[m].pending_collectives;
          wake(m);
        }
        collectives_.erase({g, seq});
        group_busy_[g] = false;
        pump_group(g);
      };
      start(std::move(flow));
    };
    start(std::move(delay));
  }

  double link_capacity(int link) const {
    return link < cluster_.nodes ? cluster_.intra.aggregate_or_bandwidth() : cluster_.inter.aggregate_or_bandwidth();
  }

  // Advances time to the next completion and runs what completes.
  void step_time() {
    std::map<int, int> computing;  // node -> ranks computing
    std::map<int, int> flows;      // link -> flows
    for (const auto& a : activities_) {
      if (a->kind == Activity::kCompute) ++computing[a->node];
      if (a->kind == Activity::kFlow)
        for (int l : a->links) ++flows[l];
    }
    std::vector<double> rate(activities_.size());
    double dt = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < activities_.size(); ++i) {
      const Activity& a = *activities_[i];
      if (a.kind == Activity::kTimer) {
        rate[i] = 1.0;
      } else if (a.kind == Activity::kCompute) {
        rate[i] = std::min(1.0, cluster_.compute_slots_per_node / computing[a.node]);
      } else {
        double r = a.cap;
        for (int l : a.links) r = std::min(r, link_capacity(l) / flows[l]);
        rate[i] = r;
      }
      dt = std::min(dt, a.remaining / rate[i]);
    }
    now_ += dt;
    std::vector<std::unique_ptr<Activity>> finished;
    std::vector<std::unique_ptr<Activity>> running;
    for (size_t i = 0; i < activities_.size(); ++i) {
      Activity& a = *activities_[i];
      const double ttf = a.remaining / rate[i];
      a.remaining -= rate[i] * dt;
      if (ttf <= dt * (1 + 1e-9) + 1e-15) {
        finished.push_back(std::move(activities_[i]));
      } else {
        running.push_back(std::move(activities_[i]));
      }
    }
    activities_ = std::move(running);
    for (auto& a : finished) a->done();
  }

  const ClusterSpec& cluster_;
  std::vector<std::vector<int>> groups_;
  std::vector<RankState> ranks_;
  std::vector<std::unique_ptr<Activity>> activities_;
  std::set<std::tuple<int, int, int64_t>> mailbox_;
  std::map<std::pair<int, int>, Collective> collectives_;
  std::vector<bool> group_busy_;
  std::vector<std::deque<int>> group_queue_;
  std::map<int, std::vector<std::pair<double, double>>> group_spans_;
  std::map<int64_t, std::set<int>> barriers_;
  std::vector<double> barrier_times_;
  double now_ = 0.0;
  double p2p_bytes_ = 0.0;
  double collective_bytes_ = 0.0;
};

// ----- The engine's step as ops --------------------------------------------

int64_t trainable_parameters(const ModelProfile& p, int begin, int end, int frozen) {
  int64_t total = 0;
  for (int j = std::max(begin, frozen); j < end; ++j) total += p.sublayers[j].parameters;
  return total;
}

int64_t message_tag(int step, int micro, bool gradient) {
  return (static_cast<int64_t>(step) * 1000000 + micro) * 2 + (gradient ? 1 : 0);
}

}  // namespace

StepReport simulate_step(const ModelProfile& profile, const ClusterSpec& cluster, const StepLayout& l,
                         const StepOptions& options) {
  validate_layout(l, profile, cluster);
  if (options.steps < 1) throw ConfigError("simulated steps must be >= 1");
  const int K = l.stages, R = l.replicas;
  const int W = K * R;
  const double speed = cluster.speed_factor;
  const int64_t pipeline_rows = l.global_batch / R;
  const std::vector<int64_t> rows = micro_batch_rows(pipeline_rows, l.micro_batches);
  const int M = static_cast<int>(rows.size());

  // Stage-s data-parallel group: {pK + s}.
  std::vector<std::vector<int>> groups(static_cast<size_t>(K));
  for (int s = 0; s < K; ++s)
    for (int p = 0; p < R; ++p) groups[s].push_back(p * K + s);

  Simulation sim(cluster, W, groups);
  std::vector<double> compute_per_step(static_cast<size_t>(W), 0.0);
  for (int rank = 0; rank < W; ++rank) {
    const int p = rank / K, s = rank % K;
    const auto [begin, end] = l.ranges[s];
    // Frozen sub-layers may sit on any stage but the last: a stage frozen
    // through has no backward, and one that starts at or below the frozen
    // boundary has nothing trainable before it to send a gradient to.
    const bool has_backward = end > l.frozen_sublayers;
    const bool previous_has_backward = s > 0 && begin > l.frozen_sublayers;
    const bool cache_here = s == 0 && l.cache_serves;
    const int64_t trainable = trainable_parameters(profile, begin, end, l.frozen_sublayers);
    const auto buckets = gradient_buckets(profile, begin, end, l.frozen_sublayers, options.bucket_bytes,
                                          options.gradient_bytes_per_parameter);
    std::vector<int> bucket_of(profile.size(), -1);
    for (size_t b = 0; b < buckets.size(); ++b)
      for (int j : buckets[b]) bucket_of[j] = static_cast<int>(b);
    std::vector<double> bucket_bytes(buckets.size(), 0.0);
    for (size_t b = 0; b < buckets.size(); ++b)
      for (int j : buckets[b])
        bucket_bytes[b] += static_cast<double>(profile.sublayers[j].parameters * options.gradient_bytes_per_parameter);

    std::vector<Op> ops;
    auto compute = [&](double seconds) {
      Op op;
      op.kind = Op::kCompute;
      op.work = seconds;
      ops.push_back(op);
    };
    // The frozen prefix served from AutoCache for `batch` rows: reads of the
    // hits, and for the misses their inputs, the frozen forward and the write.
    auto cached_prefix_seconds = [&](double batch) {
      const double entry = static_cast<double>(profile.cache_entry_bytes);
      const double misses = batch * std::max(0.0, 1.0 - l.cache_memory_hits - l.cache_disk_hits);
      double seconds = batch * l.cache_memory_hits * entry / cluster.cache_memory_bandwidth +
                       batch * l.cache_disk_hits * entry / cluster.cache_disk_bandwidth;
      if (misses > 0) {
        seconds += misses * profile.input_seconds_per_row / speed;
        for (int j = 0; j < l.frozen_sublayers; ++j)
          seconds += profile.sublayers[j].frozen_forward_seconds(misses) / speed;
        if (l.cache_fills) seconds += misses * entry * cluster.cache_write_factor / cluster.cache_memory_bandwidth;
      }
      return seconds;
    };
    for (int step = 0; step < options.steps; ++step) {
      // Without the cache the first stage loads the whole batch up front;
      // with it, each micro-batch's prefix is served just before its forward
      // (Trainer::train_step, MicroBatch::produce_input).
      if (s == 0 && !cache_here) compute(static_cast<double>(pipeline_rows) * profile.input_seconds_per_row / speed);
      auto forward = [&](int m) {
        const double r = static_cast<double>(rows[m]);
        if (cache_here) compute(cached_prefix_seconds(r));
        if (s > 0) {
          Op op;
          op.kind = Op::kRecv;
          op.peer = rank - 1;
          op.tag = message_tag(step, m, false);
          ops.push_back(op);
        }
        double seconds = 0.0;
        for (int j = begin; j < end; ++j) {
          if (j < l.frozen_sublayers) {
            if (!cache_here) seconds += profile.sublayers[j].frozen_forward_seconds(r);
          } else {
            seconds += profile.sublayers[j].forward_seconds(r);
          }
        }
        compute(seconds / speed);
        if (s + 1 < K) {
          Op op;
          op.kind = Op::kSend;
          op.peer = rank + 1;
          op.tag = message_tag(step, m, false);
          op.bytes = r * static_cast<double>(profile.sublayers[end - 1].output_bytes_per_row);
          ops.push_back(op);
        }
      };
      auto backward = [&](int m) {
        if (!has_backward) return;
        const double r = static_cast<double>(rows[m]);
        if (s + 1 < K) {
          Op op;
          op.kind = Op::kRecv;
          op.peer = rank + 1;
          op.tag = message_tag(step, m, true);
          ops.push_back(op);
        }
        const bool last = m + 1 == M && R > 1;
        std::vector<int> remaining(buckets.size());
        for (size_t b = 0; b < buckets.size(); ++b) remaining[b] = static_cast<int>(buckets[b].size());
        double seconds = 0.0;
        for (int j = end; j-- > std::max(begin, l.frozen_sublayers);) {
          seconds += profile.sublayers[j].backward_seconds(r) / speed;
          if (last && bucket_of[j] >= 0 && --remaining[bucket_of[j]] == 0) {
            compute(seconds);
            seconds = 0.0;
            Op op;
            op.kind = Op::kLaunch;
            op.group = s;
            op.bytes = bucket_bytes[bucket_of[j]];
            ops.push_back(op);
          }
        }
        compute(seconds);
        if (previous_has_backward) {
          Op op;
          op.kind = Op::kSend;
          op.peer = rank - 1;
          op.tag = message_tag(step, m, true);
          op.bytes = r * static_cast<double>(profile.sublayers[begin - 1].output_bytes_per_row);
          ops.push_back(op);
        }
      };
      if (l.schedule == Schedule::kGpipe) {
        for (int m = 0; m < M; ++m) forward(m);
        for (int m = 0; m < M; ++m) backward(m);
      } else {
        const int warmup = std::min(K - s - 1, M);
        for (int m = 0; m < warmup; ++m) forward(m);
        for (int m = warmup; m < M; ++m) {
          forward(m);
          backward(m - warmup);
        }
        for (int m = M - warmup; m < M; ++m) backward(m);
      }
      ops.push_back(Op{Op::kWaitSends});
      if (R > 1 && !buckets.empty()) {
        ops.push_back(Op{Op::kWaitCollectives});
        compute(static_cast<double>(trainable) * profile.bucket_copy_seconds_per_parameter / speed);
      }
      if (p == 0) compute(static_cast<double>(trainable) * profile.norm_seconds_per_parameter / speed);
      Op barrier;
      barrier.kind = Op::kBarrier;
      barrier.tag = step;
      ops.push_back(barrier);
      compute(static_cast<double>(trainable) * profile.optimizer_seconds_per_parameter / speed);
    }
    double total = 0.0;
    for (const Op& op : ops)
      if (op.kind == Op::kCompute) total += op.work;
    compute_per_step[rank] = total / options.steps;
    sim.set_program(rank, std::move(ops));
  }

  const std::vector<double> barriers = sim.run();
  StepReport report;
  report.ranks = W;
  // The first barrier includes the pipeline's start from empty; the period
  // between later ones is the steady state.
  report.seconds = barriers.size() >= 2 ? (barriers.back() - barriers.front()) / static_cast<double>(barriers.size() - 1)
                                        : barriers.front();
  report.busiest_compute_seconds = *std::max_element(compute_per_step.begin(), compute_per_step.end());
  for (int g = 0; g < (R > 1 ? K : 0); ++g) {
    const auto& spans = sim.group_spans(g);
    std::map<int, std::pair<double, double>> per_step;
    // Spans come in order; split them into steps by the barrier times.
    for (const auto& [a, b] : spans) {
      const int step = static_cast<int>(std::upper_bound(barriers.begin(), barriers.end(), a) - barriers.begin());
      auto it = per_step.find(step);
      if (it == per_step.end()) per_step[step] = {a, b};
      else it->second.second = std::max(it->second.second, b);
    }
    for (const auto& [step, span] : per_step)
      report.allreduce_seconds = std::max(report.allreduce_seconds, span.second - span.first);
  }
  report.p2p_bytes = sim.p2p_bytes() / options.steps;
  report.allreduce_bytes = sim.collective_bytes() / options.steps;
  return report;
}

}  // namespace pipet::sim
