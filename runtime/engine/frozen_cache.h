// FrozenPrefixCache: stage 0's view of AutoCache. It serves the output of the
// frozen sub-layers [0, f) of a TransformerModel for a list of samples from
// the node-wide ActivationCache (autocache/), computes and stores the misses,
// advances entries when f grows, and runs the on/off/auto policy with the
// timings it measures. Tensor <-> raw-buffer conversion lives here.
//
// Contract for the caller (the trainer, on the ranks that run stage 0):
//  - Construct once per process with the same `job_id`, entry shape, depth
//    range and config on every rank of the job on a node (the segment's
//    layout must agree; a live segment with another layout is a ConfigError).
//    Bad config values throw ConfigError naming the key. A shared-memory or
//    disk tier too small for one entry is not an error: a warning, and the
//    cache runs without that tier (without shm: every lookup is a miss).
//  - Each step, for the frozen prefix (frozen_end >= 1), call frozen_output()
//    instead of running sub-layers [0, frozen_end) yourself. It works whether
//    the cache is enabled or not (disabled: it computes everything, and times
//    it for the auto policy), so the trainer needs no second code path;
//    enabled() only says which source served the batch.
//  - Augmentation: with mode on or auto, a sample's inputs are drawn with its
//    view id (cache_view_id(seed, epoch, sample, views)) as the augmentation
//    epoch, whether the batch is served from the cache or computed, so
//    enabling or disabling the cache never changes the values (f32). Mode off
//    draws with `epoch` itself, as training without the cache does.
//  - At each decision point (epoch boundary) in auto mode call
//    update_decision(f) with the frozen depth of the coming interval; it logs
//    the reason. In on/off mode it is a no-op returning the fixed state.
//  - At a freeze change from f_old to f_new (after the last optimizer step
//    that could change sub-layers [f_old, f_new)), the node's entries at
//    f_old are advanced, spread over S processes of the node that hold the
//    current weights of sub-layers [0, f_new): process i calls
//    advance(..., CacheShard{i, S}) and handles exactly the samples with
//    sample % S == i (all views of a sample go to one shard). The split
//    depends on the key alone, never on a listing, so shards may start at
//    different times. Then, after EVERY shard has returned (a barrier), ONE
//    process calls drop_depth(f_old) for what is left at f_old (entries
//    nobody could read), and the processes barrier again before any
//    frozen_output at the new depth. With S = 1 (the default) advance() drops
//    the leftovers itself. Overlapping or missing shards are safe (values stay
//    correct): they duplicate work, or leave entries to drop_depth, to be
//    recomputed on their next use. Without advance(), old-depth entries
//    merely occupy slots until CLOCK evicts them.
//  - Numerics (f32): a hit returns the very bits the miss computed, and an
//    advanced entry equals computing the deeper prefix from the inputs in the
//    batch advance() used. CPU BLAS results of attention/MLP sub-layers
//    depend on the batch's composition and order by ~1 ulp, so a value
//    computed in one batch may differ by ~1 ulp from the same sample
//    recomputed in another batch (the embedding, depth 1, does not).
//  - The frozen sub-layers run in the model's current train/eval mode under
//    no-grad. Cached values are only equal to recomputed ones when the frozen
//    prefix is deterministic: dropout 0 or the frozen sub-layers in eval
//    mode. Misses and advancing run on the device of the model's parameters;
//    the returned hidden is float32 on that device.
//  - Text datasets: their inputs do not depend on the epoch (no text
//    augmentation), so the attention mask of every row and the inputs of the
//    misses come from one get_batch(indices, 0).
//  - Not thread-safe: one thread per object. Failures of the cache (full,
//    lock timeout, unusable tier) are misses; only caller bugs (a depth
//    outside [1, max_frozen_end], a model whose output does not have the
//    entry shape) throw ModelError, and dataset errors propagate.
#pragma once

#include "autocache/activation_cache.h"
#include "autocache/cache_policy.h"
#include "runtime/core/torch_pch.h"
#include "runtime/model/model.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

struct AutoCacheConfig;
class Dataset;

// The [tokens, hidden] shape of one sample's activation between sub-layers:
// ViT: (image_size / patch_size)^2 + 1 tokens; BERT: `seq_len` tokens.
std::vector<int64_t> frozen_entry_shape(const ModelSpec& spec, int64_t seq_len);

// Frozen sub-layers are feature extractors: eval mode (no dropout), so the
// output of sub-layers [0, frozen_sublayer_count(frozen_blocks)) is
// deterministic (what the cache relies on) whatever the training mode.
void set_frozen_eval(TransformerModel& model, int frozen_blocks);

// One process's part of advancing a node's entries: the samples with
// sample % count == index.
struct CacheShard {
  size_t index = 0;
  size_t count = 1;
};

class FrozenPrefixCache {
 public:
  // `entry_shape`: one sample's activation after any sub-layer below the
  // head. `max_frozen_end`: the deepest frozen prefix ever served (at most
  // model.num_sublayers() - 1; depths 1..max_frozen_end are registered, at
  // most 64). `seed` keys the view ids. Collective-free.
  FrozenPrefixCache(const AutoCacheConfig& config, std::string job_id, std::vector<int64_t> entry_shape,
                    size_t max_frozen_end, uint64_t seed);
  ~FrozenPrefixCache();
  FrozenPrefixCache(const FrozenPrefixCache&) = delete;
  FrozenPrefixCache& operator=(const FrozenPrefixCache&) = delete;

