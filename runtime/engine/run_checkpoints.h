// The run's checkpoints across ranks (DESIGN.md §5): each rank writes its
// part (its stage's weights and optimizer state, its generator, the trainer
// state) under checkpoint.dir/rank-R (a single rank uses checkpoint.dir
// itself), then the first rank of each host writes the step's manifest,
// which names every tensor and the parts holding it (saved_step.h). A
// resume agrees on the newest step every rank can open and falls back
// together when any rank cannot; it reads from any layout. What a loaded
// step must match to be resumed is checked by the trainer, which knows the
// run.
#pragma once

#include "runtime/engine/checkpoint.h"
#include "runtime/engine/saved_step.h"

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace pipet {

class Communicator;
struct CheckpointConfig;

// The torch CPU generator (the dropout of a model driven outside the
// executor draws from it), as a checkpoint keeps it, and back; FormatError
// naming `source` for a missing or invalid state.
NamedTensors rng_state();
void restore_rng(const std::map<std::string, torch::Tensor>& rng, const std::string& source);

// The step a run resumes from, as this rank opened it.
struct ResumePoint {
  SavedStep saved;
  // This job has the saving job's rank count and starting K: each rank
  // reads its own part (which is all a host without a shared
  // checkpoint.dir holds). Otherwise every rank opened every part.
  bool same_layout = false;
  int own_part = -1;                        // this rank's part of the step; -1: it wrote none
  std::map<int, LoadedCheckpoint> parts;    // the parts this rank opened (mapped, read on use)

  // The trainer state and configs: this rank's own part when opened, else
  // the lowest part.
  const LoadedCheckpoint& primary() const;
  // `name` from this rank's own part when it holds it, else from the
  // lowest opened part that does; undefined when none does.
  torch::Tensor model_tensor(const std::string& name) const;
  torch::Tensor optimizer_tensor(const std::string& name) const;
  // "<part dir>/model.safetensors" of the part model_tensor(name) reads.
  std::string model_file(const std::string& name) const;
};

class RunCheckpoints {
 public:
  // No checkpoints are written when checkpoint.dir is empty. IoError naming
  // checkpoint.dir when it cannot be created. `world` outlives this.
  RunCheckpoints(const CheckpointConfig& config, Communicator& world);
  ~RunCheckpoints();

  // Writes this rank's part of step data.state.step and, once every rank's
  // part is in place, the manifest recording the layout (`stages` x
  // `replicas`, the run's `initial_stages`, `micro_batches`) and every
  // part's tensor names and shapes. Returns the part's path; "" without
  // checkpoint.dir. Collective.
  std::string save(const CheckpointData& data, int stages, int replicas, int initial_stages, int64_t micro_batches);

  // The step to resume from: `resume` is a path (saved_step.h's
  // resolve_saved_step: a step directory, a part, or a checkpoint.dir) or
  // "auto", the newest step in checkpoint.dir that every rank sees. A job
  // whose rank count and `initial_stages` are the saving job's opens only
  // its own part; any other opens every part. A step that any rank fails to
  // open (a part missing or truncated, a manifest naming a file that is not
  // there) is skipped by all with a warning; IoError naming the last
  // failure when there were steps and none opened; nullopt when there are
  // none. Collective.
  std::optional<ResumePoint> load_for_resume(const std::string& resume, int initial_stages);

 private:
  std::optional<ResumePoint> open(const SavedStep& step, int initial_stages, std::string* failure) const;

  std::string dir_;  // checkpoint.dir
  Communicator& world_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

}  // namespace pipet
