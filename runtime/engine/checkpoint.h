// Checkpoints: one directory per save, `<dir>/step-0000000200/`, holding
//   model.safetensors      weights, Hugging Face names
//   optimizer.safetensors  optimizer state tensors ("<param>/<slot>")
//   rng.safetensors        random generator states
//   trainer_state.json     counters, sampler position, schedule position,
//                          model config.json, the run's TrainConfig
// Written into a hidden temporary directory and renamed into place, so a
// directory named step-N is complete; older ones are pruned only after the
// new one is in place (checkpoint.keep of them remain).
#pragma once

#include "runtime/core/errors.h"
#include "runtime/core/tensor_names.h"
#include "runtime/core/torch_pch.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

// Counters a resumed run needs to continue exactly where it stopped.
struct TrainerState {
  int64_t step = 0;               // optimizer steps done (= LR schedule position under keep_global_batch)
  int64_t epoch = 0;              // current epoch (0-based)
  int64_t sampler_position = 0;   // samples of `epoch` already consumed
  int64_t samples_seen = 0;
  double elapsed_seconds = 0.0;   // training time before this run segment
  bool has_best = false;          // early stopping
  double best_metric = 0.0;
  int64_t evals_without_improvement = 0;
  // Elastic layout (filled by the elastic engine; 0/1/1 for a static run).
  int64_t frozen_prefix = 0;
  int64_t pipeline_stages = 1;
  int64_t micro_batches = 1;
  int64_t freeze_decisions = 0;   // freeze decisions taken (T)
  double freeze_bound = 0.0;      // the freeze rule's unrounded bound b(T)
  std::vector<double> freeze_reference_norms;   // adaptive: block norms at the last decision
  std::vector<int64_t> freeze_settled_decisions;  // adaptive: decisions in a row each block had settled
  // The probe guard (freeze.probe_samples): last loss, trend, the frozen
  // count before a pending change (-1: none), cooldown left, whether a
  // trend exists (1/0); empty: no guard.
  std::vector<double> freeze_guard;
  // Freeze statistics: this rank's sums since the last decision, and the
  // past intervals freeze.smoothing_window pools (world-reduced; oldest first).
  std::vector<double> freeze_interval_sums;
  int64_t freeze_interval_steps = 0;
  std::vector<std::vector<double>> freeze_window_sums;
  std::vector<int64_t> freeze_window_steps;
  // autodp.batch_policy of the run and what it gave the current layout.
  std::string batch_policy = "keep_global_batch";
  int64_t global_batch = 0;       // samples per step; 0 = not recorded
  double lr_scale = 1.0;          // multiplier of the scheduled LR
  // AutoPipe's estimate of the frozen prefix's outputs the cache serves,
  // which the partition counts (autopipe.frozen_balance): a resume must
  // rebuild the same stages.
  double cache_served_share = 0.0;
};

// json[key] as T; FormatError naming `source` and the field when it is
// missing or of another type.
template <typename T>
T required_field(const nlohmann::json& json, const char* key, const std::string& source) {
  if (!json.contains(key)) throw FormatError(source + ": field '" + key + "' is missing");
  try {
    return json.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(source + ": field '" + key + "' has the wrong type: " + e.what());
  }
}

nlohmann::json trainer_state_to_json(const TrainerState& state);
// Throws FormatError naming `source` and the field.
TrainerState trainer_state_from_json(const nlohmann::json& json, const std::string& source);

struct CheckpointData {
  TrainerState state;
  nlohmann::json model_config;   // Hugging Face config.json of the model
  nlohmann::json train_config;   // config_to_json of the run
  std::string optimizer_name;
  NamedTensors model;
  NamedTensors optimizer;
  NamedTensors rng;
};

struct LoadedCheckpoint {
  std::string path;
  TrainerState state;
  nlohmann::json model_config;
  nlohmann::json train_config;
  std::string optimizer_name;
  std::map<std::string, torch::Tensor> model;
  std::map<std::string, torch::Tensor> optimizer;
  std::map<std::string, torch::Tensor> rng;
};

// Multi-rank checkpoints: rank r's parts live in <dir>/rank-0000r/step-N/
// (each an ordinary checkpoint of that rank's stage); the manifest
// <dir>/manifest-step-N.json, written once every rank's part is in place,
// ties them together and records the layout. A single rank uses <dir> itself.
std::string rank_directory_name(int rank);
std::string checkpoint_directory_name(int64_t step);
// The step of a checkpoint directory path ("…/step-0000000200" -> 200), or -1.
int64_t checkpoint_step_of(const std::string& path);
std::string checkpoint_manifest_path(const std::string& dir, int64_t step);
bool checkpoint_manifest_exists(const std::string& dir, int64_t step);
// The steps with a manifest in `dir`, ascending.
std::vector<int64_t> list_checkpoint_manifest_steps(const std::string& dir);
// The complete step-N directories in `dir`, oldest first.
std::vector<std::string> list_checkpoint_directories(const std::string& dir);
// Throws FormatError naming the file when it is unreadable or not JSON.
nlohmann::json read_checkpoint_manifest(const std::string& dir, int64_t step);
void write_checkpoint_manifest(const std::string& dir, int64_t step, const nlohmann::json& manifest);
// Removes manifests whose step is not among `kept` (checkpoint directory paths).
void prune_checkpoint_manifests(const std::string& dir, const std::vector<std::string>& kept);

class Checkpointer {
 public:
  // Creates `dir` if needed (IoError naming checkpoint.dir if it cannot) and
  // removes temporary directories left by a writer that crashed.
  Checkpointer(std::string dir, int64_t keep);

  // Writes a checkpoint for data.state.step; returns its path.
  std::string save(const CheckpointData& data);

  // Complete checkpoints, oldest first.
  std::vector<std::string> list() const;

  // The newest checkpoint that loads; a corrupt newer one is skipped with a
  // warning (the previous one is still there). nullopt when none exists.
  std::optional<LoadedCheckpoint> load_latest() const;

  // Loads one checkpoint directory. Throws IoError/FormatError naming the file.
  static LoadedCheckpoint load(const std::string& path);

  const std::string& dir() const { return dir_; }

 private:
  void prune();
  std::string dir_;
  int64_t keep_;
};

}  // namespace pipet
