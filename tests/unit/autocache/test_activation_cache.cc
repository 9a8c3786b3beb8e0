// The activation cache in one process: round trips per dtype, overflow to
// disk and CLOCK eviction order, degradation to misses, advancing and
// drop_depth, segment removal, corrupt headers and bad options.
#include "autocache/activation_cache.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/autocache/cache_test_util.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace pipet {
namespace {

using testing::cache_options;
using testing::entry_values;
using testing::error_message;
using testing::LogCapture;
using testing::unique_job;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(ActivationCache, RoundTripPerDtypeAndStatistics) {
  const std::vector<int64_t> shape = {65, 384};  // ViT-small tokens x hidden
  for (CacheDtype dtype : {CacheDtype::kF32, CacheDtype::kF16, CacheDtype::kBF16}) {
    ActivationCache cache(cache_options(unique_job("roundtrip"), shape, 8, 0, "", {2, 5}, dtype));
    const size_t count = 65 * 384;
    EXPECT_EQ(cache.entry_elements(2), count);
    EXPECT_EQ(cache.entry_bytes(5), count * cache_dtype_size(dtype));
    EXPECT_EQ(cache.entry_bytes(3), 0u);
    EXPECT_EQ(cache.shape(2), shape);
    for (uint64_t sample = 0; sample < 3; ++sample) {
      const CacheKey key{sample, 2, 0};
      EXPECT_TRUE(cache.put_f32(key, entry_values(key, count).data(), count));
    }
    const CacheKey key{1, 2, 0};
    const std::vector<float> values = entry_values(key, count);
    EXPECT_FALSE(cache.put_f32(key, values.data(), count));  // already present
    std::vector<float> back(count);
    ASSERT_TRUE(cache.get_f32(key, back.data(), count));
    std::vector<uint8_t> stored(cache.entry_bytes(2));
    convert_from_f32(values.data(), count, dtype, stored.data());
    std::vector<float> expected(count);
    convert_to_f32(stored.data(), count, dtype, expected.data());
    EXPECT_EQ(0, std::memcmp(back.data(), expected.data(), count * 4)) << cache_dtype_name(dtype);
    if (dtype == CacheDtype::kF32) {
      EXPECT_EQ(0, std::memcmp(back.data(), values.data(), count * 4));  // bit-exact
    }
    std::vector<uint8_t> raw(cache.entry_bytes(2));
    ASSERT_TRUE(cache.get(key, raw.data(), raw.size()));
    EXPECT_EQ(raw, stored);
    // A raw put is served as stored.
    const CacheKey other{9, 5, 3};
    ASSERT_TRUE(cache.put(other, stored.data(), stored.size()));
    std::vector<uint8_t> raw_back(stored.size());
    ASSERT_TRUE(cache.get(other, raw_back.data(), raw_back.size()));
    EXPECT_EQ(raw_back, stored);
    EXPECT_EQ(cache.locate(other), CacheTier::kShm);

    {
      LogCapture log;
      EXPECT_FALSE(cache.get({7, 2, 0}, back.data(), count * cache_dtype_size(dtype)));  // absent
      EXPECT_FALSE(cache.get(key, raw.data(), raw.size() - 1));                          // wrong size
      EXPECT_FALSE(cache.get({1, 3, 0}, raw.data(), raw.size()));                       // unregistered depth
      EXPECT_FALSE(cache.put({1ull << 41, 2, 0}, raw.data(), raw.size()));              // sample out of range
      EXPECT_FALSE(cache.put({1, 2, 70000}, raw.data(), raw.size()));                   // view out of range
      EXPECT_EQ(log.count("refused a put"), 1) << log.text();
      EXPECT_EQ(log.count("-byte buffer"), 1) << log.text();
    }
    const CacheStats s = cache.stats();
    EXPECT_EQ(s.puts, 4u);
    EXPECT_EQ(s.puts_present, 1u);
    EXPECT_EQ(s.puts_refused, 2u);
    EXPECT_EQ(s.hits, 3u);
    EXPECT_EQ(s.misses, 3u);
    EXPECT_DOUBLE_EQ(s.hit_rate(), 0.5);
    EXPECT_EQ(s.shm_entries, 4u);
    EXPECT_EQ(s.shm_slots, 8u);
    EXPECT_EQ(s.entries_per_depth.at(2), 3u);
    EXPECT_EQ(s.entries_per_depth.at(5), 1u);
    EXPECT_EQ(s.bytes_per_sample.at(2), count * cache_dtype_size(dtype));
  }
}

TEST(ActivationCache, OverflowToDiskFollowsClockAndDropsWhenBothTiersAreFull) {
  testing::TempDir dir;
  const size_t count = 96;
  ActivationCache cache(cache_options(unique_job("evict"), {4, 24}, 4, 3, dir.path()));
  ASSERT_FALSE(cache.disk_path().empty());
  EXPECT_TRUE(testing::file_exists(cache.disk_path()));
  auto put = [&](uint64_t sample) {
    const CacheKey key{sample, 1, 0};
    return cache.put_f32(key, entry_values(key, count).data(), count);
  };
  auto value_ok = [&](uint64_t sample) {
    const CacheKey key{sample, 1, 0};
    std::vector<float> back(count);
    return cache.get_f32(key, back.data(), count) && back == entry_values(key, count);
  };
  auto tier = [&](uint64_t sample) { return cache.locate({sample, 1, 0}); };
  for (uint64_t s = 0; s < 4; ++s) ASSERT_TRUE(put(s));
  ASSERT_TRUE(value_ok(0));  // referenced: a second chance
  LogCapture log;
  ASSERT_TRUE(put(4));  // hand at 0: 0 referenced (cleared), 1 moves to disk
  EXPECT_EQ(tier(0), CacheTier::kShm);
  EXPECT_EQ(tier(1), CacheTier::kDisk);
  EXPECT_TRUE(value_ok(1));  // served from disk, bytes intact
  ASSERT_TRUE(put(5));       // 2 to disk
  ASSERT_TRUE(put(6));       // 3 to disk: the disk tier is full
  EXPECT_EQ(tier(2), CacheTier::kDisk);
  EXPECT_EQ(tier(3), CacheTier::kDisk);
  EXPECT_EQ(log.count("cache full"), 0);
  ASSERT_TRUE(put(7));  // shm victim 0 (bit cleared) to disk; disk victim: slot of 1 is referenced, so 2 is dropped
  EXPECT_EQ(tier(0), CacheTier::kDisk);
  EXPECT_EQ(tier(1), CacheTier::kDisk);
  EXPECT_EQ(tier(2), CacheTier::kNone);
  EXPECT_FALSE(value_ok(2));
  EXPECT_TRUE(value_ok(0));
  for (uint64_t s = 8; s < 14; ++s) ASSERT_TRUE(put(s));
  EXPECT_EQ(log.count("cache full"), 1) << log.text();  // one warning however many drops
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.shm_entries, 4u);
  EXPECT_EQ(s.disk_entries, 3u);
  EXPECT_EQ(s.evictions_to_disk, 4u + 6u);
  EXPECT_EQ(s.evictions_dropped, 1u + 6u);
  EXPECT_EQ(s.puts, 14u);
  for (uint64_t s2 = 10; s2 < 14; ++s2) EXPECT_EQ(tier(s2), CacheTier::kShm) << s2;  // the newest stay in memory
}

