#include "autopipe/micro_batch.h"

#include "runtime/core/errors.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace pipet {

namespace {

void check_shape(int stages, int64_t pipeline_batch) {
  if (stages < 1) throw ConfigError("micro-batches: stage count " + std::to_string(stages) + " is not positive");
  if (pipeline_batch < 1) {
    throw ConfigError("micro-batches: per-pipeline batch " + std::to_string(pipeline_batch) + " is not positive");
  }
}

void check_entry(int micro_batches, double samples_per_second) {
  if (micro_batches < 1) {
    throw ConfigError("micro-batches: M = " + std::to_string(micro_batches) + " is not positive");
  }
  if (!(std::isfinite(samples_per_second) && samples_per_second >= 0.0)) {
    std::ostringstream msg;
    msg << "micro-batches: throughput " << samples_per_second << " samples/s measured for M = " << micro_batches
        << " must be finite and >= 0";
    throw ConfigError(msg.str());
  }
}

}  // namespace

std::vector<int> default_micro_batch_candidates(int stages, int64_t pipeline_batch) {
  check_shape(stages, pipeline_batch);
  std::vector<int> candidates;
  for (int64_t factor : {1, 2, 4, 8}) {
    const int64_t m = factor * stages;
    if (m <= pipeline_batch && pipeline_batch % m == 0) candidates.push_back(static_cast<int>(m));
  }
  if (!candidates.empty()) return candidates;
  const int64_t upper = std::min<int64_t>(8 * static_cast<int64_t>(stages), pipeline_batch);
  for (int64_t m = stages; m <= upper; ++m) {
    if (pipeline_batch % m == 0) candidates.push_back(static_cast<int>(m));
  }
  if (!candidates.empty()) return candidates;
  for (int64_t m = std::min<int64_t>(stages, pipeline_batch); m >= 1; --m) {
    if (pipeline_batch % m == 0) return {static_cast<int>(m)};
  }
  return {1};  // not reached: 1 divides every batch
}

int default_micro_batches(int stages, int64_t pipeline_batch) {
  check_shape(stages, pipeline_batch);
  if (stages == 1) return 1;
  const auto candidates = default_micro_batch_candidates(stages, pipeline_batch);
  for (int m : candidates) {
    if (m >= 2 * stages) return m;
  }
  return candidates.back();
}

void MicroBatchTable::record(int stages, int micro_batches, double samples_per_second) {
  if (stages < 1) throw ConfigError("micro-batches: stage count " + std::to_string(stages) + " is not positive");
  check_entry(micro_batches, samples_per_second);
  entries_[stages][micro_batches] = samples_per_second;
}

std::optional<int> MicroBatchTable::best(int stages) const {
  const auto it = entries_.find(stages);
  if (it == entries_.end() || it->second.empty()) return std::nullopt;
  return best_micro_batches(it->second);
}

std::vector<int> MicroBatchTable::unmeasured(int stages, int64_t pipeline_batch) const {
  std::vector<int> missing;
  const auto it = entries_.find(stages);
  for (int m : default_micro_batch_candidates(stages, pipeline_batch)) {
    if (it == entries_.end() || it->second.count(m) == 0) missing.push_back(m);
  }
  return missing;
}

int best_micro_batches(const std::map<int, double>& samples_per_second_by_m) {
  if (samples_per_second_by_m.empty()) throw ConfigError("micro-batches: no throughput measured to choose M from");
  int best = 0;
  double best_rate = -1.0;
  for (const auto& [m, rate] : samples_per_second_by_m) {  // ascending M: strict > keeps the smaller on ties
    check_entry(m, rate);
    if (rate > best_rate) {
      best = m;
      best_rate = rate;
    }
  }
  return best;
}

}  // namespace pipet
