// The activation cache across processes (fork): concurrent writers and
// readers never see a torn value, processes killed inside the lock or in
// the middle of a write never wedge the others, and segments of killed jobs
// are found and removed.
#include "autocache/activation_cache.h"
#include "runtime/core/host.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/autocache/cache_test_util.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

namespace pipet {
namespace {

using testing::cache_options;
using testing::entry_values;
using testing::LogCapture;
using testing::unique_job;

// Runs `body` in a child process; returns its pid. The child exits with
// body's return value and never returns into the test.
template <typename Body>
pid_t spawn(Body&& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (...) {
      code = 98;
    }
    ::_exit(code);
  }
  return pid;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A one-byte "I am running" signal from a child to the parent.
class ReadyPipe {
 public:
  ReadyPipe() { EXPECT_EQ(::pipe(fds_), 0); }
  ~ReadyPipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  bool signal() const {
    const char byte = 'r';
    return ::write(fds_[1], &byte, 1) == 1;
  }
  bool wait() const {
    char byte = 0;
    return ::read(fds_[0], &byte, 1) == 1;
  }

 private:
  int fds_[2] = {-1, -1};
};

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  wait_exit_code(pid);
}

TEST(ActivationCacheProcesses, ConcurrentWritersAndReadersNeverSeeTornValues) {
  testing::TempDir dir;
  const size_t count = 2048;  // 8 KiB entries: copies long enough to overlap
  ActivationCacheOptions options = cache_options(unique_job("concurrent"), {static_cast<int64_t>(count)}, 6, 6, dir.path());
  ActivationCache parent(options);
  // One process writes a fixed set first; the others must hit it.
  for (uint64_t s = 1000; s < 1008; ++s) {
    const CacheKey key{s, 1, 0};
    ASSERT_TRUE(parent.put_f32(key, entry_values(key, count).data(), count));
  }
  options.remove_stale = false;
  // Barrier: every child reads the shared entries before any child writes.
  int read_done[2], go[2];
  ASSERT_EQ(::pipe(read_done), 0);
  ASSERT_EQ(::pipe(go), 0);
  std::vector<pid_t> children;
  for (int child = 0; child < 4; ++child) {
    children.push_back(spawn([&options, child, count, &read_done, &go] {
      ActivationCache cache(options);
      std::vector<float> back(count);
      int shared_hits = 0;
      for (uint64_t s = 1000; s < 1008; ++s) {
        const CacheKey key{s, 1, 0};
        if (cache.get_f32(key, back.data(), count)) {
          if (back != entry_values(key, count)) return 3;
          ++shared_hits;
        }
      }
      char byte = 'r';
      if (::write(read_done[1], &byte, 1) != 1 || ::read(go[0], &byte, 1) != 1) return 6;
      if (shared_hits != 8) return 4;
      std::mt19937 rng(static_cast<unsigned>(child) * 7919u + 1);
      uint64_t hits = 0, puts = 0;
      const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
      while (std::chrono::steady_clock::now() < end) {
        const CacheKey key{rng() % 40, 1, 0};
        if (rng() % 2 == 0) {
          puts += cache.put_f32(key, entry_values(key, count).data(), count) ? 1 : 0;
        } else if (cache.get_f32(key, back.data(), count)) {
          if (back != entry_values(key, count)) return 3;  // torn or recycled value
          ++hits;
        }
      }
      const CacheStats s = cache.stats();
      if (hits == 0 || puts == 0 || s.hits != hits + static_cast<uint64_t>(shared_hits)) return 5;
      return 0;
    }));
  }
  for (size_t i = 0; i < children.size(); ++i) {
    char byte = 0;
    ASSERT_EQ(::read(read_done[0], &byte, 1), 1);
  }
  const std::string bytes(children.size(), 'g');
  ASSERT_EQ(::write(go[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  for (int fd : {read_done[0], read_done[1], go[0], go[1]}) ::close(fd);
  for (pid_t pid : children) EXPECT_EQ(wait_exit_code(pid), 0) << "3 = torn read, 4 = shared entries missed, 5 = no traffic";
  const CacheStats s = parent.stats();
  EXPECT_LE(s.shm_entries, 6u);
  EXPECT_LE(s.disk_entries, 6u);
  EXPECT_GT(s.shm_entries + s.disk_entries, 6u);  // the disk tier took overflow
  // Every surviving entry is intact.
  for (const CacheKey& key : parent.keys_at_depth(1)) {
    std::vector<float> back(count);
    ASSERT_TRUE(parent.get_f32(key, back.data(), count));
    EXPECT_EQ(back, entry_values(key, count)) << key.sample;
  }
}

TEST(ActivationCacheProcesses, ProcessesKilledInsideTheLockOrMidWriteNeverWedgeTheCache) {
  // 1. Kill processes that spend nearly all their time holding the lock
  //    (stats() scans every slot under it): the next locker gets the mutex
  //    as EOWNERDEAD and rebuilds the index.
  {
    ActivationCacheOptions options = cache_options(unique_job("lockkill"), {16}, 20000);
    options.lock_timeout_seconds = 2.0;
    LogCapture log;
    ActivationCache cache(options);
    for (uint64_t s = 0; s < 20000; ++s) {
      const CacheKey key{s, 1, 0};
      ASSERT_TRUE(cache.put_f32(key, entry_values(key, 16).data(), 16));
    }
    options.remove_stale = false;
    std::mt19937 rng(3);
    for (int round = 0; round < 6; ++round) {
      ReadyPipe ready;
      const pid_t pid = spawn([&options, &ready] {
        ActivationCache child(options);
        child.stats();
        if (!ready.signal()) return 1;
        for (;;) child.stats();
        return 0;
      });
      ASSERT_TRUE(ready.wait());
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 20));
      kill_and_reap(pid);
      const CacheKey key{rng() % 20000, 1, 0};
      std::vector<float> back(16);
      ASSERT_TRUE(cache.get_f32(key, back.data(), 16)) << "round " << round;  // not wedged, not lost
      EXPECT_EQ(back, entry_values(key, 16));
    }
    EXPECT_EQ(log.count("rebuilt the index"), 1) << log.text();  // at least one kill landed in the lock; warned once
    EXPECT_EQ(cache.stats().shm_entries, 20000u);
  }
  // 2. Kill writers in the middle of copying 1 MiB entries: their slots stay
  //    "writing" under a dead pid; readers miss them, a new put reclaims them.
  {
    const size_t count = 1 << 18;
    ActivationCacheOptions options = cache_options(unique_job("writekill"), {static_cast<int64_t>(count)}, 16);
    ActivationCache cache(options);
    options.remove_stale = false;
    std::mt19937 rng(5);
    for (int round = 0; round < 4; ++round) {
      ReadyPipe ready;
      const pid_t pid = spawn([&options, count, &ready] {
        ActivationCache child(options);
        const std::vector<float> values(count, 1.0f);
        if (!ready.signal()) return 1;
        for (uint64_t i = 0;; ++i) {
          child.put_f32({i % 12, 1, 0}, values.data(), count);
          if (i % 12 == 11) child.drop_depth(1);
        }
        return 0;
      });
      ASSERT_TRUE(ready.wait());
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 30));
      kill_and_reap(pid);
    }
    for (uint64_t s = 0; s < 12; ++s) {
      const CacheKey key{s, 1, 0};
      std::vector<float> back(count);
      if (cache.get_f32(key, back.data(), count)) {
        EXPECT_EQ(back, std::vector<float>(count, 1.0f));  // a child's published value, complete
        continue;
      }
      const std::vector<float> values = entry_values(key, count);
      ASSERT_TRUE(cache.put_f32(key, values.data(), count)) << "sample " << s << " stuck";
      ASSERT_TRUE(cache.get_f32(key, back.data(), count));
      EXPECT_EQ(back, values);
    }
    EXPECT_EQ(cache.stats().shm_entries, 12u);
  }
}