TEST(ActivationCache, UnusableDiskTierDegradesWithOneWarningAndNeverThrows) {
  testing::TempDir dir;
  testing::write_text(dir.file("not-a-dir"), "x");
  // Not a directory; then a capacity beyond ext4's 16 TiB file size limit
  // (EFBIG before anything is allocated, standing in for ENOSPC).
  for (const std::string& disk_dir : {dir.file("not-a-dir") + "/sub", dir.path()}) {
    const size_t count = disk_dir == dir.path() ? (1u << 18) : 32u;
    LogCapture log;
    ActivationCacheOptions options = cache_options(unique_job("nodisk"), {static_cast<int64_t>(count)}, 2, 4, disk_dir);
    if (disk_dir == dir.path()) options.disk_capacity_bytes = 32ull << 40;
    ActivationCache cache(options);
    EXPECT_EQ(log.count("disk tier disabled"), 1) << log.text();
    EXPECT_TRUE(cache.disk_path().empty());
    for (uint64_t s = 0; s < 6; ++s) {
      const CacheKey key{s, 1, 0};
      EXPECT_TRUE(cache.put_f32(key, entry_values(key, count).data(), count));
    }
    std::vector<float> back(count);
    EXPECT_FALSE(cache.get_f32({0, 1, 0}, back.data(), count));  // dropped: a miss, recomputed by the engine
    EXPECT_TRUE(cache.get_f32({5, 1, 0}, back.data(), count));
    EXPECT_EQ(log.count("cache full"), 1) << log.text();
    EXPECT_EQ(cache.stats().disk_slots, 0u);
  }
}

