// ActivationCache implementation.
//
// Segment layout (one POSIX shm segment per job and node, all offsets in the
// checksummed header):
//   Header | index (open addressing, linear probing) | slot metadata (shm
//   slots, then disk slots) | free stacks | shm payload slots (page aligned)
// The disk tier's payload is a separate fallocate'd file of fixed-size
// slots; its metadata lives in the segment so every process sees it.
// Every slot has the same size (the largest registered entry, rounded to
// 64 bytes) and may hold an entry of any depth: when the frozen depth
// advances, the new depth's entries take over the slots the old depth frees.
//
// Concurrency: a robust, process-shared pthread mutex in the header guards
// the index, slot states, free stacks and CLOCK hands. Payload bytes are
// copied outside the mutex, protected by a per-slot sequence word (a
// seqlock): a writer makes the word odd while it owns the slot and even
// again when it publishes; freeing a slot adds 2. A reader records the even
// word under the mutex, copies, then re-reads it after an acquire fence and
// discards the copy (a miss) if it changed. So a reader never returns a
// half-written or recycled value. A process killed while holding the mutex
// hands it over as EOWNERDEAD: the next locker rebuilds the index from the
// slot metadata. A process killed while copying a value leaves its slot
// "writing" under a dead pid: readers miss it, and CLOCK or a later put of
// the same key reclaims it. Attach/detach/creation are serialised by flock
// on the segment's file descriptor, which the kernel also drops on death.
#include "autocache/activation_cache.h"

#include "runtime/core/host.h"

#include "autocache/shared_region.h"
#include "runtime/core/errors.h"

#include <spdlog/spdlog.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

namespace pipet {
namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free, "the seqlock needs lock-free 64-bit atomics");

constexpr uint64_t kMagic = 0x31434154'45504950ull;  // "PIPETAC1" in memory order
constexpr uint32_t kVersion = 1;
constexpr int kMaxDepths = 64;
constexpr int kMaxRank = 4;
constexpr int kMaxAttached = 1024;
constexpr size_t kMaxJobId = 100;
constexpr uint64_t kMaxSlots = 1ull << 31;
constexpr uint32_t kDiskBit = 0x80000000u;
constexpr uint32_t kNoSlot = 0xffffffffu;
constexpr uint64_t kMaxEntryBytes = 1ull << 30;
constexpr char kShmDir[] = "/dev/shm";
constexpr char kPrefix[] = "pipet-cache-";

struct DepthRecord {
  int32_t depth;
  uint32_t rank;
  int64_t dims[kMaxRank];
};

struct AttachRecord {
  int32_t pid;
  uint32_t unused;
  uint64_t start_ticks;
};

// Written once by the creator, checksummed, read-only afterwards.
struct Layout {
  uint64_t magic;
  uint32_t version;
  uint32_t dtype;
  uint64_t segment_bytes;
  uint64_t slot_bytes;
  uint64_t shm_slots;
  uint64_t disk_slots;  // 0 when the disk tier could not be created
  uint64_t index_capacity;
  uint64_t requested_shm_bytes;
  uint64_t requested_disk_bytes;
  uint64_t index_offset;
  uint64_t meta_offset;
  uint64_t free_offset;
  uint64_t payload_offset;
  uint32_t depth_count;
  uint32_t unused;
  DepthRecord depths[kMaxDepths];
  char job_id[128];
  char disk_path[1024];
  int32_t creator_pid;
  uint32_t unused2;
  uint64_t creator_start_ticks;
};

enum SlotState : uint32_t { kFree = 0, kWriting = 1, kPublished = 2 };

struct SlotMeta {
  std::atomic<uint64_t> seq;  // even: stable, odd: being written
  uint64_t key;
  uint32_t state;
  uint32_t referenced;  // CLOCK bit
  uint32_t doomed;      // dropped while being written: free instead of publishing
  int32_t writer_pid;
  uint64_t writer_start_ticks;
};

struct IndexEntry {
  uint64_t key;
  uint32_t used;
  uint32_t location;  // slot number, kDiskBit set for the disk tier
};

struct Header {
  Layout layout;
  uint64_t layout_checksum;
  pthread_mutex_t mutex;
  // Guarded by the mutex.
  uint64_t shm_hand;
  uint64_t disk_hand;
  uint64_t shm_free_count;
  uint64_t disk_free_count;
  // Guarded by flock on the segment.
  uint32_t attached_count;
  uint32_t unused;
  AttachRecord attached[kMaxAttached];
};

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

