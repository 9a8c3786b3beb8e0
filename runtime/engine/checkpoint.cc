#include "runtime/engine/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/safetensors_torch.h"

namespace pipet {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStatePrefix = "step-";
constexpr const char* kTempMarker = ".tmp-";
constexpr int kFormatVersion = 1;

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s%010lld", kStatePrefix, static_cast<long long>(step));
  return buf;
}

// Parses "step-0000000200" -> 200; false for anything else.
bool parse_step_dir(const std::string& name, int64_t* step) {
  const std::string prefix = kStatePrefix;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string digits = name.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), ::isdigit)) return false;
  *step = std::stoll(digits);
  return true;
}

std::map<std::string, torch::Tensor> load_optional(const std::string& path) {
  if (!path_exists(path)) return {};
  return load_safetensors(path);
}


// Doubles with NaN (a norm without statistics) as JSON null, and back.
nlohmann::json numbers_to_json(const std::vector<double>& values) {
  nlohmann::json out = nlohmann::json::array();
  for (double v : values) out.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json());
  return out;
}

std::vector<double> numbers_from_json(const nlohmann::json& json, const char* key, const std::string& source) {
  const nlohmann::json values = required_field<nlohmann::json>(json, key, source);
  if (!values.is_array()) throw FormatError(source + ": field '" + key + "' is not an array");
  std::vector<double> out;
  for (const nlohmann::json& v : values) {
    if (!v.is_null() && !v.is_number()) throw FormatError(source + ": field '" + key + "' holds " + v.dump());
    out.push_back(v.is_null() ? std::nan("") : v.get<double>());
  }
  return out;
}

}  // namespace

std::string rank_directory_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d", rank);
  return buf;
}

std::string checkpoint_directory_name(int64_t step) { return step_dir_name(step); }

int64_t checkpoint_step_of(const std::string& path) {
  int64_t step = -1;
  if (!parse_step_dir(fs::path(path).filename().string(), &step)) return -1;
  return step;
}

namespace {
constexpr const char* kManifestPrefix = "manifest-";
constexpr const char* kManifestSuffix = ".json";

// The step of "manifest-step-N.json", or -1.
int64_t manifest_step(const std::string& name) {
  const std::string prefix = kManifestPrefix;
  const std::string suffix = kManifestSuffix;
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  int64_t step = -1;
  if (!parse_step_dir(name.substr(prefix.size(), name.size() - prefix.size() - suffix.size()), &step)) return -1;
  return step;
}
}  // namespace

std::string checkpoint_manifest_path(const std::string& dir, int64_t step) {
  return dir + "/" + kManifestPrefix + step_dir_name(step) + kManifestSuffix;
}

std::vector<int64_t> list_checkpoint_manifest_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const int64_t step = manifest_step(entry.path().filename().string());
    if (step >= 0) steps.push_back(step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::vector<std::string> list_checkpoint_directories(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    int64_t step = 0;
    if (entry.is_directory() && parse_step_dir(entry.path().filename().string(), &step)) {
      found.emplace_back(step, entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [step, path] : found) paths.push_back(path);
  return paths;
}

bool checkpoint_manifest_exists(const std::string& dir, int64_t step) {
  return path_exists(checkpoint_manifest_path(dir, step));
}

nlohmann::json read_checkpoint_manifest(const std::string& dir, int64_t step) {
  const std::string path = checkpoint_manifest_path(dir, step);
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": not a valid checkpoint manifest: " + e.what());
  }
}

void write_checkpoint_manifest(const std::string& dir, int64_t step, const nlohmann::json& manifest) {
  write_file_atomic(checkpoint_manifest_path(dir, step), manifest.dump(2) + "\n");
}

void prune_checkpoint_manifests(const std::string& dir, const std::vector<std::string>& kept) {
  std::vector<int64_t> kept_steps;
  for (const std::string& path : kept) kept_steps.push_back(checkpoint_step_of(path));
  for (const int64_t step : list_checkpoint_manifest_steps(dir)) {
    if (std::find(kept_steps.begin(), kept_steps.end(), step) != kept_steps.end()) continue;
    const std::string path = checkpoint_manifest_path(dir, step);
    std::error_code remove_error;
    fs::remove(path, remove_error);
    if (remove_error) spdlog::warn("[checkpoint] cannot remove old manifest {}: {}", path, remove_error.message());
  }
}