  // The output of sub-layers [0, frozen_end) for the samples `indices` of
  // `data`, as the Activations the first trainable sub-layer takes (hidden
  // [B, tokens, hidden] float32; attention_mask for text). When enabled,
  // hits are read from the cache and misses computed and stored; a hit and a
  // miss serve the same value (bf16/f16: both rounded to the stored dtype).
  Activations frozen_output(TransformerModel& model, const Dataset& data, const std::vector<int64_t>& indices,
                            int64_t epoch, size_t frozen_end);

  // Pushes the entries of the node at depth `old_end` that belong to
  // `shard` (sample % shard.count == shard.index) through sub-layers
  // [old_end, new_end) in batches of `batch_size` (in sample order), stores
  // the results at new_end and erases each old entry once read. With
  // shard.count == 1 it then drops what is left at old_end; with more shards
  // that is drop_depth's job, once every shard is done. `data` supplies text
  // masks. Returns the number of entries advanced (0 without a cache).
  // ModelError for a bad depth, batch size or shard (index >= count).
  size_t advance(TransformerModel& model, const Dataset& data, size_t old_end, size_t new_end,
                 CacheShard shard = {}, int64_t batch_size = 64);

  // Removes every entry of the node left at `depth` and returns how many
  // (0 without a cache). Call it once every shard of an advance from
  // `depth` has returned. ModelError for a depth outside [1, max_frozen_end].
  size_t drop_depth(size_t depth);

  // Entries of the node at `depth` (0 without a cache). Lists the keys: one
  // pass over the index, meant for decision points, not for every step.
  // ModelError for a depth outside [1, max_frozen_end].
  size_t entries_at(size_t depth);

  // Whether frozen_output reads from the cache in the current interval.
  bool enabled() const { return enabled_; }
  CacheMode mode() const { return policy_.mode; }
  // The view a sample is drawn with in `epoch` (mode on/auto).
  int view_of(int64_t epoch, int64_t sample) const;

  // The timings measured since the last decision at `frozen_end` (per batch
  // of the average size served), or where nothing was measured at this depth
  // in this or the previous interval, those of the deepest shallower depth
  // that was (timed_depth says which); NaN when there are none.
  CacheMeasurement measurement(size_t frozen_end) const;
  // Decides the next interval from measurement(frozen_end), logs the reason
  // and starts a new measuring interval (the next frozen_output runs one
  // probe of the path not taken: a put + read when disabled, a recompute of
  // an all-hit batch when enabled).
  CacheDecision update_decision(size_t frozen_end);
  // The same from timings measured elsewhere (or injected by tests).
  CacheDecision update_decision(const CacheMeasurement& measured);

  // The cache's counters (zeros, with misses = samples computed, when there
  // is no usable cache or mode is off).
  CacheStats stats() const;

  // Frozen-prefix outputs this object returned since construction: read
  // from the cache, and computed (misses, or everything while disabled).
  // The probes of the path not taken count in neither.
  struct ServedCounts {
    int64_t from_cache = 0;
    int64_t computed = 0;
  };
  ServedCounts served() const { return {served_from_cache_, static_cast<int64_t>(computed_samples_)}; }

 private:
  struct Timing {
    double seconds = 0.0;
    int64_t samples = 0;
  };

  // Computes rows `positions` of the batch, row p drawn with augmentation
  // epoch draws[p] (= its view id when a cache exists); writes them (rounded
  // to the stored dtype in mode on/auto) to `out` rows when `out` is not
  // null, stores them when `store` and returns the seconds spent (inputs +
  // forward + copy to the host).
  double compute_rows(TransformerModel& model, const Dataset& data, const std::vector<int64_t>& indices,
                      const std::vector<int64_t>& draws, const std::vector<size_t>& positions, size_t frozen_end,
                      const Activations* text_inputs, float* out, bool store);
  void check_depth(size_t depth, const char* what) const;
  void record(Timing& timing, double seconds, int64_t samples);
  void start_interval(size_t depth);

  CachePolicyOptions policy_;
  CacheDtype dtype_ = CacheDtype::kF32;
  int views_ = 1;
  uint64_t seed_ = 0;
  size_t max_frozen_end_ = 0;
  std::vector<int64_t> entry_shape_;
  size_t entry_elements_ = 0;
  std::unique_ptr<ActivationCache> cache_;
  bool enabled_ = false;
  uint64_t computed_samples_ = 0;
  int64_t served_from_cache_ = 0;

  // Measuring interval (reset at each decision and depth change).
  size_t interval_depth_ = 0;
  Timing forward_;
  Timing read_;
  int64_t interval_calls_ = 0;
  int64_t interval_samples_ = 0;
  // The previous interval's per-sample figures, kept as fallback at its depth.
  size_t last_depth_ = 0;
  double last_forward_per_sample_ = 0.0;
  double last_read_per_sample_ = 0.0;
  double last_batch_ = 0.0;
  bool last_has_forward_ = false;
  bool last_has_read_ = false;
};

}  // namespace pipet
