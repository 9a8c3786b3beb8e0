#include "runtime/engine/saved_step.h"

#include <algorithm>
#include <filesystem>
#include <regex>

#include "runtime/core/errors.h"
#include "runtime/core/files.h"

namespace pipet {
namespace fs = std::filesystem;

namespace {

constexpr int kManifestVersion = 2;

std::map<std::string, SavedTensor> tensors_from_json(const nlohmann::json& json, const char* key, int parts,
                                                     const std::string& source) {
  std::map<std::string, SavedTensor> out;
  const nlohmann::json entries = required_field<nlohmann::json>(json, key, source);
  if (!entries.is_object()) throw FormatError(source + ": field '" + key + "' is not an object");
  for (const auto& [name, entry] : entries.items()) {
    const std::string where = source + " (" + key + " '" + name + "')";
    SavedTensor tensor{required_field<std::vector<int64_t>>(entry, "shape", where),
                       required_field<std::vector<int>>(entry, "parts", where)};
    if (tensor.parts.empty()) throw FormatError(where + ": no part holds it");
    for (int part : tensor.parts)
      if (part < 0 || part >= parts)
        throw FormatError(where + ": part " + std::to_string(part) + " is not one of the " + std::to_string(parts) +
                          " parts");
    out.emplace(name, std::move(tensor));
  }
  return out;
}

nlohmann::json tensors_to_json(const std::vector<std::vector<std::string>>& names_by_rank,
                               const std::map<std::string, std::vector<int64_t>>& shapes) {
  std::map<std::string, std::vector<int>> parts;
  for (size_t rank = 0; rank < names_by_rank.size(); ++rank)
    for (const std::string& name : names_by_rank[rank]) parts[name].push_back(static_cast<int>(rank));
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, holders] : parts) {
    auto shape = shapes.find(name);
    out[name] = {{"shape", shape == shapes.end() ? std::vector<int64_t>{} : shape->second}, {"parts", holders}};
  }
  return out;
}

// Checks `held` (a part's tensors) against the step's names for `part`, or
// records them when the step is not indexed yet.
void index_or_check(std::map<std::string, SavedTensor>& names, const std::map<std::string, torch::Tensor>& held,
                    int part, bool indexed, const std::string& file) {
  if (!indexed) {
    for (const auto& [name, tensor] : held) {
      SavedTensor& entry = names[name];
      entry.shape.assign(tensor.sizes().begin(), tensor.sizes().end());
      entry.parts.push_back(part);
    }
    return;
  }
  for (const auto& [name, entry] : names) {
    if (std::find(entry.parts.begin(), entry.parts.end(), part) == entry.parts.end()) continue;
    auto it = held.find(name);
    if (it == held.end()) throw FormatError(file + ": the manifest says it holds '" + name + "', it does not");
    if (!it->second.sizes().equals(entry.shape))
      throw FormatError(file + ": '" + name + "' has shape " + shape_string(it->second.sizes()) +
                        ", the manifest says " + shape_string(entry.shape));
  }
  for (const auto& [name, tensor] : held) {
    auto it = names.find(name);
    const bool listed = it != names.end() &&
                        std::find(it->second.parts.begin(), it->second.parts.end(), part) != it->second.parts.end();
    if (!listed)
      throw FormatError(file + ": holds '" + name + "', which the manifest does not list for it");
  }
}

}  // namespace

std::string SavedStep::layout_text() const {
  return std::to_string(world_size) + (world_size == 1 ? " rank (" : " ranks (") + std::to_string(stages) + "x" +
         std::to_string(replicas) + ")";
}

SavedStep saved_step_from_manifest(const std::string& dir, int64_t step) {
  const nlohmann::json manifest = read_checkpoint_manifest(dir, step);
  const std::string source = checkpoint_manifest_path(dir, step);
  if (!manifest.is_object()) throw FormatError(source + ": not a JSON object");
  SavedStep saved;
  saved.step = required_field<int64_t>(manifest, "step", source);
  if (saved.step != step) throw FormatError(source + ": field 'step' is " + std::to_string(saved.step));
  saved.source = source;
  saved.world_size = required_field<int>(manifest, "world_size", source);
  saved.stages = required_field<int>(manifest, "pipeline_stages", source);
  saved.replicas = required_field<int>(manifest, "replicas", source);
  saved.micro_batches = required_field<int64_t>(manifest, "micro_batches", source);
  if (saved.world_size < 1 || saved.stages < 1 || saved.replicas < 1 || saved.stages > saved.world_size)
    throw FormatError(source + ": layout " + std::to_string(saved.stages) + "x" + std::to_string(saved.replicas) +
                      " on " + std::to_string(saved.world_size) + " ranks is not valid");
  const int version = manifest.value("version", 1);
  if (version > kManifestVersion)
    throw FormatError(source + ": manifest version " + std::to_string(version) + " is newer than this build reads (" +
                      std::to_string(kManifestVersion) + ")");
  if (version >= 2) {
    saved.initial_stages = required_field<int>(manifest, "initial_stages", source);
    for (const std::string& part : required_field<std::vector<std::string>>(manifest, "parts", source)) {
      if (part.empty() || part.front() == '/' || part.find("..") != std::string::npos)
        throw FormatError(source + ": part '" + part + "' is not a directory inside checkpoint.dir");
      saved.parts.push_back(dir + "/" + part);
    }
    if (static_cast<int>(saved.parts.size()) != saved.world_size)
      throw FormatError(source + ": " + std::to_string(saved.parts.size()) + " parts for " +
                        std::to_string(saved.world_size) + " ranks");
    saved.model = tensors_from_json(manifest, "model", saved.world_size, source);
    saved.optimizer = tensors_from_json(manifest, "optimizer", saved.world_size, source);
    saved.indexed = true;
  } else {
    // Version 1: one part per rank in the fixed place, names in the parts.
    for (int rank = 0; rank < saved.world_size; ++rank)
      saved.parts.push_back(dir + "/" + rank_directory_name(rank) + "/" + checkpoint_directory_name(step));
  }
  return saved;
}