nlohmann::json trainer_state_to_json(const TrainerState& s) {
  return {{"step", s.step},
          {"epoch", s.epoch},
          {"sampler_position", s.sampler_position},
          {"samples_seen", s.samples_seen},
          {"elapsed_seconds", s.elapsed_seconds},
          {"has_best", s.has_best},
          {"best_metric", s.best_metric},
          {"evals_without_improvement", s.evals_without_improvement},
          {"frozen_prefix", s.frozen_prefix},
          {"pipeline_stages", s.pipeline_stages},
          {"micro_batches", s.micro_batches},
          {"freeze_decisions", s.freeze_decisions},
          {"freeze_bound", s.freeze_bound},
          {"freeze_reference_norms", numbers_to_json(s.freeze_reference_norms)},
          {"freeze_settled_decisions", s.freeze_settled_decisions},
          {"freeze_guard", s.freeze_guard},
          {"freeze_interval_sums", s.freeze_interval_sums},
          {"freeze_interval_steps", s.freeze_interval_steps},
          {"freeze_window_sums", s.freeze_window_sums},
          {"freeze_window_steps", s.freeze_window_steps},
          {"batch_policy", s.batch_policy},
          {"global_batch", s.global_batch},
          {"lr_scale", s.lr_scale},
          {"cache_served_share", s.cache_served_share}};
}

TrainerState trainer_state_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw FormatError(source + ": trainer state is not a JSON object");
  TrainerState s;
  s.step = required_field<int64_t>(j, "step", source);
  s.epoch = required_field<int64_t>(j, "epoch", source);
  s.sampler_position = required_field<int64_t>(j, "sampler_position", source);
  s.samples_seen = required_field<int64_t>(j, "samples_seen", source);
  s.elapsed_seconds = required_field<double>(j, "elapsed_seconds", source);
  s.has_best = required_field<bool>(j, "has_best", source);
  s.best_metric = required_field<double>(j, "best_metric", source);
  s.evals_without_improvement = required_field<int64_t>(j, "evals_without_improvement", source);
  s.frozen_prefix = required_field<int64_t>(j, "frozen_prefix", source);
  s.pipeline_stages = required_field<int64_t>(j, "pipeline_stages", source);
  s.micro_batches = required_field<int64_t>(j, "micro_batches", source);
  // Absent in checkpoints written before freezing existed: no decision yet.
  if (j.contains("freeze_decisions")) s.freeze_decisions = required_field<int64_t>(j, "freeze_decisions", source);
  if (j.contains("freeze_bound")) s.freeze_bound = required_field<double>(j, "freeze_bound", source);
  // Absent before the adaptive rule measured change: no reference yet.
  if (j.contains("freeze_reference_norms"))
    s.freeze_reference_norms = numbers_from_json(j, "freeze_reference_norms", source);
  if (j.contains("freeze_guard")) s.freeze_guard = required_field<std::vector<double>>(j, "freeze_guard", source);
  if (j.contains("freeze_settled_decisions"))
    s.freeze_settled_decisions = required_field<std::vector<int64_t>>(j, "freeze_settled_decisions", source);
  // Absent before smoothing and batch policies existed: an empty window and
  // the batch policy that was the only one.
  if (j.contains("freeze_interval_sums"))
    s.freeze_interval_sums = required_field<std::vector<double>>(j, "freeze_interval_sums", source);
  if (j.contains("freeze_interval_steps"))
    s.freeze_interval_steps = required_field<int64_t>(j, "freeze_interval_steps", source);
  if (j.contains("freeze_window_sums"))
    s.freeze_window_sums = required_field<std::vector<std::vector<double>>>(j, "freeze_window_sums", source);
  if (j.contains("freeze_window_steps"))
    s.freeze_window_steps = required_field<std::vector<int64_t>>(j, "freeze_window_steps", source);
  if (s.freeze_window_sums.size() != s.freeze_window_steps.size()) {
    throw FormatError(source + ": freeze_window_sums has " + std::to_string(s.freeze_window_sums.size()) +
                      " intervals but freeze_window_steps " + std::to_string(s.freeze_window_steps.size()));
  }
  if (j.contains("batch_policy")) s.batch_policy = required_field<std::string>(j, "batch_policy", source);
  if (j.contains("global_batch")) s.global_batch = required_field<int64_t>(j, "global_batch", source);
  if (j.contains("lr_scale")) s.lr_scale = required_field<double>(j, "lr_scale", source);
  // Absent before the partition counted the frozen forward: nothing served.
  if (j.contains("cache_served_share")) {
    s.cache_served_share = required_field<double>(j, "cache_served_share", source);
    if (!(s.cache_served_share >= 0.0 && s.cache_served_share <= 1.0))
      throw FormatError(source + ": cache_served_share " + j.at("cache_served_share").dump() +
                        " is outside [0, 1]");
  }
  if (s.step < 0 || s.epoch < 0 || s.sampler_position < 0) {
    throw FormatError(source + ": negative step, epoch or sampler_position");
  }
  return s;
}

