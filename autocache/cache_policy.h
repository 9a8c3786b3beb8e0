// When to serve the frozen prefix from the cache (pure functions, no state
// beyond what the caller passes in), and which augmented view of a sample
// the cache holds in a given epoch.
#pragma once

#include <cstdint>
#include <string>

namespace pipet {

enum class CacheMode { kOff, kOn, kAuto };

// "on" / "off" / "auto"; throws ConfigError naming `what` otherwise.
CacheMode parse_cache_mode(const std::string& text, const std::string& what = "autocache.mode");
const char* cache_mode_name(CacheMode mode);

// Per-batch timings measured at the current frozen depth by the engine:
// running the frozen prefix, and reading the same batch's activations from
// the cache (a probe batch is put then read when the cache is still off).
struct CacheMeasurement {
  int depth = 0;
  double frozen_forward_seconds = 0.0;
  double cache_read_seconds = 0.0;
  // The depth the timings were taken at, when shallower than `depth` (0: at
  // `depth` itself). Right after a freeze change nothing has run at the new
  // depth yet; the last timings stand in: an entry has the same size at
  // every depth, so it costs the same to read, and a deeper prefix only
  // costs more to run, so the forward time is a lower bound.
  int timed_depth = 0;
};

struct CachePolicyOptions {
  CacheMode mode = CacheMode::kAuto;
  // Hysteresis: auto enables the cache when read < forward * (1 - margin)
  // and disables it when read > forward * (1 + margin); in between the
  // current state stays, so noisy timings near the break-even do not flap.
  // In [0, 1).
  double margin = 0.1;
};

struct CacheDecision {
  bool enabled = false;
  std::string reason;  // one line for the engine's log
};

// Throws ConfigError naming the field for a margin outside [0, 1) or NaN.
void validate_cache_policy_options(const CachePolicyOptions& options);

// The decision for the next interval. `currently_enabled` is the previous
// decision. No depth threshold: only the measured times decide (a frozen
// depth of 0 caches nothing, so auto keeps the cache off there). Timings
// that are negative, NaN or infinite keep the current state. Timings from a
// shallower depth can only enable the cache (its forward time is a lower
// bound); otherwise the state stays until the depth itself is timed.
CacheDecision decide_cache(const CachePolicyOptions& options, bool currently_enabled, const CacheMeasurement& measurement);

// The view id of `sample` in `epoch` when `cache_views` views per sample are
// cached: a hash of (seed, epoch, sample) modulo cache_views, so each epoch
// draws one of the sample's cache_views views independently. 1 view = the
// frozen prefix always sees one fixed view of each sample. The engine must
// key the augmentation of a sample by this view id (not the epoch) while the
// cache is in use, so a miss recomputes exactly the view a hit would serve.
// Trade-off: augmentation then offers only cache_views distinct views per
// sample instead of one per epoch (less regularisation; 1 is the published
// behaviour), and the cache needs cache_views times the space. Throws
// ConfigError when cache_views is not in [1, 65536].
int cache_view_id(uint64_t seed, int64_t epoch, uint64_t sample, int cache_views);

}  // namespace pipet
