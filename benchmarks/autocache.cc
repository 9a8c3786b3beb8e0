// bench_autocache: activation-cache throughput for one entry size (default
// 65 x 384: ViT-small width, 64 patches + CLS; --tokens 197 is ViT-S/16 at
// 224 px), from the shared-memory tier and from the disk tier.
//
// One timed iteration = --entries operations of one kind, one row per
// (tier, operation, dtype):
//   put  f32 -> cache: put_f32 (a copy for f32, round-to-nearest-even
//        conversion for bf16/f16) into an emptied cache;
//   get  cache -> f32: get_f32 of every entry (copy or widening).
// The shm rows use a cache whose shm tier holds every entry. The disk rows
// use a shm tier of one entry, so every put moves the previous entry to the
// disk tier (spill copy included), and every get reads a disk slot through
// its mapping (page cache: warm after the put; cold reads are the
// device's speed, not the cache's).
// entries/s = entries / median iteration seconds; GB/s = entries x stored
// entry bytes / median seconds (10^9 bytes); f32 GB/s uses the f32 size.
// Correctness runs alongside: after the timed gets every value read must
// equal the written one (f32) or its rounding (bf16/f16), else exit 20.
#include "autocache/activation_cache.h"
#include "benchmarks/harness.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <random>

namespace pipet::bench {
namespace {

constexpr int kExitCheckFailed = 20;

struct AutocacheBenchOptions {
  HarnessOptions harness;
  int64_t tokens = 65;
  int64_t hidden = 384;
  int entries = 1024;
  std::vector<std::string> dtypes = {"f32", "bf16"};
  std::vector<std::string> tiers = {"shm", "disk"};
  std::string disk_dir;  // empty: a scratch directory
  std::string log_level = "warn";
};

struct Row {
  std::string tier, op, dtype;
  TimingStats timing;
  double entries_per_second = 0, gb_per_second = 0, f32_gb_per_second = 0;
};

// Times `iterations` runs of `body` after `warmup` runs; `reset` runs
// untimed before each.
TimingStats time_with_reset(const HarnessOptions& h, const std::function<void()>& reset,
                            const std::function<void()>& body) {
  for (int i = 0; i < h.warmup; ++i) {
    reset();
    body();
  }
  std::vector<double> samples;
  for (int i = 0; i < h.iterations; ++i) {
    reset();
    const double start = now_ms();
    body();
    samples.push_back(now_ms() - start);
  }
  return summarize(samples);
}

int run(const AutocacheBenchOptions& o) {
  validate_harness_options(o.harness);
  if (o.tokens <= 0 || o.hidden <= 0) throw ConfigError("--tokens and --hidden must be positive");
  if (o.entries < 2) throw ConfigError("--entries must be at least 2");
  init_logging(0, o.log_level);
  std::optional<ScratchDir> scratch;
  std::string disk_dir = o.disk_dir;
  if (disk_dir.empty()) {
    scratch.emplace("pipet-bench-autocache");
    disk_dir = scratch->path();
  }
  const size_t count = static_cast<size_t>(o.tokens * o.hidden);
  // Distinct values per entry: entry e element i.
  std::vector<std::vector<float>> sources(o.entries < 64 ? o.entries : 64, std::vector<float>(count));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& s : sources) {
    for (float& v : s) v = normal(rng);
  }
  const nlohmann::json environment = environment_json();
  std::cout << "# bench_autocache: " << o.entries << " entries of " << o.tokens << " x " << o.hidden << "\n# "
            << environment_line(environment) << "\n";

