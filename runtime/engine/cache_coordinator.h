// AutoCache across the job (DESIGN.md §4.4): the first-stage ranks' node-wide
// cache of the frozen prefix's output (FrozenPrefixCache), and what the ranks
// decide about it together: whether it serves the coming interval (auto
// mode, from world-averaged timings), what share of the samples it will
// serve (AutoPipe's partition counts the rest), and advancing its entries
// through newly frozen blocks at a freeze change, split over each node's
// first stages. Exists when freezing is on and autocache.mode is not off.
#pragma once

#include "runtime/core/config.h"
#include "runtime/engine/frozen_cache.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

class Communicator;
class Dataset;
class MetricsLog;
class TransformerModel;
struct ComputeDevice;

class CacheCoordinator {
 public:
  // Rank 0 names the job's cache and every rank takes the name: collective
  // over `world`. The cache itself is opened on first use, by the ranks
  // that serve. Every reference outlives the coordinator.
  CacheCoordinator(const AutoCacheConfig& config, Communicator& world, TransformerModel& model,
                   const Dataset& train_data, const ComputeDevice& device, int64_t seq_len, uint64_t seed);
  ~CacheCoordinator();
  CacheCoordinator(const CacheCoordinator&) = delete;
  CacheCoordinator& operator=(const CacheCoordinator&) = delete;

  // Auto mode (else nothing): the decision for the coming interval at
  // `frozen_blocks`, from the timings of every rank that serves (`serving`)
  // averaged over the world, so a rank that has just become a first stage
  // decides as the others do. With nothing timed yet (the first freeze) a
  // serving rank runs one probe batch of `probe_rows` samples of `epoch`:
  // computed, stored and read back. Collective.
  void decide_for_interval(int frozen_blocks, bool serving, int64_t probe_rows, int64_t epoch);

  // The share of the frozen prefix's outputs the cache will serve after a
  // change from `before` frozen blocks (> 0): the node caches' entries at
  // the old depth, all about to be advanced, over the samples x views a
  // first stage draws from, averaged over the serving ranks so every rank
  // plans from the same number. Collective.
  double estimate_served_share(int before, bool serving);

  // At a freeze change from `before` (> 0) to `after` blocks, once the new
  // layout holds: the node's entries at the old depth pushed through the
  // newly frozen blocks, split by sample over the node's members (first
  // stages that train, so they hold the whole frozen prefix); leftovers are
  // dropped only once every shard is done, and no rank serves the new depth
  // before every node's drop. Emits `event=cache_advance` to `metrics`.
  // Collective.
  void advance(int before, int after, bool member, int64_t epoch, int64_t step, MetricsLog& metrics);

  // At an unfreeze from `before` to `after` (< before) blocks: every node's
  // entries at the old depth are dropped (their blocks train again), before
  // any rank serves; the new depth starts empty. Emits `event=cache_drop`.
  // Collective.
  void retreat(int before, int after, int64_t epoch, int64_t step, MetricsLog& metrics);

  // A micro-batch's input on a serving first stage: the output of
  // sub-layers [0, frozen_end) for `samples`, from the cache or computed,
  // produced when the schedule reaches it.
  std::function<Activations()> producer(std::vector<int64_t> samples, int64_t epoch, size_t frozen_end);

  // This rank's frozen-prefix outputs so far, and the share of those since
  // `before` read from the cache (0 when none were served).
  FrozenPrefixCache::ServedCounts served() const;
  static double share_from_cache(const FrozenPrefixCache::ServedCounts& now,
                                 const FrozenPrefixCache::ServedCounts& before);

 private:
  FrozenPrefixCache& cache();

  AutoCacheConfig config_;
  Communicator& world_;
  TransformerModel& model_;
  const Dataset& train_data_;
  const ComputeDevice& device_;
  int64_t seq_len_;
  uint64_t seed_;
  std::string job_id_;  // the same on every rank of the job
  std::unique_ptr<FrozenPrefixCache> cache_;
};

}  // namespace pipet
