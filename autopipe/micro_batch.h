// Micro-batch count M per pipeline length K. GPipe's M >= 4K is not the
// best choice with data parallelism (finer micro-batches overlap less with
// the gradient all-reduce; the paper measured 2K best at K = 8, 4K at K = 4,
// 8K at K = 2), so the engine profiles a few candidates once per K and keeps
// the fastest. This file holds the pure part: candidates, the untuned
// default, and the choice from a table of measurements. Persisting the table
// between runs is the engine's job.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace pipet {

// Candidates to profile for K stages and a per-pipeline batch: K, 2K, 4K, 8K
// that divide the batch; if none does, the divisors of the batch in
// [K, 8K]; if none, the largest divisor of the batch not above K. Ascending.
std::vector<int> default_micro_batch_candidates(int stages, int64_t pipeline_batch);

// M before anything is measured: 1 for K = 1 (no pipeline to fill), else
// the smallest candidate >= 2K, else the largest candidate.
int default_micro_batches(int stages, int64_t pipeline_batch);

// Measured throughput (samples/s) per M for each K.
class MicroBatchTable {
 public:
  // ConfigError unless stages >= 1, micro_batches >= 1 and the throughput
  // is finite and >= 0. A later measurement of the same (K, M) replaces it.
  void record(int stages, int micro_batches, double samples_per_second);

  // The fastest M measured for K (ties: the smaller M), if any.
  std::optional<int> best(int stages) const;
  // Default candidates for (K, batch) not measured yet, ascending.
  std::vector<int> unmeasured(int stages, int64_t pipeline_batch) const;

  const std::map<int, std::map<int, double>>& entries() const { return entries_; }
  bool operator==(const MicroBatchTable& o) const { return entries_ == o.entries_; }

 private:
  std::map<int, std::map<int, double>> entries_;  // K -> M -> samples/s
};

// The fastest M in a table of samples/s by M (ties: the smaller M).
// ConfigError when the table is empty or holds an invalid entry.
int best_micro_batches(const std::map<int, double>& samples_per_second_by_m);

}  // namespace pipet