TEST(ActivationCache, AdvancingMovesEntriesToTheNewDepthAndDropDepthFreesTheOld) {
  testing::TempDir dir;
  ActivationCacheOptions options = cache_options(unique_job("advance"), {4, 8}, 4, 4, dir.path(), {1});
  options.depth_shapes.push_back({3, {2, 8}});
  ActivationCache cache(options);
  // 4 samples, two of them with a second view: 6 entries over 8 slots, some on disk.
  for (uint64_t s = 0; s < 4; ++s) {
    for (int view = 0; view < 1 + static_cast<int>(s % 2); ++view) {
      const CacheKey key{s * 10, 1, view};
      ASSERT_TRUE(cache.put_f32(key, entry_values(key, 32).data(), 32));
    }
  }
  const std::vector<CacheKey> old_keys = cache.keys_at_depth(1);
  ASSERT_EQ(old_keys.size(), 6u);
  EXPECT_EQ(old_keys.front(), (CacheKey{0, 1, 0}));
  EXPECT_EQ(old_keys[2], (CacheKey{10, 1, 1}));
  EXPECT_EQ(old_keys.back(), (CacheKey{30, 1, 1}));
  // "Advance": the new depth's value is a function of the old one; each old
  // entry is erased once read, so the cache (6 of 8 slots used) never evicts.
  for (const CacheKey& key : old_keys) {
    std::vector<float> value(32);
    ASSERT_TRUE(cache.get_f32(key, value.data(), 32));
    EXPECT_TRUE(cache.erase(key));
    EXPECT_FALSE(cache.erase(key));
    std::vector<float> advanced(16);
    for (size_t i = 0; i < 16; ++i) advanced[i] = value[2 * i] + value[2 * i + 1];
    EXPECT_TRUE(cache.put_f32({key.sample, 3, key.view}, advanced.data(), 16));
  }
  // Entries put at the old depth meanwhile (another process still behind) go with drop_depth.
  for (uint64_t s = 100; s < 102; ++s) {
    const CacheKey key{s, 1, 0};
    ASSERT_TRUE(cache.put_f32(key, entry_values(key, 32).data(), 32));
  }
  EXPECT_EQ(cache.drop_depth(1), 2u);
  EXPECT_TRUE(cache.keys_at_depth(1).empty());
  EXPECT_EQ(cache.drop_depth(1), 0u);
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.evictions_dropped, 0u);
  EXPECT_EQ(s.entries_per_depth.count(1), 0u);
  EXPECT_EQ(s.entries_per_depth.at(3), 6u);
  const std::vector<CacheKey> new_keys = cache.keys_at_depth(3);
  ASSERT_EQ(new_keys.size(), 6u);
  for (const CacheKey& key : new_keys) {
    const std::vector<float> old_value = entry_values({key.sample, 1, key.view}, 32);
    std::vector<float> value(16);
    ASSERT_TRUE(cache.get_f32(key, value.data(), 16));
    for (size_t i = 0; i < 16; ++i) EXPECT_EQ(value[i], old_value[2 * i] + old_value[2 * i + 1]);
  }
  // Freed slots are reused without evictions.
  EXPECT_EQ(cache.drop_depth(3), 6u);
  for (uint64_t x = 200; x < 208; ++x) {
    const CacheKey key{x, 1, 0};
    ASSERT_TRUE(cache.put_f32(key, entry_values(key, 32).data(), 32));
  }
  EXPECT_EQ(cache.stats().evictions_dropped, 0u);
  EXPECT_EQ(cache.stats().shm_entries + cache.stats().disk_entries, 8u);
}

