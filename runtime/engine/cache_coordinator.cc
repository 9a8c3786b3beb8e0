#include "runtime/engine/cache_coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "autopipe/cost_model.h"
#include "runtime/comm/collectives.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/host.h"
#include "runtime/core/logging.h"
#include "runtime/core/stopwatch.h"
#include "runtime/core/torch_compat.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/compute_device.h"
#include "runtime/engine/metrics.h"
#include "runtime/model/model.h"

namespace pipet {
namespace {

// This rank's part of advancing its node's entries: the members on one host
// split the entries by sample, shard i of n taking the samples with
// sample % n == i, in world rank order; count 0 for a non-member. A host's
// ranks are those with equal host_identity().key (host name and boot id;
// Open MPI's local size serves only as a check). Every shard reads only its
// own keys and the leftovers are dropped only after every shard is done, so
// a wrong grouping could only duplicate work or leave entries to be
// recomputed. Collective over `world`.
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

}  // namespace

CacheCoordinator::CacheCoordinator(const AutoCacheConfig& config, Communicator& world, TransformerModel& model,
                                   const Dataset& train_data, const ComputeDevice& device, int64_t seq_len,
                                   uint64_t seed)
    : config_(config),
      world_(world),
      model_(model),
      train_data_(train_data),
      device_(device),
      seq_len_(seq_len),
      seed_(seed) {
  // One cache per node and job: rank 0 names it, everyone uses the name.
  std::string job_id = "job" + std::to_string(::getpid()) + "-" +
                       std::to_string(SteadyClock::now().time_since_epoch().count());
  job_id_ = world_.size() > 1 ? broadcast_string(world_, job_id, 0) : job_id;
}

CacheCoordinator::~CacheCoordinator() = default;

FrozenPrefixCache& CacheCoordinator::cache() {
  if (!cache_) {
    cache_ = std::make_unique<FrozenPrefixCache>(config_, job_id_, frozen_entry_shape(model_.spec(), seq_len_),
                                                 model_.num_sublayers() - 1, seed_);
  }
  return *cache_;
}

// Timings at the current depth win over stand-ins from a shallower one.
void CacheCoordinator::decide_for_interval(int frozen_blocks, bool serving, int64_t probe_rows, int64_t epoch) {
  if (config_.mode != "auto") return;
  const size_t depth = static_cast<size_t>(frozen_sublayer_count(frozen_blocks));
  // [forward, read, count] at this depth, then the same for stand-ins from
  // a shallower one; and the deepest stand-in depth.
  std::vector<double> sums(6, 0.0);
  double deepest_stand_in = 0.0;
  if (serving) {
    CacheMeasurement m = cache().measurement(depth);
    if (!std::isfinite(m.frozen_forward_seconds)) {
      // Nothing timed at any depth yet (the first freeze): one batch of the
      // frozen prefix now, whose output is stored and read back, gives the
      // timings, so the first frozen interval need not run uncached. Its
      // entries are valid (drawn with their view ids) and serve later hits.
      set_frozen_eval(model_, frozen_blocks);
      const int64_t rows = std::min<int64_t>(probe_rows, train_data_.size());
      std::vector<int64_t> probe(static_cast<size_t>(rows));
      for (int64_t i = 0; i < rows; ++i) probe[static_cast<size_t>(i)] = i;
      AutocastGuard autocast(device_.device.type(), device_.autocast_dtype);
      cache().frozen_output(model_, train_data_, probe, epoch, depth);
      m = cache().measurement(depth);
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
  world_.all_reduce(totals);
  world_.all_reduce(deepest, {ReduceOp::kMax});
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
  cache().update_decision(averaged);
}

double CacheCoordinator::estimate_served_share(int before, bool serving) {
  // An auto cache that is off serves none.
  double share = 0.0;
  if (cache_ && serving) {
    if (cache_->mode() == CacheMode::kOn || cache_->enabled()) {
      const double drawn = static_cast<double>(train_data_.size()) * static_cast<double>(config_.views);
      const double entries = static_cast<double>(cache_->entries_at(static_cast<size_t>(frozen_sublayer_count(before))));
      share = drawn > 0 ? std::min(1.0, entries / drawn) : 0.0;
    }
  }
  // Weighting each node by its first stages.
  torch::Tensor sums = torch::tensor({share, serving && cache_ ? 1.0 : 0.0}, torch::kDouble);
  world_.all_reduce(sums);
  const double ranks = sums[1].item<double>();
  return ranks > 0 ? std::clamp(sums[0].item<double>() / ranks, 0.0, 1.0) : 0.0;
}

void CacheCoordinator::advance(int before, int after, bool member, int64_t epoch, int64_t step,
                               MetricsLog& metrics) {
  const size_t old_end = static_cast<size_t>(frozen_sublayer_count(before));
  const size_t new_end = static_cast<size_t>(frozen_sublayer_count(after));
  const AdvanceShard shard = node_advance_shard(world_, member);
  const auto started = SteadyClock::now();
  size_t advanced = 0;
  if (shard.count > 0) {
    set_frozen_eval(model_, after);
    AutocastGuard autocast(device_.device.type(), device_.autocast_dtype);  // the precision of the frozen forward in training
    advanced = cache().advance(model_, train_data_, old_end, new_end, CacheShard{shard.index, shard.count});
  }
  torch::Tensor slowest = torch::tensor({seconds_since(started)}, torch::kDouble);
  world_.barrier();
  // A node's only shard has dropped its leftovers inside advance().
  const size_t dropped = shard.count > 1 && shard.index == 0 ? cache().drop_depth(old_end) : 0;
  torch::Tensor totals = torch::tensor(
      {static_cast<double>(advanced), static_cast<double>(dropped), static_cast<double>(shard.count > 0)},
      torch::kDouble);
  world_.all_reduce(totals);
  world_.all_reduce(slowest, AllReduceOptions{ReduceOp::kMax});
  const auto entries = static_cast<int64_t>(totals[0].item<double>());
  const auto left = static_cast<int64_t>(totals[1].item<double>());
  const auto ranks = static_cast<int64_t>(totals[2].item<double>());
  // `dropped` counts what nodes with several shards left.
  metrics.emit("cache_advance", {{"epoch", epoch},
                                  {"step", step},
                                  {"frozen_before", static_cast<int64_t>(before)},
                                  {"frozen_after", static_cast<int64_t>(after)},
                                  {"entries", entries},
                                  {"ranks", ranks},
                                  {"nodes", static_cast<int64_t>(shard.nodes)},
                                  {"dropped", left},
                                  {"seconds", slowest.item<double>()}});
  if (world_.rank() == 0)
    spdlog::info("[autocache] advanced {} cached samples from {} to {} frozen blocks on {} rank(s) of {} node(s) "
                 "in {:.3f} s (the slowest shard); {} left at the old depth dropped",
                 entries, before, after, ranks, shard.nodes, slowest.item<double>(), left);
}

void CacheCoordinator::retreat(int before, int after, int64_t epoch, int64_t step, MetricsLog& metrics) {
  const size_t old_end = static_cast<size_t>(frozen_sublayer_count(before));
  // One process per node, whatever its role, drops what the node's cache
  // holds at the old depth: those outputs came from blocks that train again.
  const AdvanceShard shard = node_advance_shard(world_, /*member=*/true);
  const size_t dropped = shard.count > 0 && shard.index == 0 ? cache().drop_depth(old_end) : 0;
  torch::Tensor total = torch::tensor({static_cast<double>(dropped)}, torch::kDouble);
  world_.all_reduce(total);
  const auto entries = static_cast<int64_t>(total.item<double>());
  metrics.emit("cache_drop", {{"epoch", epoch},
                              {"step", step},
                              {"frozen_before", static_cast<int64_t>(before)},
                              {"frozen_after", static_cast<int64_t>(after)},
                              {"dropped", entries}});
  if (world_.rank() == 0)
    spdlog::info("[autocache] unfreeze {} -> {} blocks: dropped {} cached outputs of the old prefix", before, after,
                 entries);
}

std::function<Activations()> CacheCoordinator::producer(std::vector<int64_t> samples, int64_t epoch,
                                                        size_t frozen_end) {
  return [this, frozen_end, epoch, samples = std::move(samples)] {
    // The frozen prefix runs in the precision it runs in without the cache.
    AutocastGuard autocast(device_.device.type(), device_.autocast_dtype);
    return cache().frozen_output(model_, train_data_, samples, epoch, frozen_end);
  };
}

FrozenPrefixCache::ServedCounts CacheCoordinator::served() const {
  return cache_ ? cache_->served() : FrozenPrefixCache::ServedCounts{};
}

double CacheCoordinator::share_from_cache(const FrozenPrefixCache::ServedCounts& now,
                                          const FrozenPrefixCache::ServedCounts& before) {
  const int64_t from_cache = now.from_cache - before.from_cache;
  const int64_t total = from_cache + now.computed - before.computed;
  return total > 0 ? static_cast<double>(from_cache) / static_cast<double>(total) : 0.0;
}

}  // namespace pipet
