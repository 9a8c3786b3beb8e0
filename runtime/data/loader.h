// Data loading machinery: a small fixed thread pool that a dataset uses to
// decode one batch's samples in parallel, and a prefetcher that produces the
// next batches on a background thread while the training step runs.
#pragma once

#include "runtime/data/dataset.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pipet {

// The decode thread count for data.decode_threads: `requested` when > 0,
// otherwise the hardware threads divided by the ranks on this node (the MPI
// launcher's local size), at least 1.
int resolve_decode_threads(int64_t requested);

// A fixed pool of worker threads for data-parallel loops over a batch. The
// calling thread takes part, so a pool of size 1 has no worker threads and
// runs everything inline.
class DecodePool {
 public:
  explicit DecodePool(int threads);
  ~DecodePool();  // joins the workers; never throws
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(i) for every i in [0, count) and returns when all are done.
  // Every task runs even when some throw; afterwards the exception of the
  // lowest failing i is rethrown (so which error surfaces does not depend on
  // timing). Calls from several threads are serialised.
  void run(int64_t count, const std::function<void(int64_t)>& task);

 private:
  struct Job;
  void shutdown() noexcept;
  void worker_loop();
  static void work_on(Job& job);

  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// Produces batches of a dataset ahead of their use, in submission order.
//
// Contract: the consumer submit()s the index lists of upcoming batches (as
// many as it likes, typically depth + 1 ahead) and calls next() once per
// submitted batch. A background thread builds them in order, keeping at most
// `depth` finished batches waiting; with depth 0 there is no thread and
// next() builds the batch itself. An exception thrown while building a batch
// is rethrown by the next() that would have returned it, with its original
// type and message; later batches are unaffected. When CUDA is available
// (PIPET_WITH_CUDA builds) finished batches are copied to pinned host memory
// so the host-to-device copy can be asynchronous. The destructor stops the
// thread (after the batch in progress, if any) and discards unconsumed
// batches; it never blocks on the consumer and never throws.
class BatchPrefetcher {
 public:
  BatchPrefetcher(std::shared_ptr<const Dataset> dataset, int64_t depth);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // Queues the batch of `indices` in `epoch` (epoch seeds augmentation).
  void submit(std::vector<int64_t> indices, int64_t epoch);

  // The oldest submitted batch not yet returned, waiting for it if needed.
  // Throws an internal Error when nothing is outstanding.
  Batch next();

  // Submitted batches that next() has not yet returned.
  int64_t outstanding() const;
  int64_t depth() const { return depth_; }

 private:
  struct Request {
    std::vector<int64_t> indices;
    int64_t epoch = 0;
  };
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };

  Result build(const Request& request) const;
  void producer_loop();

  std::shared_ptr<const Dataset> dataset_;
  int64_t depth_;
  bool pin_memory_ = false;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Request> requests_;  // submitted, not yet started
  std::deque<Result> ready_;      // built, not yet returned
  bool building_ = false;         // the producer is building a batch now
  bool stopping_ = false;
  std::thread producer_;
};

}  // namespace pipet