uint64_t fnv1a(const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint64_t hash = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

bool key_in_range(const CacheKey& key) {
  return key.sample < (1ull << 40) && key.depth >= 0 && key.depth < 256 && key.view >= 0 && key.view < 65536;
}

uint64_t pack(const CacheKey& key) {
  return (key.sample << 24) | (static_cast<uint64_t>(key.depth) << 16) | static_cast<uint64_t>(key.view);
}

CacheKey unpack(uint64_t packed) {
  CacheKey key;
  key.sample = packed >> 24;
  key.depth = static_cast<int>((packed >> 16) & 0xff);
  key.view = static_cast<int>(packed & 0xffff);
  return key;
}


// Sizes and offsets of a segment for the given slot counts.
void plan_layout(Layout& layout) {
  const uint64_t slots = layout.shm_slots + layout.disk_slots;
  uint64_t capacity = 16;
  while (capacity < 2 * slots) capacity *= 2;
  layout.index_capacity = capacity;
  layout.index_offset = align_up(sizeof(Header), 64);
  layout.meta_offset = align_up(layout.index_offset + capacity * sizeof(IndexEntry), 64);
  layout.free_offset = align_up(layout.meta_offset + slots * sizeof(SlotMeta), 64);
  layout.payload_offset = align_up(layout.free_offset + slots * sizeof(uint32_t), 4096);
  layout.segment_bytes = layout.payload_offset + layout.shm_slots * layout.slot_bytes;
}

// Structural checks of a header read from a segment of `file_bytes`.
bool header_valid(const Header& header, uint64_t file_bytes) {
  const Layout& l = header.layout;
  if (l.magic != kMagic || l.version != kVersion) return false;
  if (fnv1a(&l, sizeof l) != header.layout_checksum) return false;
  if (l.segment_bytes != file_bytes || l.slot_bytes == 0 || l.shm_slots == 0) return false;
  if (l.shm_slots >= kMaxSlots || l.disk_slots >= kMaxSlots || l.depth_count > kMaxDepths) return false;
  Layout expected = l;
  plan_layout(expected);
  return std::memcmp(&expected, &l, sizeof l) == 0 && header.attached_count <= kMaxAttached;
}

bool any_attached_alive(Header& header) {
  for (uint32_t i = 0; i < header.attached_count; ++i) {
    if (process_alive({header.attached[i].pid, header.attached[i].start_ticks})) return true;
  }
  return false;
}

std::string attached_pids(const Header& header) {
  std::string pids;
  for (uint32_t i = 0; i < std::min<uint32_t>(header.attached_count, 16); ++i) {
    if (!pids.empty()) pids += ",";
    pids += std::to_string(header.attached[i].pid);
  }
  return pids.empty() ? "none" : pids;
}

// Is `fd` still the file the name `path` refers to (not unlinked or replaced)?
bool same_file(int fd, const std::string& path) {
  struct stat by_fd {}, by_name {};
  if (::fstat(fd, &by_fd) != 0 || ::stat(path.c_str(), &by_name) != 0) return false;
  return by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino;
}

class FlockGuard {
 public:
  FlockGuard(int fd, bool wait) : fd_(fd) { locked_ = ::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) == 0; }
  ~FlockGuard() {
    if (locked_) ::flock(fd_, LOCK_UN);
  }
  FlockGuard(const FlockGuard&) = delete;
  FlockGuard& operator=(const FlockGuard&) = delete;
  bool locked() const { return locked_; }

 private:
  int fd_;
  bool locked_ = false;
};

enum Warning : int {
  kWarnLockTimeout,
  kWarnNoSlot,
  kWarnDropped,
  kWarnBadPut,
  kWarnBadGet,
  kWarnDiskLocal,
  kWarnRecovered,
  kWarnPublishLost,
  kWarnUnusable,
  kWarnCount
};

}  // namespace

double CacheStats::hit_rate() const {
  const uint64_t total = hits + misses;
  return total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total);
}

struct ActivationCache::Impl {
  struct DepthInfo {
    std::vector<int64_t> shape;
    size_t elements = 0;
    size_t bytes = 0;
  };

  ActivationCacheOptions options;
  std::string name;      // shm_open name, "/pipet-cache-<job>"
  std::string shm_path;  // "/dev/shm/pipet-cache-<job>"
  std::string disk_path;
  std::map<int, DepthInfo> depths;
  uint64_t slot_bytes = 0;
  ProcessIdentity self;

  FileDescriptor shm_fd;
  Mapping shm;
  FileDescriptor disk_fd;
  Mapping disk;
  Header* header = nullptr;  // null: the cache is disabled (every get misses)
  IndexEntry* index = nullptr;
  SlotMeta* meta = nullptr;       // shm slots, then disk slots
  uint32_t* free_stack = nullptr; // shm stack [0, shm_slots), disk stack after it
  uint8_t* shm_payload = nullptr;
  uint8_t* disk_payload = nullptr;  // null when this process cannot use the disk tier
  std::atomic<bool> unusable{false};

  std::atomic<uint64_t> hits{0}, misses{0}, puts{0}, puts_present{0}, puts_refused{0};
  std::atomic<uint64_t> evictions_to_disk{0}, evictions_dropped{0};
  std::atomic<bool> warned[kWarnCount] = {};

  void warn_once(Warning kind, const std::string& message) noexcept {
    if (warned[kind].exchange(true)) return;
    try {
      spdlog::warn("[autocache] {} (warned once per cache)", message);
    } catch (...) {
    }
  }

  // --- construction -------------------------------------------------------
  void validate_and_plan();
  void attach();
  bool initialize_segment();
  void attach_disk_file();
  void detach() noexcept;
  bool layout_matches(const Layout& layout, std::string& difference) const;

  // --- helpers under the mutex ------------------------------------------------
  uint64_t shm_slots() const { return header->layout.shm_slots; }
  uint64_t disk_slots() const { return header->layout.disk_slots; }
  SlotMeta& meta_of(uint32_t location) {
    return (location & kDiskBit) ? meta[shm_slots() + (location & ~kDiskBit)] : meta[location];
  }
  uint8_t* payload_of(uint32_t location) {
    if (location & kDiskBit) return disk_payload ? disk_payload + (location & ~kDiskBit) * slot_bytes : nullptr;
    return shm_payload + static_cast<uint64_t>(location) * slot_bytes;
  }
  uint64_t index_mask() const { return header->layout.index_capacity - 1; }
  IndexEntry* find(uint64_t key);
  void insert(uint64_t key, uint32_t location);
  void erase(IndexEntry* entry);
  void unindex(uint32_t location);
  void free_slot(uint32_t location);
  uint32_t pop_free(bool disk_tier);
  uint32_t allocate(bool disk_tier);
  bool writer_alive(const SlotMeta& slot) const;
  void rebuild_after_owner_death();

  bool lock() noexcept;
  void unlock() noexcept { pthread_mutex_unlock(&header->mutex); }

  template <typename Fill>
  bool put_with(const CacheKey& key, size_t size, Fill&& fill) noexcept;
  template <typename Copy>
  bool get_with(const CacheKey& key, size_t size, Copy&& copy) noexcept;
};

// --- options ----------------------------------------------------------------