Checkpointer::Checkpointer(std::string dir, int64_t keep) : dir_(std::move(dir)), keep_(keep) {
  if (keep_ < 1) throw ConfigError("checkpoint.keep: must be >= 1, got " + std::to_string(keep_));
  ensure_writable_directory(dir_, "checkpoint.dir");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(std::string(".") + kStatePrefix, 0) == 0 && name.find(kTempMarker) != std::string::npos) {
      spdlog::warn("[checkpoint] removing incomplete checkpoint '{}' left by an interrupted writer",
                   entry.path().string());
      remove_tree(entry.path().string());
    }
  }
}

std::string Checkpointer::save(const CheckpointData& data) {
  const std::string name = step_dir_name(data.state.step);
  const fs::path final_path = fs::path(dir_) / name;
  const fs::path temp_path =
      fs::path(dir_) / ("." + name + kTempMarker + std::to_string(::getpid()));
  std::error_code ec;
  remove_tree(temp_path.string());
  if (!fs::create_directory(temp_path, ec) || ec) {
    throw IoError("checkpoint.dir: cannot create '" + temp_path.string() + "': " + ec.message());
  }

  save_safetensors((temp_path / "model.safetensors").string(), data.model, {{"format", "pt"}});
  save_safetensors((temp_path / "optimizer.safetensors").string(), data.optimizer,
                   {{"optimizer", data.optimizer_name}});
  save_safetensors((temp_path / "rng.safetensors").string(), data.rng);
  nlohmann::json state = {{"format", "pipetransformer-checkpoint"},
                          {"version", kFormatVersion},
                          {"optimizer", data.optimizer_name},
                          {"trainer", trainer_state_to_json(data.state)},
                          {"model_config", data.model_config},
                          {"train_config", data.train_config}};
  // Written last: its presence inside the directory marks the set complete.
  write_file_atomic((temp_path / "trainer_state.json").string(), state.dump(2) + "\n");
  fsync_directory(temp_path.string());

  // A checkpoint of the same step from an earlier run is replaced.
  if (fs::exists(final_path)) {
    const fs::path aside = fs::path(dir_) / ("." + name + ".replaced" + kTempMarker + std::to_string(::getpid()));
    fs::rename(final_path, aside, ec);
    if (ec) throw IoError("checkpoint.dir: cannot replace '" + final_path.string() + "': " + ec.message());
    fs::rename(temp_path, final_path, ec);
    if (const std::string problem = remove_tree(aside.string()); !problem.empty())
      spdlog::warn("[checkpoint] {}", problem);
  } else {
    fs::rename(temp_path, final_path, ec);
  }
  if (ec) throw IoError("checkpoint.dir: cannot rename into '" + final_path.string() + "': " + ec.message());
  fsync_directory(dir_);
  prune();
  return final_path.string();
}

std::vector<std::string> Checkpointer::list() const { return list_checkpoint_directories(dir_); }

void Checkpointer::prune() {
  std::vector<std::string> all = list();
  for (size_t i = 0; i + static_cast<size_t>(keep_) < all.size(); ++i) {
    if (const std::string problem = remove_tree(all[i]); !problem.empty())
      spdlog::warn("[checkpoint] cannot remove old checkpoint '{}': {}", all[i], problem);
  }
}

std::optional<LoadedCheckpoint> Checkpointer::load_latest() const {
  std::vector<std::string> all = list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return load(*it);
    } catch (const IoError& e) {
      spdlog::warn("[checkpoint] skipping unreadable checkpoint: {}", e.what());
    }
  }
  return std::nullopt;
}

LoadedCheckpoint Checkpointer::load(const std::string& path) {
  const fs::path dir(path);
  if (!fs::is_directory(dir)) {
    throw IoError("checkpoint '" + path + "' is not a directory");
  }
  const std::string state_path = (dir / "trainer_state.json").string();
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_file(state_path, "checkpoint trainer state"));
  } catch (const nlohmann::json::parse_error& e) {
    throw FormatError(state_path + ": invalid JSON: " + e.what());
  }
  if (!state.is_object() || state.value("format", "") != "pipetransformer-checkpoint") {
    throw FormatError(state_path + ": not a pipetransformer checkpoint (field 'format')");
  }
  if (state.value("version", 0) != kFormatVersion) {
    throw FormatError(state_path + ": checkpoint format version " + state.value("version", nlohmann::json(0)).dump() +
                      " is not supported (this build reads version " + std::to_string(kFormatVersion) + ")");
  }
  LoadedCheckpoint out;
  out.path = path;
  out.state = trainer_state_from_json(state.value("trainer", nlohmann::json()), state_path + " (trainer)");
  out.model_config = state.value("model_config", nlohmann::json());
  out.train_config = state.value("train_config", nlohmann::json());
  out.optimizer_name = required_field<std::string>(state, "optimizer", state_path);
  out.model = load_safetensors((dir / "model.safetensors").string());
  out.optimizer = load_safetensors((dir / "optimizer.safetensors").string());
  out.rng = load_optional((dir / "rng.safetensors").string());
  return out;
}

}  // namespace pipet
