#include "autocache/cache_policy.h"

#include "runtime/core/errors.h"

#include <cmath>
#include <cstdio>

namespace pipet {
namespace {

std::string seconds_text(double seconds) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.3f ms", seconds * 1e3);
  return buffer;
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

CacheMode parse_cache_mode(const std::string& text, const std::string& what) {
  if (text == "on") return CacheMode::kOn;
  if (text == "off") return CacheMode::kOff;
  if (text == "auto") return CacheMode::kAuto;
  throw ConfigError(what + ": unknown mode '" + text + "' (expected on, off or auto)");
}

const char* cache_mode_name(CacheMode mode) {
  switch (mode) {
    case CacheMode::kOff: return "off";
    case CacheMode::kOn: return "on";
    case CacheMode::kAuto: return "auto";
  }
  return "unknown";
}

void validate_cache_policy_options(const CachePolicyOptions& options) {
  if (!(options.margin >= 0.0 && options.margin < 1.0)) {
    throw ConfigError("autocache policy: margin must be in [0, 1) (got " + std::to_string(options.margin) + ")");
  }
}

CacheDecision decide_cache(const CachePolicyOptions& options, bool currently_enabled, const CacheMeasurement& m) {
  validate_cache_policy_options(options);
  const std::string at = "at frozen depth " + std::to_string(m.depth) + ": ";
  if (options.mode == CacheMode::kOn) return {m.depth > 0, at + (m.depth > 0 ? "autocache=on" : "autocache=on, nothing frozen yet")};
  if (options.mode == CacheMode::kOff) return {false, at + "autocache=off"};
  if (m.depth <= 0) return {false, at + "nothing frozen, nothing to cache"};
  const double forward = m.frozen_forward_seconds;
  const double read = m.cache_read_seconds;
  const std::string timings = "frozen forward " + seconds_text(forward) + "/batch, cache read " + seconds_text(read) + "/batch";
  if (!std::isfinite(forward) || !std::isfinite(read) || forward < 0 || read < 0) {
    return {currently_enabled, at + "unusable timings (" + timings + "): cache stays " + (currently_enabled ? "on" : "off")};
  }
  const double enable_below = forward * (1.0 - options.margin);
  const double disable_above = forward * (1.0 + options.margin);
  const std::string margin = std::to_string(static_cast<int>(std::lround(options.margin * 100))) + "% margin";
  if (m.timed_depth > 0 && m.timed_depth < m.depth) {
    const std::string shallower = "timed at frozen depth " + std::to_string(m.timed_depth) + " (" + timings + ")";
    if (read < enable_below) {
      return {true, at + shallower + ": reading is faster by more than the " + margin +
                        " there, and a deeper prefix only costs more to run: cache " +
                        (currently_enabled ? "stays on" : "enabled")};
    }
    return {currently_enabled, at + shallower + ": not faster by the " + margin +
                                   " there; a deeper prefix costs more to run, so the cache stays " +
                                   (currently_enabled ? "on" : "off") + " until timed at this depth"};
  }
  if (read < enable_below) {
    return {true, at + timings + ": reading is faster by more than the " + margin + ", cache " +
                      (currently_enabled ? "stays on" : "enabled")};
  }
  if (read > disable_above) {
    return {false, at + timings + ": reading is slower by more than the margin, cache " + (currently_enabled ? "disabled" : "stays off")};
  }
  return {currently_enabled, at + timings + ": within the hysteresis band, cache stays " + (currently_enabled ? "on" : "off")};
}

int cache_view_id(uint64_t seed, int64_t epoch, uint64_t sample, int cache_views) {
  if (cache_views < 1 || cache_views > 65536) {
    throw ConfigError("autocache.cache_views must be in [1, 65536] (got " + std::to_string(cache_views) + ")");
  }
  if (cache_views == 1) return 0;
  const uint64_t h = mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ sample);
  return static_cast<int>(h % static_cast<uint64_t>(cache_views));
}

}  // namespace pipet