  std::vector<Row> rows;
  bool check_ok = true;
  std::vector<float> out(count);
  for (const std::string& tier : o.tiers) {
    if (tier != "shm" && tier != "disk") throw ConfigError("--tiers: unknown tier '" + tier + "' (shm, disk)");
    for (const std::string& dtype_name : o.dtypes) {
      const CacheDtype dtype = parse_cache_dtype(dtype_name, "--dtypes");
      ActivationCacheOptions options;
      options.job_id = "bench-" + std::to_string(::getpid()) + "-" + tier + "-" + dtype_name;
      options.dtype = dtype;
      options.depth_shapes = {{1, {o.tokens, o.hidden}}};
      const uint64_t entry_bytes = count * cache_dtype_size(dtype);
      const uint64_t slot = (entry_bytes + 63) / 64 * 64;
      if (tier == "shm") {
        options.shm_capacity_bytes = slot * static_cast<uint64_t>(o.entries);
      } else {
        options.shm_capacity_bytes = slot;
        options.disk_dir = disk_dir;
        options.disk_capacity_bytes = slot * static_cast<uint64_t>(o.entries);
      }
      ActivationCache cache(options);
      if (tier == "disk" && cache.stats().disk_slots == 0) throw IoError("the disk tier could not be created in " + disk_dir);
      const int n = o.entries;
      auto key = [](int e) { return CacheKey{static_cast<uint64_t>(e), 1, 0}; };
      auto fill = [&] {
        for (int e = 0; e < n; ++e) cache.put_f32(key(e), sources[e % sources.size()].data(), count);
      };
      Row put_row{tier, "put", dtype_name, {}};
      put_row.timing = time_with_reset(o.harness, [&] { cache.drop_depth(1); }, fill);
      cache.drop_depth(1);
      fill();
      // Disk rows: entry n-1 stays in shm; time the n-1 disk entries.
      const int first = 0;
      const int last = tier == "disk" ? n - 1 : n;
      Row get_row{tier, "get", dtype_name, {}};
      uint64_t misses = 0;
      get_row.timing = time_with_reset(o.harness, [] {}, [&] {
        for (int e = first; e < last; ++e) misses += cache.get_f32(key(e), out.data(), count) ? 0 : 1;
      });
      if (misses > 0) {
        std::cerr << "check FAILED: " << misses << " misses on " << tier << " " << dtype_name << "\n";
        check_ok = false;
      }
      if (tier == "disk" && cache.locate(key(0)) != CacheTier::kDisk) {
        std::cerr << "check FAILED: entry 0 is not on the disk tier\n";
        check_ok = false;
      }
      for (int e = first; e < last && check_ok; e += std::max(1, (last - first) / 16)) {
        const std::vector<float>& source = sources[e % sources.size()];
        std::vector<uint8_t> stored(entry_bytes);
        convert_from_f32(source.data(), count, dtype, stored.data());
        std::vector<float> expected(count);
        convert_to_f32(stored.data(), count, dtype, expected.data());
        if (!cache.get_f32(key(e), out.data(), count) || out != expected) {
          std::cerr << "check FAILED: entry " << e << " read back wrong (" << tier << ", " << dtype_name << ")\n";
          check_ok = false;
        }
      }
      for (Row* row : {&put_row, &get_row}) {
        const int ops = row == &put_row ? n : last - first;
        const double seconds = row->timing.median_ms / 1e3;
        row->entries_per_second = ops / seconds;
        row->gb_per_second = ops * static_cast<double>(entry_bytes) / seconds / 1e9;
        row->f32_gb_per_second = ops * static_cast<double>(count * 4) / seconds / 1e9;
        rows.push_back(*row);
      }
    }
  }

  ResultTable table({"tier", "op", "dtype", "entry KiB", "median ms", "entries/s", "GB/s", "f32 GB/s"});
  nlohmann::json results = nlohmann::json::array();
  for (const Row& r : rows) {
    const double kib = static_cast<double>(count * cache_dtype_size(parse_cache_dtype(r.dtype))) / 1024.0;
    table.add_row({r.tier, r.op, r.dtype, format_fixed(kib, 1), format_fixed(r.timing.median_ms, 2),
                   format_fixed(r.entries_per_second, 0), format_fixed(r.gb_per_second, 2),
                   format_fixed(r.f32_gb_per_second, 2)});
    results.push_back({{"tier", r.tier}, {"op", r.op}, {"dtype", r.dtype}, {"entry_bytes", kib * 1024},
                       {"entries_per_second", r.entries_per_second}, {"gb_per_second", r.gb_per_second},
                       {"f32_gb_per_second", r.f32_gb_per_second}, {"timing", r.timing.to_json()}});
  }
  table.print(std::cout);
  std::cout << "check: " << (check_ok ? "ok" : "FAILED") << "\n";
  if (!o.harness.json_path.empty()) {
    nlohmann::json document = {{"benchmark", "autocache"}, {"environment", environment},
                               {"entries", o.entries}, {"tokens", o.tokens}, {"hidden", o.hidden},
                               {"check", check_ok ? "ok" : "failed"}, {"results", std::move(results)}};
    write_json_results(o.harness.json_path, document);
  }
  return check_ok ? 0 : kExitCheckFailed;
}

}  // namespace
}  // namespace pipet::bench

int main(int argc, char** argv) {
  pipet::bench::AutocacheBenchOptions options;
  CLI::App app{"Activation cache put/get throughput from shared memory and disk (see benchmarks/README.md)",
               "bench_autocache"};
  pipet::bench::add_harness_flags(app, options.harness);
  app.add_option("--tokens", options.tokens, "Tokens per entry (65 = ViT-small/28 px patches at 224)")->capture_default_str();
  app.add_option("--hidden", options.hidden, "Hidden size per token")->capture_default_str();
  app.add_option("--entries", options.entries, "Entries per timed iteration")->capture_default_str();
  app.add_option("--dtypes", options.dtypes, "Cache dtypes, comma-separated (f32, bf16, f16)")->delimiter(',')->capture_default_str();
  app.add_option("--tiers", options.tiers, "Tiers, comma-separated (shm, disk)")->delimiter(',')->capture_default_str();
  app.add_option("--disk-dir", options.disk_dir, "Disk tier directory (default: a temp dir, removed)");
  app.add_option("--log-level", options.log_level, "debug | info | warn | error")->capture_default_str();
  return pipet::bench::run_benchmark(app, argc, argv, [&] { return pipet::bench::run(options); });
}