TEST(ActivationCache, LastUserRemovesSegmentAndDiskFileAndCorruptHeadersAreRecreated) {
  testing::TempDir dir;
  const std::string job = unique_job("hygiene");
  std::string segment, disk;
  {
    auto first = std::make_unique<ActivationCache>(cache_options(job, {16}, 4, 4, dir.path()));
    segment = first->segment_name();
    disk = first->disk_path();
    EXPECT_EQ(segment, "/pipet-cache-" + job);
    ASSERT_TRUE(testing::shm_exists(segment));
    ASSERT_TRUE(testing::file_exists(disk));
    {
      ActivationCache second(cache_options(job, {16}, 4, 4, dir.path()));
      const CacheKey key{3, 1, 0};
      ASSERT_TRUE(first->put_f32(key, entry_values(key, 16).data(), 16));
      std::vector<float> back(16);
      EXPECT_TRUE(second.get_f32(key, back.data(), 16));  // the same segment
      // Another layout for the same running job is a configuration error.
      const std::string message = error_message<ConfigError>([&] { ActivationCache third(cache_options(job, {17}, 4, 4, dir.path())); });
      EXPECT_TRUE(has(message, "other options")) << message;
      EXPECT_TRUE(has(message, job)) << message;
    }
    EXPECT_TRUE(testing::shm_exists(segment));  // `first` still uses it
  }
  EXPECT_FALSE(testing::shm_exists(segment));
  EXPECT_FALSE(testing::file_exists(disk));

  // Corrupt headers: garbage, a truncated header, a flipped layout byte.
  for (int variant = 0; variant < 3; ++variant) {
    const std::string corrupt_job = unique_job("corrupt");
    const std::string name = "/pipet-cache-" + corrupt_job;
    if (variant == 2) {
      ActivationCacheOptions options = cache_options(corrupt_job, {16}, 4);
      auto cache = std::make_unique<ActivationCache>(options);
      // Keep the file: reopen it before the owner's destructor unlinks it.
      const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
      ASSERT_GE(fd, 0);
      cache.reset();
      const int fresh = ::shm_open(name.c_str(), O_RDWR | O_CREAT, 0600);
      std::vector<uint8_t> bytes(1 << 16);
      ASSERT_GT(::pread(fd, bytes.data(), bytes.size(), 0), 0);
      bytes[20] ^= 0x40;  // inside the checksummed layout
      ASSERT_EQ(::write(fresh, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
      ::close(fd);
      ::close(fresh);
    } else {
      const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT, 0600);
      ASSERT_GE(fd, 0);
      std::vector<uint8_t> garbage(variant == 0 ? 100000 : 64, 0xab);
      ASSERT_EQ(::write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
      ::close(fd);
    }
    LogCapture log;
    ActivationCacheOptions options = cache_options(corrupt_job, {16}, 4);
    options.remove_stale = false;  // the constructor itself must cope
    ActivationCache cache(options);
    EXPECT_EQ(log.count("corrupt or incompatible header"), 1) << "variant " << variant << ": " << log.text();
    const CacheKey key{1, 1, 0};
    EXPECT_TRUE(cache.put_f32(key, entry_values(key, 16).data(), 16));
    std::vector<float> back(16);
    EXPECT_TRUE(cache.get_f32(key, back.data(), 16));
  }
}

TEST(ActivationCache, BadOptionsThrowConfigErrorNamingTheField) {
  testing::TempDir dir;
  const ActivationCacheOptions good = cache_options(unique_job("bad"), {8, 8}, 4, 0);
  struct Case {
    std::string field;
    std::function<void(ActivationCacheOptions&)> spoil;
  };
  const std::vector<Case> cases = {
      {"job_id", [](ActivationCacheOptions& o) { o.job_id = ""; }},
      {"job_id", [](ActivationCacheOptions& o) { o.job_id = "a/b"; }},
      {"job_id", [](ActivationCacheOptions& o) { o.job_id = std::string(101, 'x'); }},
      {"depth_shapes", [](ActivationCacheOptions& o) { o.depth_shapes.clear(); }},
      {"depth_shapes[0]", [](ActivationCacheOptions& o) { o.depth_shapes[0].depth = 256; }},
      {"depth_shapes[0]", [](ActivationCacheOptions& o) { o.depth_shapes[0].shape = {8, 0}; }},
      {"depth_shapes[0]", [](ActivationCacheOptions& o) { o.depth_shapes[0].shape = {1, 2, 3, 4, 5}; }},
      {"depth_shapes[1]", [](ActivationCacheOptions& o) { o.depth_shapes.push_back(o.depth_shapes[0]); }},
      {"shm_capacity_bytes", [](ActivationCacheOptions& o) { o.shm_capacity_bytes = 100; }},
      {"disk_dir", [](ActivationCacheOptions& o) { o.disk_capacity_bytes = 1 << 20; }},
      {"disk_capacity_bytes", [&](ActivationCacheOptions& o) {
         o.disk_dir = dir.path();
         o.disk_capacity_bytes = 10;
       }},
      {"lock_timeout_seconds", [](ActivationCacheOptions& o) { o.lock_timeout_seconds = 0; }},
  };
  for (const Case& c : cases) {
    ActivationCacheOptions options = good;
    c.spoil(options);
    const std::string message = error_message<ConfigError>([&] { ActivationCache cache(options); });
    EXPECT_TRUE(has(message, c.field)) << c.field << ": " << message;
  }
  ActivationCache fine(good);  // the unspoiled options work
  EXPECT_EQ(fine.stats().shm_slots, 4u);
}

}  // namespace
}  // namespace pipet