void ActivationCache::Impl::validate_and_plan() {
  const std::string where = "autocache options: ";
  const std::string& job = options.job_id;
  if (job.empty() || job.size() > kMaxJobId) {
    throw ConfigError(where + "job_id must have 1.." + std::to_string(kMaxJobId) + " characters (got "
                      + std::to_string(job.size()) + ")");
  }
  for (char c : job) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      throw ConfigError(where + "job_id '" + job + "' may only contain letters, digits, '.', '_' and '-'");
    }
  }
  if (options.depth_shapes.empty()) throw ConfigError(where + "depth_shapes is empty: register the shape of every cached depth");
  if (options.depth_shapes.size() > static_cast<size_t>(kMaxDepths)) {
    throw ConfigError(where + "depth_shapes has " + std::to_string(options.depth_shapes.size()) + " depths (at most "
                      + std::to_string(kMaxDepths) + ")");
  }
  const size_t element = cache_dtype_size(options.dtype);
  if (element == 0) throw ConfigError(where + "dtype is not one of f32, f16, bf16");
  for (size_t i = 0; i < options.depth_shapes.size(); ++i) {
    const DepthShape& d = options.depth_shapes[i];
    const std::string item = where + "depth_shapes[" + std::to_string(i) + "] (depth " + std::to_string(d.depth) + "): ";
    if (d.depth < 0 || d.depth > 255) throw ConfigError(item + "depth must be in [0, 255]");
    if (depths.count(d.depth)) throw ConfigError(item + "depth is registered twice");
    if (d.shape.empty() || d.shape.size() > static_cast<size_t>(kMaxRank)) {
      throw ConfigError(item + "shape must have 1.." + std::to_string(kMaxRank) + " dimensions");
    }
    uint64_t elements = 1;
    for (int64_t dim : d.shape) {
      if (dim <= 0) throw ConfigError(item + "shape dimensions must be positive (got " + std::to_string(dim) + ")");
      if (static_cast<uint64_t>(dim) > kMaxEntryBytes || elements * static_cast<uint64_t>(dim) > kMaxEntryBytes) {
        throw ConfigError(item + "entry larger than 1 GiB");
      }
      elements *= static_cast<uint64_t>(dim);
    }
    if (elements * element > kMaxEntryBytes) throw ConfigError(item + "entry larger than 1 GiB");
    depths[d.depth] = DepthInfo{d.shape, static_cast<size_t>(elements), static_cast<size_t>(elements * element)};
    slot_bytes = std::max<uint64_t>(slot_bytes, align_up(elements * element, 64));
  }
  if (options.shm_capacity_bytes < slot_bytes) {
    throw ConfigError(where + "shm_capacity_bytes (" + std::to_string(options.shm_capacity_bytes)
                      + ") is smaller than one entry (" + std::to_string(slot_bytes) + " bytes)");
  }
  if (options.shm_capacity_bytes / slot_bytes >= kMaxSlots) throw ConfigError(where + "shm_capacity_bytes holds more than 2^31 entries");
  if (options.disk_capacity_bytes > 0) {
    if (options.disk_dir.empty()) {
      throw ConfigError(where + "disk_capacity_bytes is " + std::to_string(options.disk_capacity_bytes)
                        + " but disk_dir is empty (set a directory, or capacity 0 for no disk tier)");
    }
    if (options.disk_capacity_bytes < slot_bytes) {
      throw ConfigError(where + "disk_capacity_bytes (" + std::to_string(options.disk_capacity_bytes)
                        + ") is smaller than one entry (" + std::to_string(slot_bytes) + " bytes); use 0 for no disk tier");
    }
    if (options.disk_capacity_bytes / slot_bytes >= kMaxSlots) throw ConfigError(where + "disk_capacity_bytes holds more than 2^31 entries");
  }
  if (!std::isfinite(options.lock_timeout_seconds) || options.lock_timeout_seconds <= 0) {
    throw ConfigError(where + "lock_timeout_seconds must be a positive number of seconds");
  }
  name = std::string("/") + kPrefix + job;
  shm_path = std::string(kShmDir) + name;
  if (options.disk_capacity_bytes > 0) {
    // The machine's tag, not just its name: hosts that share disk_dir (a
    // network filesystem) must not share a slot file, and SageMaker's hosts
    // all answer "aws" to gethostname().
    disk_path = (std::filesystem::path(options.disk_dir) / (kPrefix + job + "-" + host_identity().file_tag() + ".slots")).string();
    if (disk_path.size() >= sizeof(Layout::disk_path)) throw ConfigError(where + "disk_dir path is too long");
  }
}

bool ActivationCache::Impl::layout_matches(const Layout& l, std::string& difference) const {
  if (l.dtype != static_cast<uint32_t>(options.dtype)) {
    difference = std::string("dtype ") + cache_dtype_name(static_cast<CacheDtype>(l.dtype)) + " vs "
                 + cache_dtype_name(options.dtype);
    return false;
  }
  if (l.slot_bytes != slot_bytes || l.requested_shm_bytes != options.shm_capacity_bytes
      || l.requested_disk_bytes != options.disk_capacity_bytes) {
    difference = "capacities (shm " + std::to_string(l.requested_shm_bytes) + " vs " + std::to_string(options.shm_capacity_bytes)
                 + ", disk " + std::to_string(l.requested_disk_bytes) + " vs " + std::to_string(options.disk_capacity_bytes)
                 + ", slot " + std::to_string(l.slot_bytes) + " vs " + std::to_string(slot_bytes) + " bytes)";
    return false;
  }
  bool same = l.depth_count == depths.size();
  uint32_t i = 0;
  for (auto it = depths.begin(); same && it != depths.end(); ++it, ++i) {
    const DepthRecord& r = l.depths[i];
    same = r.depth == it->first && r.rank == it->second.shape.size()
           && std::equal(it->second.shape.begin(), it->second.shape.end(), r.dims);
  }
  if (!same) difference = "registered depth shapes";
  return same;
}

// --- attach / create / detach -------------------------------------------------

