// FrozenPrefixCache: the frozen prefix's output served from AutoCache equals
// recomputing it (bit for bit in f32), advancing equals recomputing at the
// deeper depth (split over shards or not), bf16 rounds exactly as torch does, objects of one job share
// entries, a cache that cannot store still serves correct values, and the
// auto policy follows the measured (or injected) timings.
#include "runtime/engine/frozen_cache.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/dataset.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace pipet {
namespace {

struct Fixture {
  std::shared_ptr<TransformerModel> model;
  std::shared_ptr<Dataset> data;
  std::vector<int64_t> entry_shape;
};

Fixture make_fixture() {
  torch::manual_seed(11);
  ModelConfig model_config;
  model_config.preset = "vit-tiny";
  model_config.num_layers = 2;
  Fixture f;
  const ModelSpec spec = resolve_model_spec(model_config, 10);
  f.model = std::make_shared<TransformerModel>(spec);
  f.model->eval();
  DataConfig data_config;
  data_config.dataset = "synthetic-image";
  data_config.train_samples = 16;
  data_config.eval_samples = 4;
  data_config.augment = false;
  DataShape shape;
  shape.image_size = spec.image_size;
  shape.num_channels = spec.num_channels;
  f.data = make_datasets(data_config, shape, 7).train;
  f.entry_shape = frozen_entry_shape(spec, 0);
  return f;
}

// Sub-layers [0, depth) run directly on the samples' inputs.
torch::Tensor direct(const Fixture& f, const std::vector<int64_t>& indices, size_t depth) {
  torch::NoGradGuard no_grad;
  Activations in;
  in.hidden = f.data->get_batch(indices, 0).pixel_values;
  return f.model->forward_range(in, 0, depth).hidden;
}

std::string job_id(const std::string& name) { return "fct-" + std::to_string(::getpid()) + "-" + name; }

bool segment_exists(const std::string& job) {
  return std::filesystem::exists("/dev/shm/pipet-cache-" + job);
}

AutoCacheConfig config(const std::string& mode, const std::string& dtype, double shm_mb) {
  AutoCacheConfig c;
  c.mode = mode;
  c.dtype = dtype;
  c.shm_mb = shm_mb;
  return c;
}

const std::vector<int64_t> kIndices{3, 1, 4, 5, 9, 2};

TEST(FrozenPrefixCache, F32MissesHitsAndAdvanceAreBitExact) {
  const Fixture f = make_fixture();
  ASSERT_EQ(f.model->num_sublayers(), 6u);  // embedding, 2 x (attention, MLP), head
  EXPECT_EQ(f.entry_shape, (std::vector<int64_t>{17, 64}));
  const std::string job = job_id("f32");
  {
    FrozenPrefixCache cache(config("on", "f32", 1.0), job, f.entry_shape, 5, 42);
    EXPECT_TRUE(cache.enabled());
    EXPECT_TRUE(segment_exists(job));

    const torch::Tensor first = cache.frozen_output(*f.model, *f.data, kIndices, 0, 1).hidden;
    EXPECT_TRUE(torch::equal(first, direct(f, kIndices, 1)));
    CacheStats stats = cache.stats();
    EXPECT_EQ(stats.misses, 6u);
    EXPECT_EQ(stats.hits, 0u);
    EXPECT_EQ(stats.puts, 6u);

    const torch::Tensor second = cache.frozen_output(*f.model, *f.data, kIndices, 3, 1).hidden;
    EXPECT_TRUE(torch::equal(second, direct(f, kIndices, 1)));
    stats = cache.stats();
    EXPECT_EQ(stats.hits, 6u);
    EXPECT_EQ(stats.misses, 6u);
    EXPECT_EQ(stats.bytes_per_sample.at(1), 17u * 64u * 4u);

    // f grows from 1 to 3: entries are pushed through sub-layers 1 and 2.
    EXPECT_EQ(cache.advance(*f.model, *f.data, 1, 3), 6u);
    stats = cache.stats();
    EXPECT_EQ(stats.entries_per_depth[1], 0u);
    EXPECT_EQ(stats.entries_per_depth[3], 6u);
    const torch::Tensor deep = cache.frozen_output(*f.model, *f.data, kIndices, 1, 3).hidden;
    EXPECT_EQ(cache.stats().hits, 18u);  // 6 more read by advance
    // advance() pushed the entries as one batch in sample order: bit-exact
    // against computing depth 3 from the inputs in that batch. Another batch
    // order changes CPU BLAS results by ~1 ulp from the attention on.
    const std::vector<int64_t> sorted{1, 2, 3, 4, 5, 9};
    const torch::Tensor to_request_order = torch::tensor(std::vector<int64_t>{2, 0, 3, 4, 5, 1});
    EXPECT_TRUE(torch::equal(deep, direct(f, sorted, 3).index_select(0, to_request_order)));
    EXPECT_TRUE(torch::allclose(deep, direct(f, kIndices, 3), 0.0, 1e-6));
    EXPECT_FALSE(torch::equal(deep, direct(f, kIndices, 1)));

    // Caller bugs are ModelErrors naming the depth.
    const std::string message = testing::error_message<ModelError>(
        [&] { cache.frozen_output(*f.model, *f.data, kIndices, 0, 6); });
    EXPECT_NE(message.find("frozen depth 6"), std::string::npos) << message;
    testing::error_message<ModelError>([&] { cache.advance(*f.model, *f.data, 3, 3); });
  }
  EXPECT_FALSE(segment_exists(job));
}

TEST(FrozenPrefixCache, ShardedAdvanceTakesEachKeyOnceAndEqualsUnsharded) {
  const Fixture f = make_fixture();
  const std::string node_job = job_id("shards");
  const std::string whole_job = job_id("whole");
  {
    // Two processes of one node (one segment), and a node advancing alone.
    FrozenPrefixCache first(config("on", "f32", 1.0), node_job, f.entry_shape, 5, 42);
    FrozenPrefixCache second(config("on", "f32", 1.0), node_job, f.entry_shape, 5, 42);
    FrozenPrefixCache whole(config("on", "f32", 1.0), whole_job, f.entry_shape, 5, 42);
    first.frozen_output(*f.model, *f.data, kIndices, 0, 1);
    whole.frozen_output(*f.model, *f.data, kIndices, 0, 1);

    // kIndices {3, 1, 4, 5, 9, 2}: shard 0 of 2 owns samples 2 and 4, shard
    // 1 owns 1, 3, 5 and 9. Batches of one sample, so no value depends on
    // which other samples shared its batch: the comparison is bit for bit.
    EXPECT_EQ(second.advance(*f.model, *f.data, 1, 3, CacheShard{1, 2}, 1), 4u);
    CacheStats stats = first.stats();
    EXPECT_EQ(stats.entries_per_depth[1], 2u) << "shard 1 took or dropped shard 0's entries";
    EXPECT_EQ(stats.entries_per_depth[3], 4u);
    // Sample 7 arrives at the old depth after shard 1 is done: it belongs to
    // shard 1, so shard 0 leaves it, and only drop_depth removes it.
    first.frozen_output(*f.model, *f.data, {7}, 0, 1);
    EXPECT_EQ(first.advance(*f.model, *f.data, 1, 3, CacheShard{0, 2}, 1), 2u);
    stats = first.stats();
    EXPECT_EQ(stats.entries_per_depth[1], 1u);
    EXPECT_EQ(stats.entries_per_depth[3], 6u);
    EXPECT_EQ(first.drop_depth(1), 1u);
    EXPECT_EQ(first.stats().entries_per_depth[1], 0u);
    EXPECT_EQ(first.drop_depth(1), 0u);

    // One shard (the default) drops the leftovers itself.
    EXPECT_EQ(whole.advance(*f.model, *f.data, 1, 3, CacheShard{}, 1), 6u);
    EXPECT_EQ(whole.stats().entries_per_depth[1], 0u);
    EXPECT_EQ(whole.stats().entries_per_depth[3], 6u);

    const uint64_t misses_before = first.stats().misses;
    const torch::Tensor sharded = first.frozen_output(*f.model, *f.data, kIndices, 1, 3).hidden;
    const torch::Tensor unsharded = whole.frozen_output(*f.model, *f.data, kIndices, 1, 3).hidden;
    EXPECT_EQ(first.stats().misses, misses_before) << "every advanced entry is served from the cache";
    EXPECT_TRUE(torch::equal(sharded, unsharded));
    for (size_t i = 0; i < kIndices.size(); ++i) {
      EXPECT_TRUE(torch::equal(sharded[static_cast<int64_t>(i)], direct(f, {kIndices[i]}, 3)[0]))
          << "sample " << kIndices[i];
    }
    EXPECT_FALSE(torch::equal(sharded, direct(f, kIndices, 1)));

    for (const CacheShard bad : {CacheShard{2, 2}, CacheShard{0, 0}}) {
      const std::string message =
          testing::error_message<ModelError>([&] { first.advance(*f.model, *f.data, 3, 4, bad); });
      EXPECT_NE(message.find("shard " + std::to_string(bad.index) + " of " + std::to_string(bad.count)),
                std::string::npos)
          << message;
    }
    EXPECT_NE(testing::error_message<ModelError>([&] { first.drop_depth(6); }).find("frozen depth 6"),
              std::string::npos);
  }
  EXPECT_FALSE(segment_exists(node_job));
  EXPECT_FALSE(segment_exists(whole_job));
}

TEST(FrozenPrefixCache, Bf16RoundsLikeTorchAndOneJobSharesEntries) {
  const Fixture f = make_fixture();
  const std::string job = job_id("bf16");
  {
    FrozenPrefixCache writer(config("on", "bf16", 1.0), job, f.entry_shape, 5, 42);
    FrozenPrefixCache reader(config("on", "bf16", 1.0), job, f.entry_shape, 5, 42);
    const torch::Tensor exact = direct(f, kIndices, 2);

    const torch::Tensor written = writer.frozen_output(*f.model, *f.data, kIndices, 0, 2).hidden;
    EXPECT_EQ(writer.stats().misses, 6u);
    // A miss serves the stored bf16 value: torch's round-to-nearest-even.
    EXPECT_TRUE(torch::equal(written, exact.to(torch::kBFloat16).to(torch::kFloat)));
    EXPECT_FALSE(torch::equal(written, exact));
    const double worst = ((written - exact).abs() / exact.abs().clamp_min(1e-30)).max().item<double>();
    EXPECT_LE(worst, std::ldexp(1.0, -8));  // bf16 keeps 8 significant bits

    // The second object of the job hits on every entry the first stored.
    const torch::Tensor read = reader.frozen_output(*f.model, *f.data, kIndices, 4, 2).hidden;
    const CacheStats stats = reader.stats();
    EXPECT_EQ(stats.hits, 6u);
    EXPECT_EQ(stats.misses, 0u);
    EXPECT_EQ(stats.bytes_per_sample.at(2), 17u * 64u * 2u);
    EXPECT_TRUE(torch::equal(read, written));
  }
  EXPECT_FALSE(segment_exists(job));
}

TEST(FrozenPrefixCache, CacheThatCannotStoreStillServesCorrectValues) {
  const Fixture f = make_fixture();
  const torch::Tensor expected = direct(f, kIndices, 1);

  // 1 KiB of shared memory holds no 4352-byte entry: no segment, all misses.
  const std::string tiny_job = job_id("tiny");
  {
    FrozenPrefixCache tiny(config("on", "f32", 0.001), tiny_job, f.entry_shape, 5, 42);
    EXPECT_FALSE(tiny.enabled());
    EXPECT_FALSE(segment_exists(tiny_job));
    for (int epoch = 0; epoch < 2; ++epoch) {
      EXPECT_TRUE(torch::equal(tiny.frozen_output(*f.model, *f.data, kIndices, epoch, 1).hidden, expected));
    }
    EXPECT_EQ(tiny.stats().misses, 12u);
    EXPECT_EQ(tiny.stats().hits, 0u);
    EXPECT_EQ(tiny.advance(*f.model, *f.data, 1, 2), 0u);
    EXPECT_FALSE(tiny.update_decision(1).enabled);
  }

  // Two slots, no disk tier, six samples: most puts evict, values stay right.
  const std::string small_job = job_id("small");
  {
    FrozenPrefixCache small(config("on", "f32", 0.01), small_job, f.entry_shape, 5, 42);
    EXPECT_TRUE(small.enabled());
    for (int epoch = 0; epoch < 3; ++epoch) {
      EXPECT_TRUE(torch::equal(small.frozen_output(*f.model, *f.data, kIndices, epoch, 1).hidden, expected));
    }
    const CacheStats stats = small.stats();
    EXPECT_EQ(stats.shm_slots, 2u);
    EXPECT_LE(stats.shm_entries, 2u);
    EXPECT_EQ(stats.hits + stats.misses, 18u);
    EXPECT_GE(stats.misses, 14u);
  }
  EXPECT_FALSE(segment_exists(small_job));

  // Mode off: no segment, the prefix computed with the epoch itself.
  const std::string off_job = job_id("off");
  FrozenPrefixCache off(config("off", "bf16", 1.0), off_job, f.entry_shape, 5, 42);
  EXPECT_FALSE(segment_exists(off_job));
  EXPECT_TRUE(torch::equal(off.frozen_output(*f.model, *f.data, kIndices, 2, 1).hidden, expected));
  EXPECT_FALSE(off.update_decision(1).enabled);

  // Bad config values name their key.
  AutoCacheConfig bad = config("on", "f32", 1.0);
  bad.views = 0;
  EXPECT_NE(testing::error_message<ConfigError>([&] { FrozenPrefixCache(bad, job_id("bad"), f.entry_shape, 5, 1); })
                .find("autocache.views"),
            std::string::npos);
  bad = config("on", "f32", 1.0);
  bad.disk_mb = 4;
  EXPECT_NE(testing::error_message<ConfigError>([&] { FrozenPrefixCache(bad, job_id("bad"), f.entry_shape, 5, 1); })
                .find("autocache.disk_dir"),
            std::string::npos);
}

TEST(FrozenPrefixCache, AutoModeFollowsMeasuredTimingsWithHysteresis) {
  const Fixture f = make_fixture();
  const std::string job = job_id("auto");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  {
    FrozenPrefixCache cache(config("auto", "f32", 1.0), job, f.entry_shape, 5, 42);
    EXPECT_FALSE(cache.enabled());
    EXPECT_TRUE(std::isnan(cache.measurement(1).frozen_forward_seconds));

    // Disabled: computes the batch, probes a put + read of it.
    const torch::Tensor computed = cache.frozen_output(*f.model, *f.data, kIndices, 0, 1).hidden;
    EXPECT_TRUE(torch::equal(computed, direct(f, kIndices, 1)));
    const CacheMeasurement measured = cache.measurement(1);
    EXPECT_EQ(measured.depth, 1);
    EXPECT_GT(measured.frozen_forward_seconds, 0.0);
    EXPECT_GT(measured.cache_read_seconds, 0.0);
    EXPECT_EQ(cache.stats().puts, 6u);

    // Injected timings: enable below forward x 0.9, disable above x 1.1.
    EXPECT_TRUE(cache.update_decision(CacheMeasurement{1, 1.0, 0.5}).enabled);
    EXPECT_TRUE(cache.update_decision(CacheMeasurement{1, 1.0, 1.05}).enabled);
    EXPECT_FALSE(cache.update_decision(CacheMeasurement{1, 1.0, 1.2}).enabled);
    EXPECT_FALSE(cache.update_decision(CacheMeasurement{1, 1.0, 0.95}).enabled);
    EXPECT_FALSE(cache.update_decision(CacheMeasurement{1, 1.0, nan}).enabled);
    EXPECT_TRUE(cache.update_decision(CacheMeasurement{1, 1.0, 0.1}).enabled);
    EXPECT_TRUE(cache.update_decision(CacheMeasurement{1, 1.0, nan}).enabled);
    EXPECT_TRUE(cache.enabled());

    // Enabled: the probe's entries hit, and an all-hit batch is recomputed
    // once to time the forward pass.
    const torch::Tensor served = cache.frozen_output(*f.model, *f.data, kIndices, 1, 1).hidden;
    EXPECT_TRUE(torch::equal(served, computed));
    EXPECT_EQ(cache.stats().hits, 12u);  // 6 read back by the probe, 6 served
    EXPECT_EQ(cache.stats().misses, 0u);
    const CacheMeasurement both = cache.measurement(1);
    EXPECT_GT(both.frozen_forward_seconds, 0.0);
    EXPECT_GT(both.cache_read_seconds, 0.0);
    const CacheDecision real = cache.update_decision(1);
    EXPECT_NE(real.reason.find("frozen forward"), std::string::npos) << real.reason;
    // A depth never served yet (right after a freeze change) is decided from
    // the deepest shallower timings, as a lower bound of its forward time.
    const CacheMeasurement stand_in = cache.measurement(4);
    EXPECT_EQ(stand_in.depth, 4);
    EXPECT_EQ(stand_in.timed_depth, 1);
    EXPECT_GT(stand_in.frozen_forward_seconds, 0.0);
    const CacheDecision deeper = cache.update_decision(4);
    EXPECT_NE(deeper.reason.find("timed at frozen depth 1"), std::string::npos) << deeper.reason;
    // Served outputs: 6 computed while disabled, 6 read once enabled; the
    // probes (a put + read back, a recompute) count in neither.
    EXPECT_EQ(cache.served().computed, 6);
    EXPECT_EQ(cache.served().from_cache, 6);
  }
  EXPECT_FALSE(segment_exists(job));
}

}  // namespace
}  // namespace pipet
