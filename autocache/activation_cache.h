// ActivationCache: a node-wide cache of the frozen prefix's output per
// (sample, frozen depth, view), shared by every process of a job on a node
// through one POSIX shared-memory segment, with a tier of memory-mapped disk
// slots below it. Values are raw bytes in a CacheDtype with one registered
// shape per depth; the engine converts to and from tensors.
//
// Error contract (the cache never fails the training loop):
//  - The constructor throws ConfigError for bad options (naming the field)
//    and when an existing live segment of the same job has another layout.
//    Missing resources never throw: a /dev/shm too small for the capacity
//    shrinks the shm tier, an unusable disk directory (EACCES, ENOSPC, ...)
//    disables the disk tier; each logs one warning.
//  - put/get/locate/keys_at_depth/drop_depth/stats are noexcept. Any failure
//    (tiers full of entries still being written, lock timeout, unusable
//    tier, wrong size, unregistered depth) is a miss or a refused put,
//    logged once per kind of failure per cache object.
//  - The destructor never throws.
//
// Layout, concurrency protocol and crash hygiene: docs/ARCHITECTURE.md
// ("AutoCache design") and activation_cache.cc.
#pragma once

#include "autocache/cache_dtype.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

// The identity of a cached activation. sample < 2^40, 0 <= depth < 256,
// 0 <= view < 65536 (checked; out-of-range keys are misses / refused puts).
struct CacheKey {
  uint64_t sample = 0;
  int depth = 0;
  int view = 0;
  bool operator==(const CacheKey& o) const { return sample == o.sample && depth == o.depth && view == o.view; }
};

// The activation shape at one frozen depth (e.g. {tokens, hidden}).
struct DepthShape {
  int depth = 0;
  std::vector<int64_t> shape;
};

// Plain options; the engine maps its config keys onto these fields.
struct ActivationCacheOptions {
  // Names the segment (/dev/shm/pipet-cache-<job_id>) and the disk file:
  // every process of one job on a node must pass the same id (e.g. the MPI
  // job id, or a uuid broadcast by rank 0). [A-Za-z0-9._-], 1..100 chars.
  std::string job_id;
  // Payload bytes in shared memory (slot metadata and index come on top,
  // about 80 bytes per slot), reserved up front by the creating process.
  // Must hold at least one entry.
  uint64_t shm_capacity_bytes = 1ull << 30;
  // Directory of the disk tier's slot file; empty = no disk tier.
  std::string disk_dir;
  // Payload bytes on disk; 0 = no disk tier. Reserved up front (fallocate).
  uint64_t disk_capacity_bytes = 0;
  CacheDtype dtype = CacheDtype::kF32;
  // One shape per depth that will ever be cached, registered up front
  // (depth in [0, 255], 1..4 dimensions, at most 64 depths). Every process
  // of the job must pass the same list.
  std::vector<DepthShape> depth_shapes;
  // How long get/put wait for the segment's lock before giving up (a miss).
  double lock_timeout_seconds = 5.0;
  // Remove segments and disk files of dead jobs at construction.
  bool remove_stale = true;
};

enum class CacheTier { kNone, kShm, kDisk };

struct CacheStats {
  // Counted by this process (this cache object).
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t puts = 0;                // entries this process stored
  uint64_t puts_present = 0;        // puts skipped: the key was already stored or being stored
  uint64_t puts_refused = 0;        // puts that failed (no slot, lock timeout, bad key or size)
  uint64_t evictions_to_disk = 0;   // shm entries this process moved to disk to make room
  uint64_t evictions_dropped = 0;   // entries this process removed from the cache to make room
  // Node-wide, from the shared segment at the time of the call.
  uint64_t shm_entries = 0;
  uint64_t disk_entries = 0;
  uint64_t shm_slots = 0;
  uint64_t disk_slots = 0;
  std::map<int, uint64_t> entries_per_depth;
  // Stored bytes of one sample's entry at each registered depth.
  std::map<int, uint64_t> bytes_per_sample;

  // hits / (hits + misses); 0 before any get.
  double hit_rate() const;
};

class ActivationCache {
 public:
  explicit ActivationCache(const ActivationCacheOptions& options);
  ~ActivationCache();
  ActivationCache(const ActivationCache&) = delete;
  ActivationCache& operator=(const ActivationCache&) = delete;

  // Stores `size` bytes already in the cache dtype (size must equal
  // entry_bytes(key.depth)). Returns true when this call stored the entry;
  // false when it was already present or being written by another process,
  // or the put was refused (see the error contract).
  bool put(const CacheKey& key, const void* data, size_t size) noexcept;
  // Converts `count` f32 values into the cache dtype while storing them.
  bool put_f32(const CacheKey& key, const float* values, size_t count) noexcept;

  // Copies the entry into `out` (size must equal entry_bytes(key.depth)).
  // Returns false on a miss; `out` may then hold partial garbage.
  bool get(const CacheKey& key, void* out, size_t size) noexcept;
  // Reads the entry converted to f32 (count must equal entry_elements(depth)).
  bool get_f32(const CacheKey& key, float* out, size_t count) noexcept;

  // Where the entry is now (kNone when absent or still being written).
  CacheTier locate(const CacheKey& key) noexcept;

  // Advancing: every published key at `depth` (both tiers, any process),
  // sorted. The engine reads each, erases it, pushes it through the newly
  // frozen blocks and puts the result at the new depth; drop_depth(old
  // depth) then removes whatever is left (entries put meanwhile).
  std::vector<CacheKey> keys_at_depth(int depth) noexcept;
  // Removes one entry (true when it was there). Advancing erases each old
  // entry right after reading it, so its slot takes the new-depth value
  // without evicting entries that are still to be advanced.
  bool erase(const CacheKey& key) noexcept;
  // Removes every entry at `depth` and returns how many. Entries still being
  // written are removed when their writer publishes them.
  size_t drop_depth(int depth) noexcept;

  CacheStats stats() noexcept;

  CacheDtype dtype() const;
  // Bytes / elements of one entry at `depth`; 0 for an unregistered depth.
  size_t entry_bytes(int depth) const;
  size_t entry_elements(int depth) const;
  // The registered shape; empty for an unregistered depth.
  std::vector<int64_t> shape(int depth) const;

  // "/pipet-cache-<job>" (shm_open name) and the disk slot file ("" if none).
  const std::string& segment_name() const;
  const std::string& disk_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Removes segments named /dev/shm/pipet-cache-* whose every attached process
// is dead (or whose header is unreadable and that nobody is initializing),
// with their disk files, and, when `disk_dir` is not empty, slot files of
// this host in it whose segment no longer exists. One info line per removal.
// Returns the number of segments and files removed. Never throws.
size_t remove_stale_caches(const std::string& disk_dir) noexcept;

}  // namespace pipet