TEST(ActivationCacheProcesses, SegmentsOfKilledJobsAreRemovedByTheNextRun) {
  testing::TempDir dir;
  // A job whose only process is SIGKILLed leaves its segment and disk file.
  auto crash = [&](const std::string& job) {
    int ready[2];
    EXPECT_EQ(::pipe(ready), 0);
    const pid_t pid = spawn([&] {
      ActivationCache cache(cache_options(job, {64}, 4, 4, dir.path()));
      const CacheKey key{1, 1, 0};
      cache.put_f32(key, entry_values(key, 64).data(), 64);
      const char byte = 'r';
      if (::write(ready[1], &byte, 1) != 1) return 1;
      ::pause();
      return 0;
    });
    char byte = 0;
    EXPECT_EQ(::read(ready[0], &byte, 1), 1);
    ::close(ready[0]);
    ::close(ready[1]);
    kill_and_reap(pid);
  };
  const std::string dead_job = unique_job("crashed");
  crash(dead_job);
  const std::string dead_segment = "/pipet-cache-" + dead_job;
  ASSERT_TRUE(testing::shm_exists(dead_segment));
  // Slot files carry the machine's tag, not the bare host name.
  const std::string host = host_identity().file_tag();
  const std::string dead_disk = dir.file("pipet-cache-" + dead_job + "-" + host + ".slots");
  ASSERT_TRUE(testing::file_exists(dead_disk));
  // An orphaned disk file of this host (its segment is long gone).
  const std::string orphan = dir.file("pipet-cache-ghost-job-" + host + ".slots");
  testing::write_text(orphan, "stale");
  {
    LogCapture log;
    ActivationCache next(cache_options(unique_job("next"), {64}, 4, 4, dir.path()));
    EXPECT_EQ(log.count("removed stale segment /dev/shm/pipet-cache-" + dead_job), 1) << log.text();
    EXPECT_EQ(log.count("removed orphaned disk tier file"), 1) << log.text();
    EXPECT_FALSE(testing::shm_exists(dead_segment));
    EXPECT_FALSE(testing::file_exists(dead_disk));
    EXPECT_FALSE(testing::file_exists(orphan));
  }
  // The same job id run again after a crash starts from a fresh segment,
  // even without the scan.
  const std::string rerun_job = unique_job("rerun");
  crash(rerun_job);
  {
    LogCapture log;
    ActivationCacheOptions options = cache_options(rerun_job, {64}, 4, 4, dir.path());
    options.remove_stale = false;
    ActivationCache again(options);
    EXPECT_EQ(log.count("removing stale segment"), 1) << log.text();
    std::vector<float> back(64);
    EXPECT_FALSE(again.get_f32({1, 1, 0}, back.data(), 64));  // the dead run's entry is not served
    EXPECT_EQ(again.stats().shm_entries, 0u);
  }
  EXPECT_FALSE(testing::shm_exists("/pipet-cache-" + rerun_job));
  EXPECT_FALSE(testing::file_exists(dir.file("pipet-cache-" + rerun_job + "-" + host + ".slots")));
}

}  // namespace
}  // namespace pipet
