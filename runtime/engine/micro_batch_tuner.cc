#include "runtime/engine/micro_batch_tuner.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "runtime/comm/collectives.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"

namespace pipet {
namespace {
constexpr int kTuningSteps = 3;  // per candidate: one warm-up step, then two timed
}  // namespace

MicroBatchTuner::MicroBatchTuner(Communicator& world, std::string path, TunedRunShape shape)
    : world_(world), path_(std::move(path)), shape_(std::move(shape)) {
  load();
}

void MicroBatchTuner::load() {
  if (path_.empty()) return;
  // Rank 0 reads (hosts need not share a filesystem) and tells everyone.
  std::string text;
  if (world_.rank() == 0 && path_exists(path_)) text = read_file(path_);
  if (world_.size() > 1) text = broadcast_string(world_, text, 0);
  if (text.empty()) return;
  const bool rank0 = world_.rank() == 0;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    // The batch policy decides the per-pipeline batch of every K.
    const bool same_run_shape = j.at("model") == shape_.model && j.at("batch_size") == shape_.batch_size &&
                                j.value("batch_policy", "keep_global_batch") == shape_.batch_policy &&
                                j.at("ranks") == shape_.ranks;
    if (!same_run_shape) {
      if (rank0) spdlog::info("[autopipe] {} was measured for another model, batch or rank count; not used", path_);
      return;
    }
    for (const auto& [stages, by_m] : j.at("samples_per_second").items())
      for (const auto& [m, value] : by_m.items()) table_.record(std::stoi(stages), std::stoi(m), value.get<double>());
  } catch (const std::exception& e) {
    // A damaged measurement file costs a re-measurement, not the run.
    table_ = MicroBatchTable();
    if (rank0) spdlog::warn("[autopipe] ignoring {}: {}", path_, e.what());
  }
}

void MicroBatchTuner::save() const {
  if (path_.empty()) return;
  nlohmann::json by_stages = nlohmann::json::object();
  for (const auto& [stages, by_m] : table_.entries())
    for (const auto& [m, value] : by_m) by_stages[std::to_string(stages)][std::to_string(m)] = value;
  const nlohmann::json j = {{"model", shape_.model},
                            {"batch_size", shape_.batch_size},
                            {"ranks", shape_.ranks},
                            {"batch_policy", shape_.batch_policy},
                            {"samples_per_second", by_stages}};
  try {
    write_file_atomic(path_, j.dump(2) + "\n");
  } catch (const IoError& e) {
    spdlog::warn("[autopipe] cannot keep the micro-batch measurements: {}", e.what());
  }
}

std::optional<int64_t> MicroBatchTuner::start(int stages, int64_t pipeline_batch) {
  stages_ = stages;
  queue_.clear();
  steps_ = 0;
  seconds_ = 0.0;
  for (int m : table_.unmeasured(stages, pipeline_batch)) queue_.push_back(m);
  if (!queue_.empty()) return queue_.front();
  const std::optional<int> best = table_.best(stages);
  if (!best) return std::nullopt;
  if (world_.rank() == 0) spdlog::info("[autopipe] {} stages: {} micro-batches, the fastest measured", stages, *best);
  return *best;
}

std::optional<int64_t> MicroBatchTuner::record(double step_seconds, int64_t rows) {
  if (queue_.empty()) return std::nullopt;
  // The slowest rank sets the pace.
  torch::Tensor slowest = torch::tensor({step_seconds}, torch::kDouble);
  world_.all_reduce(slowest, AllReduceOptions{ReduceOp::kMax});
  if (steps_ > 0) seconds_ += slowest.item<double>();
  if (++steps_ < kTuningSteps) return std::nullopt;
  const bool rank0 = world_.rank() == 0;
  const double samples_per_second = (kTuningSteps - 1) * rows / std::max(seconds_, 1e-9);
  table_.record(stages_, queue_.front(), samples_per_second);
  if (rank0)
    spdlog::info("[autopipe] {} stages, {} micro-batches: {:.1f} samples/s", stages_, queue_.front(),
                 samples_per_second);
  queue_.pop_front();
  steps_ = 0;
  seconds_ = 0.0;
  if (!queue_.empty()) return queue_.front();
  const int best = table_.best(stages_).value();
  if (rank0) {
    spdlog::info("[autopipe] {} stages: keeping {} micro-batches", stages_, best);
    save();
  }
  return best;
}

}  // namespace pipet
