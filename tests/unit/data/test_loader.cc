// The decode pool and the batch prefetcher: every task once, the lowest
// failing task's exception, batches in submission order, exceptions with
// their original type, bounded look-ahead, and a clean shutdown.
#include "runtime/core/errors.h"
#include "runtime/data/loader.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <thread>

namespace pipet {
namespace {

using testing::error_message;
using Clock = std::chrono::steady_clock;

// A real, tiny Dataset: sample i has label i % 7 and a one-value "image" i.
// Index `failing` throws `Failure`; each batch takes `delay` to build.
template <typename Failure = DataError>
class CountingDataset : public Dataset {
 public:
  explicit CountingDataset(int64_t failing = -1, std::chrono::milliseconds delay = {})
      : failing_(failing), delay_(delay) {}
  std::string name() const override { return "counting"; }
  Modality modality() const override { return Modality::kImage; }
  int64_t size() const override { return 1000; }
  int64_t num_classes() const override { return 7; }
  int64_t label(int64_t index) const override { return index % 7; }
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override {
    ++built_;
    std::this_thread::sleep_for(delay_);
    Batch b;
    b.sample_ids = torch::tensor(indices, torch::kInt64);
    b.labels = b.sample_ids.remainder(7);
    b.pixel_values = b.sample_ids.to(torch::kFloat32).view({-1, 1, 1, 1}) + 1000.0 * epoch;
    for (int64_t i : indices)
      if (i == failing_) throw Failure("sample " + std::to_string(i) + " is broken");
    return b;
  }
  int64_t built() const { return built_.load(); }

 private:
  int64_t failing_;
  std::chrono::milliseconds delay_;
  mutable std::atomic<int64_t> built_{0};
};

TEST(DecodePool, RunsEveryTaskOnceAndRethrowsTheLowestFailure) {
  EXPECT_EQ(resolve_decode_threads(3), 3);
  EXPECT_GE(resolve_decode_threads(0), 1);
  {
    const int unlimited = resolve_decode_threads(0);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1000000", 1);
    EXPECT_EQ(resolve_decode_threads(0), 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1", 1);
    EXPECT_EQ(resolve_decode_threads(0), unlimited);
    unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  }

  for (int threads : {1, 4}) {
    DecodePool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    std::vector<std::atomic<int>> visits(997);
    std::set<std::thread::id> ids;
    std::mutex ids_mutex;
    pool.run(997, [&](int64_t i) {
      ++visits[static_cast<size_t>(i)];
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      std::lock_guard<std::mutex> lock(ids_mutex);
      ids.insert(std::this_thread::get_id());
    });
    for (size_t i = 0; i < visits.size(); ++i) ASSERT_EQ(visits[i].load(), 1) << i;
    if (threads == 1) EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
    else EXPECT_GT(ids.size(), 1u);

    // Every task still runs; the lowest failing index's exception surfaces.
    std::atomic<int> ran{0};
    const std::string m = error_message<ConfigError>([&] {
      pool.run(50, [&](int64_t i) {
        ++ran;
        if (i == 31) throw DataError("late " + std::to_string(i));
        if (i == 7 || i == 40) throw ConfigError("task " + std::to_string(i));
      });
    });
    EXPECT_EQ(m, "task 7");
    EXPECT_EQ(ran.load(), 50);
    // Still usable afterwards, also from two threads at once.
    std::atomic<int64_t> sum{0};
    std::thread other([&] { pool.run(100, [&](int64_t i) { sum += i; }); });
    pool.run(100, [&](int64_t i) { sum += i; });
    other.join();
    EXPECT_EQ(sum.load(), 2 * 4950);
    pool.run(0, [](int64_t) { FAIL(); });
  }
}

TEST(BatchPrefetcher, ReturnsBatchesInOrderAndRethrowsWithTheOriginalType) {
  for (int64_t depth : {0, 1, 3}) {
    auto data = std::make_shared<CountingDataset<ModelError>>(/*failing=*/42,
                                                              std::chrono::milliseconds(2));
    BatchPrefetcher prefetcher(data, depth);
    EXPECT_EQ(prefetcher.depth(), depth);
    for (int64_t b = 0; b < 12; ++b) prefetcher.submit({b * 5, b * 5 + 1, b * 5 + 2}, b / 4);
    EXPECT_EQ(prefetcher.outstanding(), 12);
    for (int64_t b = 0; b < 12; ++b) {
      if (b * 5 <= 42 && 42 < b * 5 + 3) {  // batch 8 holds index 42
        const std::string m = error_message<ModelError>([&] { prefetcher.next(); });
        EXPECT_EQ(m, "sample 42 is broken") << depth;
        continue;
      }
      const Batch batch = prefetcher.next();
      ASSERT_EQ(batch.size(), 3);
      EXPECT_EQ(batch.sample_ids[0].item<int64_t>(), b * 5) << depth;
      EXPECT_EQ(batch.pixel_values[2].item<float>(), b * 5 + 2 + 1000.0 * (b / 4));
    }
    EXPECT_EQ(prefetcher.outstanding(), 0);
    EXPECT_EQ(data->built(), 12);
    const std::string m = error_message<Error>([&] { prefetcher.next(); });
    EXPECT_NE(m.find("without a submitted batch"), std::string::npos) << m;
  }
}

TEST(BatchPrefetcher, LooksAheadAtMostDepthAndShutsDownWithPendingWork) {
  auto data = std::make_shared<CountingDataset<>>(-1, std::chrono::milliseconds(1));
  {
    BatchPrefetcher prefetcher(data, 2);
    for (int64_t b = 0; b < 10; ++b) prefetcher.submit({b}, 0);
    // The producer fills the queue to depth and stops there.
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (data->built() < 2 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(data->built(), 2);
    EXPECT_EQ(prefetcher.next().sample_ids[0].item<int64_t>(), 0);
    while (data->built() < 3 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(data->built(), 3);
    EXPECT_EQ(prefetcher.outstanding(), 9);
  }  // 9 unconsumed batches: the destructor returns without building them
  EXPECT_EQ(data->built(), 3);

  // Destroyed while a slow batch is being built: waits for that one only.
  auto slow = std::make_shared<CountingDataset<>>(-1, std::chrono::milliseconds(300));
  const auto start = Clock::now();
  {
    BatchPrefetcher prefetcher(slow, 4);
    for (int64_t b = 0; b < 20; ++b) prefetcher.submit({b}, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_LE(slow->built(), 1);

  // A standard-library exception from the producer keeps its class too.
  auto failing = std::make_shared<CountingDataset<std::invalid_argument>>(3);
  BatchPrefetcher prefetcher(failing, 1);
  prefetcher.submit({3}, 0);
  EXPECT_THROW(prefetcher.next(), std::invalid_argument);
}

}  // namespace
}  // namespace pipet