bool ActivationCache::Impl::initialize_segment() {
  Layout l;
  std::memset(&l, 0, sizeof l);
  l.magic = kMagic;
  l.version = kVersion;
  l.dtype = static_cast<uint32_t>(options.dtype);
  l.slot_bytes = slot_bytes;
  l.requested_shm_bytes = options.shm_capacity_bytes;
  l.requested_disk_bytes = options.disk_capacity_bytes;
  l.depth_count = static_cast<uint32_t>(depths.size());
  uint32_t i = 0;
  for (const auto& [depth, info] : depths) {
    l.depths[i].depth = depth;
    l.depths[i].rank = static_cast<uint32_t>(info.shape.size());
    std::copy(info.shape.begin(), info.shape.end(), l.depths[i].dims);
    ++i;
  }
  std::snprintf(l.job_id, sizeof l.job_id, "%s", options.job_id.c_str());
  l.creator_pid = self.pid;
  l.creator_start_ticks = self.start_ticks;

  // The disk tier: a fallocate'd file, so writes through the mapping can
  // never hit ENOSPC (which would be SIGBUS).
  if (!disk_path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.disk_dir, ec);
    FileDescriptor fd(::open(disk_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    const uint64_t want = options.disk_capacity_bytes / slot_bytes;
    int error = fd.valid() ? ::posix_fallocate(fd.get(), 0, static_cast<off_t>(want * slot_bytes)) : errno;
    if (error == 0) {
      l.disk_slots = want;
      std::snprintf(l.disk_path, sizeof l.disk_path, "%s", disk_path.c_str());
    } else {
      warned[kWarnDiskLocal] = true;
      spdlog::warn("[autocache] disk tier disabled: cannot reserve {} bytes in {}: {}", want * slot_bytes, disk_path,
                   errno_text(error));
      if (fd.valid()) ::unlink(disk_path.c_str());
    }
  }

  // Shared memory: reserve the pages now (tmpfs would SIGBUS on a later
  // touch when full); halve the slot count until /dev/shm has room.
  l.shm_slots = options.shm_capacity_bytes / slot_bytes;
  int error = 0;
  for (;;) {
    plan_layout(l);
    if (::ftruncate(shm_fd.get(), static_cast<off_t>(l.segment_bytes)) != 0) {
      error = errno;
    } else {
      error = ::posix_fallocate(shm_fd.get(), 0, static_cast<off_t>(l.segment_bytes));
    }
    if (error == 0) break;
    if (error != ENOSPC || l.shm_slots == 1) {
      spdlog::warn("[autocache] cache disabled: cannot reserve {} bytes of shared memory for {}: {}", l.segment_bytes,
                   shm_path, errno_text(error));
      return false;
    }
    l.shm_slots /= 2;
  }
  if (l.shm_slots < options.shm_capacity_bytes / slot_bytes) {
    spdlog::warn("[autocache] {} has room for {} of the requested {} bytes: the shm tier holds {} entries", kShmDir,
                 l.shm_slots * slot_bytes, options.shm_capacity_bytes, l.shm_slots);
  }
  shm = Mapping::map(shm_fd.get(), l.segment_bytes);
  if (!shm.valid()) {
    spdlog::warn("[autocache] cache disabled: cannot map {}: {}", shm_path, errno_text(errno));
    return false;
  }
  auto* h = reinterpret_cast<Header*>(shm.data());
  std::memset(static_cast<void*>(h), 0, l.payload_offset);
  h->layout = l;
  h->layout_checksum = fnv1a(&h->layout, sizeof h->layout);

  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  const int mutex_error = pthread_mutex_init(&h->mutex, &attributes);
  pthread_mutexattr_destroy(&attributes);
  if (mutex_error != 0) {
    spdlog::warn("[autocache] cache disabled: cannot create the shared mutex: {}", errno_text(mutex_error));
    return false;
  }
  auto* slot_meta = reinterpret_cast<SlotMeta*>(shm.data() + l.meta_offset);
  for (uint64_t s = 0; s < l.shm_slots + l.disk_slots; ++s) new (&slot_meta[s]) SlotMeta();
  auto* stacks = reinterpret_cast<uint32_t*>(shm.data() + l.free_offset);
  // Pop order 0, 1, 2...: the stack holds slots in descending order.
  for (uint64_t s = 0; s < l.shm_slots; ++s) stacks[s] = static_cast<uint32_t>(l.shm_slots - 1 - s);
  for (uint64_t s = 0; s < l.disk_slots; ++s) stacks[l.shm_slots + s] = static_cast<uint32_t>(l.disk_slots - 1 - s);
  h->shm_free_count = l.shm_slots;
  h->disk_free_count = l.disk_slots;
  return true;
}

void ActivationCache::Impl::attach() {
  for (int attempt = 0; attempt < 8; ++attempt) {
    shm = Mapping();
    header = nullptr;
    shm_fd = FileDescriptor(::shm_open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!shm_fd.valid()) {
      spdlog::warn("[autocache] cache disabled: shm_open {} failed: {}", shm_path, errno_text(errno));
      return;
    }
    FlockGuard flock_guard(shm_fd.get(), true);
    if (!flock_guard.locked() || !same_file(shm_fd.get(), shm_path)) continue;  // unlinked meanwhile: retry
    struct stat st {};
    if (::fstat(shm_fd.get(), &st) != 0) continue;
    bool created = false;
    if (st.st_size == 0) {
      if (!initialize_segment()) {
        ::shm_unlink(name.c_str());
        if (!disk_path.empty()) ::unlink(disk_path.c_str());
        shm = Mapping();
        return;
      }
      created = true;
    } else {
      shm = Mapping::map(shm_fd.get(), static_cast<size_t>(st.st_size));
      const bool valid = shm.valid() && static_cast<uint64_t>(st.st_size) >= sizeof(Header)
                         && header_valid(*reinterpret_cast<Header*>(shm.data()), static_cast<uint64_t>(st.st_size));
      if (!valid) {
        spdlog::warn("[autocache] {} has a corrupt or incompatible header ({} bytes): removing and recreating it",
                     shm_path, static_cast<long long>(st.st_size));
        shm = Mapping();
        ::shm_unlink(name.c_str());
        continue;
      }
      auto* h = reinterpret_cast<Header*>(shm.data());
      if (!any_attached_alive(*h)) {
        spdlog::info("[autocache] removing stale segment {} of job '{}' (its processes {} are gone)", shm_path,
                     h->layout.job_id, attached_pids(*h));
        if (h->layout.disk_path[0] != '\0') ::unlink(h->layout.disk_path);
        shm = Mapping();
        ::shm_unlink(name.c_str());
        continue;
      }
      std::string difference;
      if (!layout_matches(h->layout, difference)) {
        throw ConfigError("autocache: segment " + shm_path + " of a running job '" + options.job_id
                          + "' was created with other options (" + difference
                          + "): every process of a job must pass the same cache options, and job ids must be unique");
      }
    }
    header = reinterpret_cast<Header*>(shm.data());
    const Layout& l = header->layout;
    index = reinterpret_cast<IndexEntry*>(shm.data() + l.index_offset);
    meta = reinterpret_cast<SlotMeta*>(shm.data() + l.meta_offset);
    free_stack = reinterpret_cast<uint32_t*>(shm.data() + l.free_offset);
    shm_payload = shm.data() + l.payload_offset;
    // Record this process; dead records make room.
    uint32_t live = 0;
    for (uint32_t r = 0; r < header->attached_count; ++r) {
      const AttachRecord& record = header->attached[r];
      if (process_alive({record.pid, record.start_ticks})) header->attached[live++] = record;
    }
    if (live == kMaxAttached) {
      spdlog::warn("[autocache] cache disabled: {} already has {} attached processes", shm_path, kMaxAttached);
      header = nullptr;
      shm = Mapping();
      return;
    }
    header->attached[live] = AttachRecord{self.pid, 0, self.start_ticks};
    header->attached_count = live + 1;
    disk_path = l.disk_path;
    if (l.disk_slots > 0) attach_disk_file();
    spdlog::info("[autocache] {} {} ({} shm + {} disk slots of {} bytes, {})", created ? "created" : "attached to",
                 shm_path, l.shm_slots, l.disk_slots, l.slot_bytes, cache_dtype_name(options.dtype));
    return;
  }
  spdlog::warn("[autocache] cache disabled: could not attach to {} after repeated retries", shm_path);
  shm = Mapping();
  header = nullptr;
}

void ActivationCache::Impl::attach_disk_file() {
  const uint64_t bytes = header->layout.disk_slots * slot_bytes;
  disk_fd = FileDescriptor(::open(disk_path.c_str(), O_RDWR | O_CLOEXEC));
  struct stat st {};
  if (!disk_fd.valid() || ::fstat(disk_fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) < bytes) {
    warn_once(kWarnDiskLocal, "disk tier unusable in this process: " + disk_path + ": "
                                  + (disk_fd.valid() ? std::string("file too short") : errno_text(errno)));
    disk_fd.reset();
    return;
  }
  disk = Mapping::map(disk_fd.get(), bytes);
  if (!disk.valid()) {
    warn_once(kWarnDiskLocal, "disk tier unusable in this process: cannot map " + disk_path + ": " + errno_text(errno));
    return;
  }
  disk_payload = disk.data();
}

void ActivationCache::Impl::detach() noexcept {
  if (header == nullptr) return;
  try {
    FlockGuard flock_guard(shm_fd.get(), true);
    uint32_t live = 0;
    bool removed_self = false;
    for (uint32_t r = 0; r < header->attached_count; ++r) {
      const AttachRecord record = header->attached[r];
      if (!removed_self && record.pid == self.pid && record.start_ticks == self.start_ticks) {
        removed_self = true;
        continue;
      }
      if (process_alive({record.pid, record.start_ticks})) header->attached[live++] = record;
    }
    header->attached_count = live;
    // The last live user removes the name and the disk file; processes
    // still mapping them keep their memory until they unmap.
    if (live == 0 && same_file(shm_fd.get(), shm_path)) {
      ::shm_unlink(name.c_str());
      if (!disk_path.empty()) ::unlink(disk_path.c_str());
      spdlog::info("[autocache] removed {}{}{} (last user)", shm_path, disk_path.empty() ? "" : " and ", disk_path);
    }
  } catch (...) {
  }
  header = nullptr;
  disk = Mapping();
  shm = Mapping();
}

// --- index and slots (mutex held) -------------------------------------------

IndexEntry* ActivationCache::Impl::find(uint64_t key) {
  const uint64_t mask = index_mask();
  for (uint64_t i = mix(key) & mask, probes = 0; probes <= mask; i = (i + 1) & mask, ++probes) {
    if (!index[i].used) return nullptr;
    if (index[i].key == key) return &index[i];
  }
  return nullptr;
}

void ActivationCache::Impl::insert(uint64_t key, uint32_t location) {
  const uint64_t mask = index_mask();
  uint64_t i = mix(key) & mask;
  while (index[i].used) i = (i + 1) & mask;  // the table is at least twice the slot count
  index[i] = IndexEntry{key, 1, location};
}

void ActivationCache::Impl::erase(IndexEntry* entry) {
  // Backward-shift deletion keeps every probe chain unbroken (no tombstones).
  const uint64_t mask = index_mask();
  uint64_t hole = static_cast<uint64_t>(entry - index);
  index[hole].used = 0;
  for (uint64_t j = (hole + 1) & mask; index[j].used; j = (j + 1) & mask) {
    const uint64_t home = mix(index[j].key) & mask;
    // Entry j may fill the hole unless its home lies cyclically in (hole, j].
    const bool stays = (hole < j) ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    index[hole] = index[j];
    index[j].used = 0;
    hole = j;
  }
}

void ActivationCache::Impl::unindex(uint32_t location) {
  IndexEntry* entry = find(meta_of(location).key);
  if (entry != nullptr && entry->location == location) erase(entry);
}

void ActivationCache::Impl::free_slot(uint32_t location) {
  SlotMeta& slot = meta_of(location);
  unindex(location);
  const uint64_t seq = slot.seq.load(std::memory_order_relaxed);
  slot.seq.store(seq + ((seq & 1) ? 1 : 2), std::memory_order_release);
  slot.state = kFree;
  slot.referenced = 0;
  slot.doomed = 0;
  const bool disk_tier = (location & kDiskBit) != 0;
  uint64_t& count = disk_tier ? header->disk_free_count : header->shm_free_count;
  free_stack[(disk_tier ? shm_slots() : 0) + count] = location & ~kDiskBit;
  ++count;
}

uint32_t ActivationCache::Impl::pop_free(bool disk_tier) {
  uint64_t& count = disk_tier ? header->disk_free_count : header->shm_free_count;
  if (count == 0) return kNoSlot;
  --count;
  const uint32_t slot = free_stack[(disk_tier ? shm_slots() : 0) + count];
  return disk_tier ? (slot | kDiskBit) : slot;
}

bool ActivationCache::Impl::writer_alive(const SlotMeta& slot) const {
  if (slot.writer_pid == self.pid && slot.writer_start_ticks == self.start_ticks) return true;
  return process_alive({slot.writer_pid, slot.writer_start_ticks});
}

// A slot of the tier, free and out of the free stack; kNoSlot when every
// slot is being written. CLOCK: a referenced entry gets a second chance.
// A shm victim moves to the disk tier when it can; a disk victim is dropped.
uint32_t ActivationCache::Impl::allocate(bool disk_tier) {
  if (disk_tier && disk_payload == nullptr) return kNoSlot;
  uint32_t slot = pop_free(disk_tier);
  if (slot != kNoSlot) return slot;
  const uint64_t slots = disk_tier ? disk_slots() : shm_slots();
  uint64_t& hand = disk_tier ? header->disk_hand : header->shm_hand;
  const uint32_t tier_bit = disk_tier ? kDiskBit : 0;
  for (uint64_t step = 0; step < 2 * slots + 1; ++step) {
    const uint32_t location = static_cast<uint32_t>(hand % slots) | tier_bit;
    hand = (hand + 1) % slots;
    SlotMeta& candidate = meta_of(location);
    if (candidate.state == kFree) continue;  // on the free stack (cannot be here when that is empty)
    if (candidate.state == kWriting) {
      if (writer_alive(candidate)) continue;
      free_slot(location);  // its writer died mid-copy
      return pop_free(disk_tier);
    }
    if (candidate.referenced) {
      candidate.referenced = 0;
      continue;
    }
    if (!disk_tier) {
      const uint32_t target = allocate(true);
      if (target != kNoSlot) {
        SlotMeta& moved = meta_of(target);
        const uint64_t seq = moved.seq.load(std::memory_order_relaxed) + 1;
        moved.seq.store(seq, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        std::memcpy(payload_of(target), payload_of(location), slot_bytes);
        moved.key = candidate.key;
        moved.state = kPublished;
        moved.referenced = 0;
        moved.doomed = 0;
        moved.writer_pid = self.pid;
        moved.writer_start_ticks = self.start_ticks;
        moved.seq.store(seq + 1, std::memory_order_release);
        IndexEntry* entry = find(candidate.key);
        if (entry != nullptr) entry->location = target;
        const uint64_t old_seq = candidate.seq.load(std::memory_order_relaxed);
        candidate.seq.store(old_seq + 2, std::memory_order_release);
        candidate.state = kFree;
        evictions_to_disk.fetch_add(1, std::memory_order_relaxed);
        return location;
      }
    }
    free_slot(location);
    evictions_dropped.fetch_add(1, std::memory_order_relaxed);
    warn_once(kWarnDropped, "cache full (" + std::to_string(shm_slots()) + " shm + " + std::to_string(disk_slots())
                                + " disk slots): evicting entries, which are recomputed on their next use");
    return pop_free(disk_tier);
  }
  return kNoSlot;
}

void ActivationCache::Impl::rebuild_after_owner_death() {
  // The dead process may have stopped anywhere inside a critical section:
  // rebuild the index, free stacks and states from the slot metadata.
  std::memset(static_cast<void*>(index), 0, header->layout.index_capacity * sizeof(IndexEntry));
  header->shm_free_count = 0;
  header->disk_free_count = 0;
  const uint64_t total = shm_slots() + disk_slots();
  for (uint64_t s = 0; s < total; ++s) {
    const bool disk_tier = s >= shm_slots();
    const uint32_t location = disk_tier ? (static_cast<uint32_t>(s - shm_slots()) | kDiskBit) : static_cast<uint32_t>(s);
    SlotMeta& slot = meta[s];
    bool keep = false;
    if (slot.state == kPublished) {
      keep = (slot.seq.load(std::memory_order_relaxed) & 1) == 0 && find(slot.key) == nullptr;
    } else if (slot.state == kWriting && writer_alive(slot)) {
      keep = true;
      if (find(slot.key) != nullptr) slot.doomed = 1;
    }
    if (keep && !(slot.state == kWriting && slot.doomed)) {
      insert(slot.key, location);
    } else if (!keep) {
      slot.key = ~0ull;  // not in the index: free_slot's unindex finds nothing
      free_slot(location);
    }
  }
  header->shm_hand %= shm_slots();
  if (disk_slots() > 0) header->disk_hand %= disk_slots();
  warn_once(kWarnRecovered, "a process died holding the cache lock: rebuilt the index from the slot metadata");
}

bool ActivationCache::Impl::lock() noexcept {
  if (header == nullptr || unusable.load(std::memory_order_relaxed)) return false;
  timespec deadline {};
  clock_gettime(CLOCK_REALTIME, &deadline);
  const double timeout = options.lock_timeout_seconds;
  deadline.tv_sec += static_cast<time_t>(timeout);
  deadline.tv_nsec += static_cast<long>((timeout - std::floor(timeout)) * 1e9);
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  const int result = pthread_mutex_timedlock(&header->mutex, &deadline);
  if (result == 0) return true;
  if (result == EOWNERDEAD) {
    try {
      rebuild_after_owner_death();
    } catch (...) {
    }
    pthread_mutex_consistent(&header->mutex);
    return true;
  }
  if (result == ETIMEDOUT) {
    warn_once(kWarnLockTimeout, "timed out after " + std::to_string(timeout) + " s waiting for the lock of " + shm_path
                                    + ": treating the access as a miss");
    return false;
  }
  unusable = true;
  warn_once(kWarnUnusable, "the lock of " + shm_path + " is unusable (" + errno_text(result) + "): cache disabled");
  return false;
}

// --- put / get ----------------------------------------------------------------

template <typename Fill>
bool ActivationCache::Impl::put_with(const CacheKey& key, size_t size, Fill&& fill) noexcept {
  auto it = depths.find(key.depth);
  if (!key_in_range(key) || it == depths.end() || size != it->second.bytes) {
    puts_refused.fetch_add(1, std::memory_order_relaxed);
    warn_once(kWarnBadPut, "refused a put for sample " + std::to_string(key.sample) + " depth " + std::to_string(key.depth)
                               + " view " + std::to_string(key.view) + " of " + std::to_string(size)
                               + " bytes: key out of range, depth not registered or size not the registered entry size");
    return false;
  }
  if (!lock()) {
    puts_refused.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const uint64_t packed = pack(key);
  uint32_t location = kNoSlot;
  uint64_t seq = 0;
  {
    IndexEntry* existing = find(packed);
    if (existing != nullptr) {
      SlotMeta& slot = meta_of(existing->location);
      if (slot.state == kWriting && !writer_alive(slot)) {
        free_slot(existing->location);
      } else {
        unlock();
        puts_present.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    }
    location = allocate(false);
    if (location == kNoSlot) {
      unlock();
      puts_refused.fetch_add(1, std::memory_order_relaxed);
      warn_once(kWarnNoSlot, "no shm slot available (all are being written): refusing puts while that lasts");
      return false;
    }
    SlotMeta& slot = meta_of(location);
    seq = slot.seq.load(std::memory_order_relaxed) + 1;
    slot.seq.store(seq, std::memory_order_relaxed);
    slot.key = packed;
    slot.state = kWriting;
    slot.referenced = 0;
    slot.doomed = 0;
    slot.writer_pid = self.pid;
    slot.writer_start_ticks = self.start_ticks;
    insert(packed, location);
  }
  unlock();
  std::atomic_thread_fence(std::memory_order_release);
  fill(payload_of(location));
  if (!lock()) {
    // The slot stays "writing" under this live process: a miss for readers,
    // reclaimed once this process is gone.
    warn_once(kWarnPublishLost, "could not publish an entry (lock unavailable): it is lost");
    puts_refused.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  SlotMeta& slot = meta_of(location);
  bool published = false;
  if (slot.state == kWriting && slot.seq.load(std::memory_order_relaxed) == seq) {
    if (slot.doomed) {
      free_slot(location);
    } else {
      slot.state = kPublished;
      slot.seq.store(seq + 1, std::memory_order_release);
      published = true;
    }
  }
  unlock();
  (published ? puts : puts_refused).fetch_add(1, std::memory_order_relaxed);
  return published;
}

template <typename Copy>
bool ActivationCache::Impl::get_with(const CacheKey& key, size_t size, Copy&& copy) noexcept {
  auto it = depths.find(key.depth);
  if (!key_in_range(key) || it == depths.end() || size != it->second.bytes) {
    misses.fetch_add(1, std::memory_order_relaxed);
    warn_once(kWarnBadGet, "get for sample " + std::to_string(key.sample) + " depth " + std::to_string(key.depth)
                               + " view " + std::to_string(key.view) + " with a " + std::to_string(size)
                               + "-byte buffer: key out of range, depth not registered or wrong size (a miss)");
    return false;
  }
  if (!lock()) {
    misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const IndexEntry* entry = find(pack(key));
  SlotMeta* slot = nullptr;
  const uint8_t* source = nullptr;
  uint64_t seq = 0;
  if (entry != nullptr) {
    slot = &meta_of(entry->location);
    source = payload_of(entry->location);
    seq = slot->seq.load(std::memory_order_relaxed);
    if (slot->state != kPublished || (seq & 1) != 0 || source == nullptr) {
      source = nullptr;
    } else {
      slot->referenced = 1;
    }
  }
  unlock();
  if (source == nullptr) {
    misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  copy(source);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (slot->seq.load(std::memory_order_relaxed) != seq) {  // evicted or recycled while copying
    misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  hits.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// --- public API -------------------------------------------------------------------

ActivationCache::ActivationCache(const ActivationCacheOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->validate_and_plan();
  impl_->self = current_process();
  if (options.remove_stale) remove_stale_caches(options.disk_dir);
  impl_->attach();
}

ActivationCache::~ActivationCache() { impl_->detach(); }

bool ActivationCache::put(const CacheKey& key, const void* data, size_t size) noexcept {
  const size_t bytes = size;
  return impl_->put_with(key, size, [&](uint8_t* slot) { std::memcpy(slot, data, bytes); });
}

bool ActivationCache::put_f32(const CacheKey& key, const float* values, size_t count) noexcept {
  const CacheDtype dtype = impl_->options.dtype;
  return impl_->put_with(key, count * cache_dtype_size(dtype),
                         [&](uint8_t* slot) { convert_from_f32(values, count, dtype, slot); });
}

bool ActivationCache::get(const CacheKey& key, void* out, size_t size) noexcept {
  return impl_->get_with(key, size, [&](const uint8_t* slot) { std::memcpy(out, slot, size); });
}

bool ActivationCache::get_f32(const CacheKey& key, float* out, size_t count) noexcept {
  const CacheDtype dtype = impl_->options.dtype;
  return impl_->get_with(key, count * cache_dtype_size(dtype),
                         [&](const uint8_t* slot) { convert_to_f32(slot, count, dtype, out); });
}

CacheTier ActivationCache::locate(const CacheKey& key) noexcept {
  if (!key_in_range(key) || !impl_->lock()) return CacheTier::kNone;
  CacheTier tier = CacheTier::kNone;
  if (const IndexEntry* entry = impl_->find(pack(key))) {
    if (impl_->meta_of(entry->location).state == kPublished) {
      tier = (entry->location & kDiskBit) ? CacheTier::kDisk : CacheTier::kShm;
    }
  }
  impl_->unlock();
  return tier;
}

std::vector<CacheKey> ActivationCache::keys_at_depth(int depth) noexcept {
  std::vector<CacheKey> keys;
  if (!impl_->lock()) return keys;
  try {
    const uint64_t total = impl_->shm_slots() + impl_->disk_slots();
    for (uint64_t s = 0; s < total; ++s) {
      const SlotMeta& slot = impl_->meta[s];
      if (slot.state == kPublished && unpack(slot.key).depth == depth) keys.push_back(unpack(slot.key));
    }
  } catch (...) {  // allocation failure: return what was gathered
  }
  impl_->unlock();
  std::sort(keys.begin(), keys.end(), [](const CacheKey& a, const CacheKey& b) { return pack(a) < pack(b); });
  return keys;
}

bool ActivationCache::erase(const CacheKey& key) noexcept {
  if (!key_in_range(key) || !impl_->lock()) return false;
  bool erased = false;
  if (const IndexEntry* entry = impl_->find(pack(key))) {
    const uint32_t location = entry->location;
    SlotMeta& slot = impl_->meta_of(location);
    if (slot.state == kPublished || !impl_->writer_alive(slot)) {
      erased = slot.state == kPublished;
      impl_->free_slot(location);
    } else {
      slot.doomed = 1;  // being written: its writer frees it instead of publishing
    }
  }
  impl_->unlock();
  return erased;
}

size_t ActivationCache::drop_depth(int depth) noexcept {
  if (!impl_->lock()) return 0;
  size_t dropped = 0;
  const uint64_t shm_slots = impl_->shm_slots();
  const uint64_t total = shm_slots + impl_->disk_slots();
  for (uint64_t s = 0; s < total; ++s) {
    SlotMeta& slot = impl_->meta[s];
    if (slot.state == kFree || unpack(slot.key).depth != depth) continue;
    const uint32_t location = s < shm_slots ? static_cast<uint32_t>(s) : (static_cast<uint32_t>(s - shm_slots) | kDiskBit);
    if (slot.state == kWriting && impl_->writer_alive(slot)) {
      slot.doomed = 1;  // its writer frees it instead of publishing
      continue;
    }
    if (slot.state == kPublished) ++dropped;
    impl_->free_slot(location);
  }
  impl_->unlock();
  return dropped;
}

CacheStats ActivationCache::stats() noexcept {
  CacheStats s;
  Impl& impl = *impl_;
  s.hits = impl.hits.load();
  s.misses = impl.misses.load();
  s.puts = impl.puts.load();
  s.puts_present = impl.puts_present.load();
  s.puts_refused = impl.puts_refused.load();
  s.evictions_to_disk = impl.evictions_to_disk.load();
  s.evictions_dropped = impl.evictions_dropped.load();
  try {
    for (const auto& [depth, info] : impl.depths) s.bytes_per_sample[depth] = info.bytes;
  } catch (...) {
  }
  if (!impl.lock()) return s;
  s.shm_slots = impl.shm_slots();
  s.disk_slots = impl.disk_slots();
  try {
    for (uint64_t slot = 0; slot < s.shm_slots + s.disk_slots; ++slot) {
      const SlotMeta& m = impl.meta[slot];
      if (m.state != kPublished) continue;
      (slot < s.shm_slots ? s.shm_entries : s.disk_entries) += 1;
      s.entries_per_depth[unpack(m.key).depth] += 1;
    }
  } catch (...) {
  }
  impl.unlock();
  return s;
}

CacheDtype ActivationCache::dtype() const { return impl_->options.dtype; }

size_t ActivationCache::entry_bytes(int depth) const {
  auto it = impl_->depths.find(depth);
  return it == impl_->depths.end() ? 0 : it->second.bytes;
}

size_t ActivationCache::entry_elements(int depth) const {
  auto it = impl_->depths.find(depth);
  return it == impl_->depths.end() ? 0 : it->second.elements;
}

std::vector<int64_t> ActivationCache::shape(int depth) const {
  auto it = impl_->depths.find(depth);
  return it == impl_->depths.end() ? std::vector<int64_t>{} : it->second.shape;
}

const std::string& ActivationCache::segment_name() const { return impl_->name; }
const std::string& ActivationCache::disk_path() const { return impl_->disk_path; }

// --- stale segments -------------------------------------------------------------

size_t remove_stale_caches(const std::string& disk_dir) noexcept {
  size_t removed = 0;
  try {
    std::vector<std::string> names;
    if (DIR* dir = ::opendir(kShmDir)) {
      while (const dirent* entry = ::readdir(dir)) {
        const std::string file = entry->d_name;
        if (file.rfind(kPrefix, 0) == 0) names.push_back(file);
      }
      ::closedir(dir);
    }
    for (const std::string& file : names) {
      const std::string name = "/" + file;
      const std::string path = std::string(kShmDir) + name;
      FileDescriptor fd(::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0));
      if (!fd.valid()) continue;
      // A creator holds this lock from before sizing the segment until its
      // header is complete; a busy segment is in use.
      FlockGuard guard(fd.get(), false);
      if (!guard.locked() || !same_file(fd.get(), path)) continue;
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) continue;
      std::string reason = "unreadable header";
      std::string segment_disk_path;
      if (static_cast<uint64_t>(st.st_size) >= sizeof(Header)) {
        Mapping mapping = Mapping::map(fd.get(), sizeof(Header));
        if (mapping.valid()) {
          auto* header = reinterpret_cast<Header*>(mapping.data());
          if (header_valid(*header, static_cast<uint64_t>(st.st_size))) {
            if (any_attached_alive(*header)) continue;
            reason = "job '" + std::string(header->layout.job_id) + "', processes " + attached_pids(*header) + " gone";
            segment_disk_path = header->layout.disk_path;
          } else {
            reason = "corrupt header";
          }
        }
      } else if (st.st_size == 0) {
        // Being created right now (shm_open before flock): the creator
        // retries if we remove it, but an empty file is not worth a race.
        continue;
      }
      if (::shm_unlink(name.c_str()) != 0) continue;
      ++removed;
      if (!segment_disk_path.empty() && ::unlink(segment_disk_path.c_str()) == 0) ++removed;
      spdlog::info("[autocache] removed stale segment {} ({}){}{}", path, reason,
                   segment_disk_path.empty() ? "" : " and ", segment_disk_path);
    }
    if (!disk_dir.empty()) {
      const std::string suffix = "-" + host_identity().file_tag() + ".slots";
      std::error_code ec;
      for (std::filesystem::directory_iterator it(disk_dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string file = it->path().filename().string();
        if (file.rfind(kPrefix, 0) != 0 || file.size() <= std::strlen(kPrefix) + suffix.size()
            || file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) {
          continue;
        }
        const std::string job = file.substr(std::strlen(kPrefix), file.size() - std::strlen(kPrefix) - suffix.size());
        const std::string segment = std::string(kShmDir) + "/" + kPrefix + job;
        struct stat st {};
        if (::stat(segment.c_str(), &st) == 0) continue;
        if (::unlink(it->path().c_str()) == 0) {
          ++removed;
          spdlog::info("[autocache] removed orphaned disk tier file {} (no segment {})", it->path().string(), segment);
        }
      }
    }
  } catch (...) {
  }
  return removed;
}

}  // namespace pipet