SavedStep saved_step_from_directory(const std::string& part_dir) {
  SavedStep saved;
  saved.step = checkpoint_step_of(part_dir);
  saved.source = part_dir;
  saved.parts = {part_dir};
  return saved;
}

SavedStep resolve_saved_step(const std::string& path) {
  const fs::path p = fs::path(path).lexically_normal();
  const fs::path dir = p.filename().empty() ? p.parent_path() : p;
  const int64_t step = checkpoint_step_of(dir.string());
  if (step >= 0) {
    static const std::regex rank_dir("rank-[0-9]{5}");
    const fs::path root = dir.parent_path().parent_path();
    if (std::regex_match(dir.parent_path().filename().string(), rank_dir) &&
        checkpoint_manifest_exists(root.string(), step))
      return saved_step_from_manifest(root.string(), step);
    return saved_step_from_directory(dir.string());
  }
  if (!fs::is_directory(dir)) throw IoError("checkpoint '" + path + "' is not a directory");
  // A checkpoint.dir: its newest step of either kind.
  const std::vector<SavedStepEntry> steps = list_saved_steps(dir.string());
  if (steps.empty())
    throw IoError("checkpoint '" + path + "' holds no checkpoint (no manifest-step-N.json, no step-N directory)");
  return saved_step_of(dir.string(), steps.front());
}

std::vector<SavedStepEntry> list_saved_steps(const std::string& dir) {
  std::vector<SavedStepEntry> steps;
  for (const int64_t step : list_checkpoint_manifest_steps(dir)) steps.push_back({step, true});
  for (const std::string& single : list_checkpoint_directories(dir))
    steps.push_back({checkpoint_step_of(single), false});
  std::sort(steps.begin(), steps.end(), [](const SavedStepEntry& a, const SavedStepEntry& b) {
    return a.step != b.step ? a.step > b.step : a.manifest > b.manifest;
  });
  return steps;
}

SavedStep saved_step_of(const std::string& dir, const SavedStepEntry& entry) {
  return entry.manifest ? saved_step_from_manifest(dir, entry.step)
                        : saved_step_from_directory(dir + "/" + checkpoint_directory_name(entry.step));
}

LoadedCheckpoint open_part(SavedStep& saved, int part) {
  const std::string& dir = saved.parts.at(static_cast<size_t>(part));
  if (!fs::is_directory(dir))
    throw IoError(saved.source + ": part " + std::to_string(part) + " '" + dir + "' is not there");
  LoadedCheckpoint loaded = Checkpointer::load(dir);
  if (loaded.state.step != saved.step && saved.step >= 0)
    throw FormatError(dir + "/trainer_state.json: step " + std::to_string(loaded.state.step) + ", the manifest says " +
                      std::to_string(saved.step));
  index_or_check(saved.model, loaded.model, part, saved.indexed, dir + "/model.safetensors");
  index_or_check(saved.optimizer, loaded.optimizer, part, saved.indexed, dir + "/optimizer.safetensors");
  if (saved.parts.size() == 1) {
    // A single-rank step: its layout is the one its trainer state records.
    saved.step = loaded.state.step;
    saved.stages = static_cast<int>(loaded.state.pipeline_stages);
    saved.micro_batches = loaded.state.micro_batches;
  }
  return loaded;
}

std::string first_tensor_difference(const SavedStep& saved, const NamedTensors& model) {
  for (const auto& [name, tensor] : model) {
    auto it = saved.model.find(name);
    if (it == saved.model.end()) {
      if (saved.indexed) return "tensor '" + name + "' is not in the checkpoint";
      continue;
    }
    if (!tensor.sizes().equals(it->second.shape))
      return "tensor '" + name + "' has shape " + shape_string(it->second.shape) + " in the checkpoint, " +
             shape_string(tensor.sizes()) + " in the model";
  }
  return "";
}

nlohmann::json manifest_json(int64_t step, int world_size, int stages, int replicas, int initial_stages,
                             int64_t micro_batches, const std::vector<std::vector<std::string>>& model_names,
                             const std::vector<std::vector<std::string>>& optimizer_names,
                             const std::map<std::string, std::vector<int64_t>>& shapes) {
  std::vector<std::string> parts;
  for (int rank = 0; rank < world_size; ++rank)
    parts.push_back(rank_directory_name(rank) + "/" + checkpoint_directory_name(step));
  return {{"format", "pipetransformer-checkpoint-manifest"},
          {"version", kManifestVersion},
          {"step", step},
          {"world_size", world_size},
          {"pipeline_stages", stages},
          {"replicas", replicas},
          {"initial_stages", initial_stages},
          {"micro_batches", micro_batches},
          {"parts", parts},
          {"model", tensors_to_json(model_names, shapes)},
          {"optimizer", tensors_to_json(optimizer_names, shapes)}};
}

}  // namespace pipet
