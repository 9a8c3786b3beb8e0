// A saved step as one logical state (DESIGN.md §5): the run's tensors keyed
// by name, whichever ranks wrote them. A multi-rank step is its manifest
// (checkpoint.dir/manifest-step-N.json) and one part per saving rank
// (rank-R/step-N, an ordinary checkpoint directory); a single-rank step is
// one part. The manifest records the layout and, from format version 2, the
// shape of every tensor and which parts hold it; a version 1 manifest (no
// names) is indexed from the parts' own headers. Any layout reads the names
// it needs from whichever parts hold them.
#pragma once

#include "runtime/engine/checkpoint.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pipet {

// One named tensor of a step: its shape and the parts (saving ranks) holding it.
struct SavedTensor {
  std::vector<int64_t> shape;
  std::vector<int> parts;
};

struct SavedStep {
  int64_t step = -1;
  std::string source;          // the manifest, or the single part's directory (for messages)
  int world_size = 1;          // ranks that wrote it
  int stages = 1;              // K in force when it was written
  int replicas = 1;
  int initial_stages = -1;     // parallel.pipeline_stages of the saving run; -1: not recorded (version 1)
  int64_t micro_batches = 1;
  std::vector<std::string> parts;  // part directories, by saving rank
  bool indexed = false;            // the maps below are known (manifest version 2, or index_part)
  std::map<std::string, SavedTensor> model;
  std::map<std::string, SavedTensor> optimizer;

  // "4 ranks (2x2)": how the step was written.
  std::string layout_text() const;
};

// The manifest of multi-rank step `step` under `dir` (IoError/FormatError
// naming the manifest when it is missing, unreadable or inconsistent).
SavedStep saved_step_from_manifest(const std::string& dir, int64_t step);
// A single-rank checkpoint directory as a step with one part.
SavedStep saved_step_from_directory(const std::string& part_dir);
// The steps saved in checkpoint.dir `dir`, newest first: each a manifest
// (a multi-rank step) or a step-N directory (a single-rank step); a step
// with both is listed manifest first.
struct SavedStepEntry {
  int64_t step = -1;
  bool manifest = false;
};
std::vector<SavedStepEntry> list_saved_steps(const std::string& dir);
// The step `entry` of `dir` names (errors as saved_step_from_manifest).
SavedStep saved_step_of(const std::string& dir, const SavedStepEntry& entry);

// What a path names: a part of a multi-rank step (…/rank-R/step-N with the
// manifest two levels up), a single-rank step directory, or a
// checkpoint.dir (its newest step, manifest or single).
SavedStep resolve_saved_step(const std::string& path);

// Opens part `part` (its files mapped, not read: IoError/FormatError naming
// the file when one is missing or truncated), and checks that it holds
// exactly the names the manifest gives it, or records its names when the
// manifest has none (version 1).
LoadedCheckpoint open_part(SavedStep& saved, int part);

// The first of `model`'s tensors (in order) that the step lacks or holds in
// another shape, as "tensor 'x' has shape [..] in the checkpoint, [..] in
// the model"; "" when none differs among the names the step knows.
std::string first_tensor_difference(const SavedStep& saved, const NamedTensors& model);

// The manifest of a step written by `world_size` ranks whose parts hold the
// names in `model_names` / `optimizer_names` (by rank; the tensors' shapes
// from `shapes`).
nlohmann::json manifest_json(int64_t step, int world_size, int stages, int replicas, int initial_stages,
                             int64_t micro_batches, const std::vector<std::vector<std::string>>& model_names,
                             const std::vector<std::vector<std::string>>& optimizer_names,
                             const std::map<std::string, std::vector<int64_t>>& shapes);

}  // namespace pipet
