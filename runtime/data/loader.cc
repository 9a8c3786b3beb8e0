#include "runtime/data/loader.h"

#include "pipet/build_config.h"
#include "runtime/core/errors.h"
#include "runtime/core/threads.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>

namespace pipet {

int resolve_decode_threads(int64_t requested) {
  if (requested > 0) return static_cast<int>(std::min<int64_t>(requested, 1024));
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / ranks_on_this_node());
}

// ---- DecodePool --------------------------------------------------------------

struct DecodePool::Job {
  Job(int64_t n, const std::function<void(int64_t)>* fn) : count(n), task(fn), remaining(n) {}
  const int64_t count;
  const std::function<void(int64_t)>* task;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> remaining;
  std::mutex error_mutex;
  int64_t error_index = std::numeric_limits<int64_t>::max();
  std::exception_ptr error;
};

DecodePool::DecodePool(int threads) {
  PIPET_CHECK(threads >= 1, "decode pool of " + std::to_string(threads) + " threads");
  try {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    shutdown();  // joins the threads already started
    throw;
  }
}

DecodePool::~DecodePool() { shutdown(); }

void DecodePool::shutdown() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) {
    try {
      if (worker.joinable()) worker.join();
    } catch (const std::exception& e) {
      spdlog::error("[data] decode pool shutdown: {}", e.what());
    }
  }
  workers_.clear();
}

void DecodePool::work_on(Job& job) {
  for (;;) {
    const int64_t i = job.next.fetch_add(1);
    if (i >= job.count) return;
    try {
      (*job.task)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(job.error_mutex);
      if (i < job.error_index) {
        job.error_index = i;
        job.error = std::current_exception();
      }
    }
    job.remaining.fetch_sub(1);
  }
}

void DecodePool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
    }
    if (!job) continue;
    work_on(*job);
    // The caller waits for `remaining` to reach 0; tell it under the lock so
    // the wake-up cannot slip between its check and its wait.
    std::lock_guard<std::mutex> lock(mutex_);
    finished_.notify_all();
  }
}

void DecodePool::run(int64_t count, const std::function<void(int64_t)>& task) {
  if (count <= 0) return;
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  auto job = std::make_shared<Job>(count, &task);
  if (workers_.empty() || count == 1) {
    work_on(*job);
  } else {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = job;
      ++generation_;
    }
    wake_.notify_all();
    work_on(*job);
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [&] { return job->remaining.load() == 0; });
    job_.reset();
  }
  if (job->error) std::rethrow_exception(job->error);
}

// ---- BatchPrefetcher ---------------------------------------------------------

BatchPrefetcher::BatchPrefetcher(std::shared_ptr<const Dataset> dataset, int64_t depth)
    : dataset_(std::move(dataset)), depth_(depth) {
  PIPET_CHECK(dataset_ != nullptr, "prefetcher without a dataset");
  PIPET_CHECK(depth_ >= 0, "prefetch depth " + std::to_string(depth_));
#if PIPET_WITH_CUDA
  pin_memory_ = torch::cuda::is_available();
#endif
  if (depth_ > 0) producer_ = std::thread([this] { producer_loop(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  try {
    if (producer_.joinable()) producer_.join();
  } catch (const std::exception& e) {
    spdlog::error("[data] prefetcher shutdown: {}", e.what());
  }
}

void BatchPrefetcher::submit(std::vector<int64_t> indices, int64_t epoch) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.push_back(Request{std::move(indices), epoch});
  }
  changed_.notify_all();
}

int64_t BatchPrefetcher::outstanding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(requests_.size() + ready_.size()) + (building_ ? 1 : 0);
}

BatchPrefetcher::Result BatchPrefetcher::build(const Request& request) const {
  Result result;
  try {
    result.batch = dataset_->get_batch(request.indices, request.epoch);
    if (pin_memory_) {
      for (torch::Tensor* t : {&result.batch.pixel_values, &result.batch.input_ids,
                               &result.batch.attention_mask, &result.batch.token_type_ids,
                               &result.batch.labels, &result.batch.sample_ids}) {
        if (t->defined()) *t = t->pin_memory();
      }
    }
  } catch (...) {
    result.error = std::current_exception();
  }
  return result;
}

void BatchPrefetcher::producer_loop() {
  for (;;) {
    Request request;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] {
        return stopping_ ||
               (!requests_.empty() && static_cast<int64_t>(ready_.size()) < depth_);
      });
      if (stopping_) return;
      request = std::move(requests_.front());
      requests_.pop_front();
      building_ = true;
    }
    Result result = build(request);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.push_back(std::move(result));
      building_ = false;
    }
    changed_.notify_all();
  }
}

Batch BatchPrefetcher::next() {
  Result result;
  if (depth_ == 0) {
    Request request;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      PIPET_CHECK(!requests_.empty(), "BatchPrefetcher::next() without a submitted batch");
      request = std::move(requests_.front());
      requests_.pop_front();
    }
    result = build(request);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    PIPET_CHECK(!ready_.empty() || building_ || !requests_.empty(),
                "BatchPrefetcher::next() without a submitted batch");
    changed_.wait(lock, [&] { return !ready_.empty(); });
    result = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    changed_.notify_all();  // room for the producer
  }
  if (result.error) std::rethrow_exception(result.error);
  return std::move(result.batch);
}

}  // namespace pipet
