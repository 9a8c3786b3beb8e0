#include "runtime/engine/frozen_cache.h"

#include "runtime/engine/pipeline.h"

#include "autopipe/cost_model.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/core/stopwatch.h"
#include "runtime/data/dataset.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

namespace pipet {
namespace {

// AutoCache registers at most this many depths per segment.
constexpr size_t kMaxCachedDepths = 64;

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

torch::Device model_device(TransformerModel& model) {
  const auto parameters = model.parameters();
  return parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
}

Activations to_device(const Activations& in, torch::Device device) {
  Activations out;
  if (in.hidden.defined()) out.hidden = in.hidden.to(device);
  if (in.attention_mask.defined()) out.attention_mask = in.attention_mask.to(device);
  if (in.token_type_ids.defined()) out.token_type_ids = in.token_type_ids.to(device);
  return out;
}

// The sub-layers' float output on the host, checked against the entry shape.
torch::Tensor host_rows(const torch::Tensor& hidden, const std::vector<int64_t>& entry_shape, int64_t rows,
                        const std::string& where) {
  std::vector<int64_t> expected{rows};
  expected.insert(expected.end(), entry_shape.begin(), entry_shape.end());
  if (hidden.sizes().vec() != expected) {
    throw ModelError(where + ": the frozen sub-layers produced shape " + shape_text(hidden.sizes().vec()) +
                     " but the cache entry shape is " + shape_text(entry_shape) + " per sample (expected " +
                     shape_text(expected) + ")");
  }
  return hidden.to(torch::kCPU).to(torch::kFloat).contiguous();
}

CacheKey key_of(int64_t sample, size_t depth, int64_t view) {
  return CacheKey{static_cast<uint64_t>(sample), static_cast<int>(depth), static_cast<int>(view)};
}

}  // namespace

void set_frozen_eval(TransformerModel& model, int frozen_blocks) {
  const size_t frozen = static_cast<size_t>(frozen_sublayer_count(frozen_blocks));
  for (size_t j = 0; j < frozen && j < model.num_sublayers(); ++j) model.sublayer(j).eval();
}

std::vector<int64_t> frozen_entry_shape(const ModelSpec& spec, int64_t seq_len) {
  if (spec.family == ModelFamily::kVit) {
    if (spec.patch_size <= 0 || spec.image_size % spec.patch_size != 0) {
      throw ModelError("frozen_entry_shape: image_size " + std::to_string(spec.image_size) +
                       " is not a multiple of patch_size " + std::to_string(spec.patch_size));
    }
    const int64_t grid = spec.image_size / spec.patch_size;
    return {grid * grid + 1, spec.hidden_size};
  }
  if (seq_len <= 0) throw ModelError("frozen_entry_shape: seq_len must be positive (got " + std::to_string(seq_len) + ")");
  return {seq_len, spec.hidden_size};
}

FrozenPrefixCache::FrozenPrefixCache(const AutoCacheConfig& config, std::string job_id,
                                     std::vector<int64_t> entry_shape, size_t max_frozen_end, uint64_t seed)
    : seed_(seed), max_frozen_end_(max_frozen_end), entry_shape_(std::move(entry_shape)) {
  policy_.mode = parse_cache_mode(config.mode, "autocache.mode");
  policy_.margin = config.margin;
  if (!(config.margin >= 0.0 && config.margin < 1.0)) {
    throw ConfigError("autocache.margin must be in [0, 1) (got " + std::to_string(config.margin) + ")");
  }
  dtype_ = parse_cache_dtype(config.dtype, "autocache.dtype");
  if (config.views < 1 || config.views > 65536) {
    throw ConfigError("autocache.views must be in [1, 65536] (got " + std::to_string(config.views) + ")");
  }
  views_ = static_cast<int>(config.views);
  if (entry_shape_.empty()) throw ModelError("FrozenPrefixCache: entry_shape is empty");
  entry_elements_ = 1;
  for (const int64_t dim : entry_shape_) {
    if (dim <= 0) throw ModelError("FrozenPrefixCache: entry_shape " + shape_text(entry_shape_) + " has a non-positive dimension");
    entry_elements_ *= static_cast<size_t>(dim);
  }
  if (max_frozen_end_ < 1 || max_frozen_end_ > kMaxCachedDepths) {
    throw ModelError("FrozenPrefixCache: max_frozen_end " + std::to_string(max_frozen_end_) + " is outside [1, " +
                     std::to_string(kMaxCachedDepths) + "] (AutoCache registers at most " +
                     std::to_string(kMaxCachedDepths) + " depths)");
  }
  if (policy_.mode == CacheMode::kOff) return;

  const uint64_t slot_bytes = align_up(entry_elements_ * cache_dtype_size(dtype_), 64);
  if (!(config.shm_mb > 0.0)) throw ConfigError("autocache.shm_mb must be positive (got " + std::to_string(config.shm_mb) + ")");
  const auto shm_bytes = static_cast<uint64_t>(config.shm_mb * 1024.0 * 1024.0);
  if (!(config.disk_mb >= 0.0)) throw ConfigError("autocache.disk_mb must be >= 0 (got " + std::to_string(config.disk_mb) + ")");
  if (config.disk_mb > 0.0 && config.disk_dir.empty()) {
    throw ConfigError("autocache.disk_mb is " + std::to_string(config.disk_mb) +
                      " but autocache.disk_dir is empty (set a directory, or disk_mb 0 for no disk tier)");
  }
  if (shm_bytes < slot_bytes) {
    spdlog::warn("[autocache] autocache.shm_mb={} holds no entry of {} bytes ({} {}); the cache is disabled and the "
                 "frozen prefix is recomputed every step",
                 config.shm_mb, slot_bytes, shape_text(entry_shape_), cache_dtype_name(dtype_));
    return;
  }
  ActivationCacheOptions options;
  options.job_id = std::move(job_id);
  options.shm_capacity_bytes = shm_bytes;
  options.dtype = dtype_;
  const auto disk_bytes = static_cast<uint64_t>(config.disk_mb * 1024.0 * 1024.0);
  if (disk_bytes > 0 && disk_bytes < slot_bytes) {
    spdlog::warn("[autocache] autocache.disk_mb={} holds no entry of {} bytes; running without a disk tier",
                 config.disk_mb, slot_bytes);
  } else if (disk_bytes > 0) {
    options.disk_dir = config.disk_dir;
    options.disk_capacity_bytes = disk_bytes;
  }
  for (size_t depth = 1; depth <= max_frozen_end_; ++depth) {
    options.depth_shapes.push_back(DepthShape{static_cast<int>(depth), entry_shape_});
  }
  cache_ = std::make_unique<ActivationCache>(options);
  enabled_ = policy_.mode == CacheMode::kOn;
  spdlog::info("[autocache] mode {}, {} entries of {} ({} bytes/sample), {} view(s) per sample, shm {} MiB, disk {}",
               cache_mode_name(policy_.mode), cache_dtype_name(dtype_), shape_text(entry_shape_),
               entry_elements_ * cache_dtype_size(dtype_), views_, config.shm_mb,
               options.disk_capacity_bytes > 0 ? std::to_string(config.disk_mb) + " MiB in " + config.disk_dir : "none");
}

FrozenPrefixCache::~FrozenPrefixCache() = default;

int FrozenPrefixCache::view_of(int64_t epoch, int64_t sample) const {
  return cache_view_id(seed_, epoch, static_cast<uint64_t>(sample), views_);
}

void FrozenPrefixCache::check_depth(size_t depth, const char* what) const {
  if (depth < 1 || depth > max_frozen_end_) {
    throw ModelError(std::string(what) + ": frozen depth " + std::to_string(depth) + " is outside [1, " +
                     std::to_string(max_frozen_end_) + "] (the depths this cache was built for)");
  }
}

void FrozenPrefixCache::record(Timing& timing, double seconds, int64_t samples) {
  timing.seconds += seconds;
  timing.samples += samples;
}

void FrozenPrefixCache::start_interval(size_t depth) {
  if (interval_samples_ > 0) {
    if (last_depth_ != interval_depth_) last_has_forward_ = last_has_read_ = false;
    last_depth_ = interval_depth_;
    last_batch_ = static_cast<double>(interval_samples_) / static_cast<double>(interval_calls_);
    if (forward_.samples > 0) {
      last_forward_per_sample_ = forward_.seconds / static_cast<double>(forward_.samples);
      last_has_forward_ = true;
    }
    if (read_.samples > 0) {
      last_read_per_sample_ = read_.seconds / static_cast<double>(read_.samples);
      last_has_read_ = true;
    }
  }
  interval_depth_ = depth;
  forward_ = Timing{};
  read_ = Timing{};
  interval_calls_ = 0;
  interval_samples_ = 0;
}

double FrozenPrefixCache::compute_rows(TransformerModel& model, const Dataset& data,
                                       const std::vector<int64_t>& indices, const std::vector<int64_t>& draws,
                                       const std::vector<size_t>& positions, size_t frozen_end,
                                       const Activations* text_inputs, float* out, bool store) {
  const auto start = SteadyClock::now();
  const torch::Device device = model_device(model);
  const bool round = policy_.mode != CacheMode::kOff && dtype_ != CacheDtype::kF32;
  std::vector<uint16_t> scratch(round ? entry_elements_ : 0);

  auto run = [&](const Activations& inputs, const std::vector<size_t>& rows) {
    Activations result;
    {
      torch::NoGradGuard no_grad;
      result = model.forward_range(to_device(inputs, device), 0, frozen_end);
    }
    const torch::Tensor host =
        host_rows(result.hidden, entry_shape_, static_cast<int64_t>(rows.size()), "FrozenPrefixCache::frozen_output");
    const float* values = host.data_ptr<float>();
    for (size_t r = 0; r < rows.size(); ++r) {
      const size_t p = rows[r];
      const float* row = values + r * entry_elements_;
      if (store && cache_) cache_->put_f32(key_of(indices[p], frozen_end, draws[p]), row, entry_elements_);
      if (out == nullptr) continue;
      float* target = out + p * entry_elements_;
      if (round) {
        // A miss serves what a hit would read back: the value in the stored dtype.
        convert_from_f32(row, entry_elements_, dtype_, scratch.data());
        convert_to_f32(scratch.data(), entry_elements_, dtype_, target);
      } else {
        std::memcpy(target, row, entry_elements_ * sizeof(float));
      }
    }
  };

  if (text_inputs != nullptr) {
    std::vector<int64_t> rows(positions.begin(), positions.end());
    const torch::Tensor select = torch::tensor(rows, torch::kLong);
    Activations inputs;
    inputs.hidden = text_inputs->hidden.index_select(0, select);
    if (text_inputs->attention_mask.defined()) inputs.attention_mask = text_inputs->attention_mask.index_select(0, select);
    if (text_inputs->token_type_ids.defined()) inputs.token_type_ids = text_inputs->token_type_ids.index_select(0, select);
    run(inputs, positions);
  } else {
    // One get_batch per augmentation draw, so each sample gets its own view.
    std::map<int64_t, std::vector<size_t>> groups;
    for (const size_t p : positions) groups[draws[p]].push_back(p);
    for (const auto& [draw, rows] : groups) {
      std::vector<int64_t> samples;
      samples.reserve(rows.size());
      for (const size_t p : rows) samples.push_back(indices[p]);
      run(batch_inputs(data.get_batch(samples, draw)), rows);
    }
  }
  return seconds_since(start);
}

Activations FrozenPrefixCache::frozen_output(TransformerModel& model, const Dataset& data,
                                             const std::vector<int64_t>& indices, int64_t epoch, size_t frozen_end) {
  check_depth(frozen_end, "FrozenPrefixCache::frozen_output");
  if (frozen_end >= model.num_sublayers()) {
    throw ModelError("FrozenPrefixCache::frozen_output: frozen depth " + std::to_string(frozen_end) +
                     " leaves no trainable sub-layer of the model's " + std::to_string(model.num_sublayers()));
  }
  if (indices.empty()) throw ModelError("FrozenPrefixCache::frozen_output: the batch has no samples");
  if (frozen_end != interval_depth_) start_interval(frozen_end);

  const size_t count = indices.size();
  std::vector<int64_t> draws(count, epoch);
  if (policy_.mode != CacheMode::kOff) {
    for (size_t i = 0; i < count; ++i) draws[i] = view_of(epoch, indices[i]);
  }
  const bool text = data.modality() == Modality::kText;
  Activations text_inputs;
  if (text) text_inputs = batch_inputs(data.get_batch(indices, 0));

  std::vector<int64_t> sizes{static_cast<int64_t>(count)};
  sizes.insert(sizes.end(), entry_shape_.begin(), entry_shape_.end());
  torch::Tensor host = torch::empty(sizes, torch::kFloat);
  float* out = host.data_ptr<float>();
  const Activations* text_ptr = text ? &text_inputs : nullptr;
  const bool measuring = policy_.mode == CacheMode::kAuto && cache_ != nullptr;

  std::vector<size_t> all(count);
  for (size_t i = 0; i < count; ++i) all[i] = i;

  if (cache_ && enabled_) {
    std::vector<size_t> misses;
    const auto read_start = SteadyClock::now();
    for (size_t i = 0; i < count; ++i) {
      if (!cache_->get_f32(key_of(indices[i], frozen_end, draws[i]), out + i * entry_elements_, entry_elements_)) {
        misses.push_back(i);
      }
    }
    const double read_seconds = seconds_since(read_start);
    const auto hits = static_cast<int64_t>(count - misses.size());
    if (hits > 0) record(read_, read_seconds, hits);
    served_from_cache_ += hits;
    if (!misses.empty()) {
      const double seconds = compute_rows(model, data, indices, draws, misses, frozen_end, text_ptr, out, true);
      record(forward_, seconds, static_cast<int64_t>(misses.size()));
      computed_samples_ += misses.size();
    } else if (measuring && forward_.samples == 0) {
      // Probe: the whole batch hit, so time once what recomputing would cost.
      const double seconds = compute_rows(model, data, indices, draws, all, frozen_end, text_ptr, nullptr, false);
      record(forward_, seconds, static_cast<int64_t>(count));
    }
  } else {
    const double seconds = compute_rows(model, data, indices, draws, all, frozen_end, text_ptr, out, false);
    record(forward_, seconds, static_cast<int64_t>(count));
    computed_samples_ += count;
    if (measuring && read_.samples == 0) {
      // Probe: store this batch (valid entries: drawn with the view ids) and
      // time reading it back.
      for (size_t i = 0; i < count; ++i) {
        cache_->put_f32(key_of(indices[i], frozen_end, draws[i]), out + i * entry_elements_, entry_elements_);
      }
      std::vector<float> scratch(entry_elements_);
      int64_t read_back = 0;
      const auto read_start = SteadyClock::now();
      for (size_t i = 0; i < count; ++i) {
        if (cache_->get_f32(key_of(indices[i], frozen_end, draws[i]), scratch.data(), entry_elements_)) ++read_back;
      }
      if (read_back > 0) record(read_, seconds_since(read_start), read_back);
    }
  }
  ++interval_calls_;
  interval_samples_ += static_cast<int64_t>(count);

  const torch::Device device = model_device(model);
  Activations result;
  result.hidden = host.to(device);
  if (text) result.attention_mask = text_inputs.attention_mask.to(device);
  return result;
}

size_t FrozenPrefixCache::advance(TransformerModel& model, const Dataset& data, size_t old_end, size_t new_end,
                                  CacheShard shard, int64_t batch_size) {
  check_depth(old_end, "FrozenPrefixCache::advance (old depth)");
  check_depth(new_end, "FrozenPrefixCache::advance (new depth)");
  if (new_end <= old_end) {
    throw ModelError("FrozenPrefixCache::advance: the new frozen depth " + std::to_string(new_end) +
                     " is not deeper than the old one " + std::to_string(old_end));
  }
  if (new_end >= model.num_sublayers()) {
    throw ModelError("FrozenPrefixCache::advance: frozen depth " + std::to_string(new_end) +
                     " leaves no trainable sub-layer of the model's " + std::to_string(model.num_sublayers()));
  }
  if (batch_size < 1) throw ModelError("FrozenPrefixCache::advance: batch_size must be positive (got " + std::to_string(batch_size) + ")");
  if (shard.count < 1 || shard.index >= shard.count) {
    throw ModelError("FrozenPrefixCache::advance: shard " + std::to_string(shard.index) + " of " +
                     std::to_string(shard.count) + " does not exist (the index must be below a positive count)");
  }
  if (!cache_) return 0;

  const auto start = SteadyClock::now();
  const torch::Device device = model_device(model);
  const bool text = data.modality() == Modality::kText;
  // The shard is a property of the key, so the other shards erasing their
  // own keys meanwhile never moves a key from one shard to another.
  std::vector<CacheKey> keys = cache_->keys_at_depth(static_cast<int>(old_end));
  keys.erase(std::remove_if(keys.begin(), keys.end(),
                            [&](const CacheKey& key) { return key.sample % shard.count != shard.index; }),
             keys.end());
  size_t advanced = 0;
  size_t lost = 0;
  for (size_t begin = 0; begin < keys.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(keys.size(), begin + static_cast<size_t>(batch_size));
    std::vector<int64_t> sizes{static_cast<int64_t>(end - begin)};
    sizes.insert(sizes.end(), entry_shape_.begin(), entry_shape_.end());
    torch::Tensor host = torch::empty(sizes, torch::kFloat);
    float* buffer = host.data_ptr<float>();
    std::vector<CacheKey> read;
    for (size_t k = begin; k < end; ++k) {
      if (cache_->get_f32(keys[k], buffer + read.size() * entry_elements_, entry_elements_)) {
        // Free the slot now so the advanced value never evicts a pending one.
        cache_->erase(keys[k]);
        read.push_back(keys[k]);
      } else {
        ++lost;  // evicted or erased by another process meanwhile
      }
    }
    if (read.empty()) continue;
    Activations in;
    in.hidden = host.narrow(0, 0, static_cast<int64_t>(read.size())).to(device);
    if (text) {
      std::vector<int64_t> samples;
      for (const CacheKey& key : read) samples.push_back(static_cast<int64_t>(key.sample));
      in.attention_mask = data.get_batch(samples, 0).attention_mask.to(device);
    }
    Activations result;
    {
      torch::NoGradGuard no_grad;
      result = model.forward_range(in, old_end, new_end);
    }
    const torch::Tensor out =
        host_rows(result.hidden, entry_shape_, static_cast<int64_t>(read.size()), "FrozenPrefixCache::advance");
    const float* values = out.data_ptr<float>();
    for (size_t r = 0; r < read.size(); ++r) {
      CacheKey key = read[r];
      key.depth = static_cast<int>(new_end);
      cache_->put_f32(key, values + r * entry_elements_, entry_elements_);
    }
    advanced += read.size();
  }
  if (shard.count == 1) {
    const size_t dropped = cache_->drop_depth(static_cast<int>(old_end));
    spdlog::info("[autocache] advanced {} entries from frozen depth {} to {} in {:.3f} s ({} gone before they were "
                 "read, {} left at depth {} dropped)",
                 advanced, old_end, new_end, seconds_since(start), lost, dropped, old_end);
  } else {
    spdlog::info("[autocache] shard {} of {}: advanced {} entries from frozen depth {} to {} in {:.3f} s ({} gone "
                 "before they were read)",
                 shard.index, shard.count, advanced, old_end, new_end, seconds_since(start), lost);
  }
  return advanced;
}

size_t FrozenPrefixCache::drop_depth(size_t depth) {
  check_depth(depth, "FrozenPrefixCache::drop_depth");
  if (!cache_) return 0;
  const size_t dropped = cache_->drop_depth(static_cast<int>(depth));
  spdlog::info("[autocache] dropped {} entries left at frozen depth {}", dropped, depth);
  return dropped;
}

size_t FrozenPrefixCache::entries_at(size_t depth) {
  check_depth(depth, "FrozenPrefixCache::entries_at");
  return cache_ ? cache_->keys_at_depth(static_cast<int>(depth)).size() : 0;
}

CacheMeasurement FrozenPrefixCache::measurement(size_t frozen_end) const {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Per-batch timings at `depth` from the open interval and the last closed
  // one (either may supply each figure); NaN where neither has it.
  auto timed_at = [&](size_t depth) {
    const bool current = interval_depth_ == depth && interval_samples_ > 0;
    const bool previous = last_depth_ == depth && last_batch_ > 0.0;
    const double batch = current    ? static_cast<double>(interval_samples_) / static_cast<double>(interval_calls_)
                         : previous ? last_batch_
                                    : nan;
    auto per_sample = [&](const Timing& timing, bool has_last, double last) {
      if (interval_depth_ == depth && timing.samples > 0) return timing.seconds / static_cast<double>(timing.samples);
      if (last_depth_ == depth && has_last) return last;
      return nan;
    };
    CacheMeasurement m;
    m.depth = static_cast<int>(frozen_end);
    m.frozen_forward_seconds = per_sample(forward_, last_has_forward_, last_forward_per_sample_) * batch;
    m.cache_read_seconds = per_sample(read_, last_has_read_, last_read_per_sample_) * batch;
    if (depth != frozen_end) m.timed_depth = static_cast<int>(depth);
    return m;
  };
  const CacheMeasurement here = timed_at(frozen_end);
  if (std::isfinite(here.frozen_forward_seconds) && std::isfinite(here.cache_read_seconds)) return here;
  // Not timed here yet (right after a freeze change): the deepest shallower
  // depth that was, as a lower bound of the forward time (cache_policy.h).
  size_t shallower = 0;
  if (interval_depth_ < frozen_end && interval_samples_ > 0) shallower = interval_depth_;
  if (last_depth_ < frozen_end && last_batch_ > 0.0) shallower = std::max(shallower, last_depth_);
  if (shallower == 0) return here;
  const CacheMeasurement stand_in = timed_at(shallower);
  if (std::isfinite(stand_in.frozen_forward_seconds) && std::isfinite(stand_in.cache_read_seconds)) return stand_in;
  return here;
}

CacheDecision FrozenPrefixCache::update_decision(size_t frozen_end) { return update_decision(measurement(frozen_end)); }

CacheDecision FrozenPrefixCache::update_decision(const CacheMeasurement& measured) {
  CacheDecision decision;
  if (!cache_) {
    decision.enabled = false;
    decision.reason = "at frozen depth " + std::to_string(measured.depth) + ": autocache=" +
                      cache_mode_name(policy_.mode) + (policy_.mode == CacheMode::kOff ? "" : ", but no usable cache");
  } else {
    decision = decide_cache(policy_, enabled_, measured);
    // "on" serves from the cache whenever a prefix is frozen; frozen_output
    // is only called then, so the depth-0 "nothing frozen" answer is moot.
    if (policy_.mode == CacheMode::kOn) decision.enabled = true;
  }
  enabled_ = decision.enabled;
  spdlog::info("[autocache] {}", decision.reason);
  start_interval(static_cast<size_t>(std::max(0, measured.depth)));
  return decision;
}

CacheStats FrozenPrefixCache::stats() const {
  if (cache_) return cache_->stats();
  CacheStats stats;
  stats.misses = computed_samples_;
  return stats;
}

}  // namespace pipet
