// The run's checkpoints across ranks (DESIGN.md §5): each rank writes its
// part (its stage's weights and optimizer state, its generator, the trainer
// state) under checkpoint.dir/rank-R (a single rank uses checkpoint.dir
// itself), then the first rank of each host writes the step's manifest; a
// resume agrees on the newest step every rank holds, and falls back
// together when any rank fails to load it. What a loaded checkpoint must
// match to be resumed is checked by the trainer, which knows the run.
#pragma once

#include "runtime/engine/checkpoint.h"

#include <memory>
#include <optional>
#include <string>

namespace pipet {

class Communicator;
struct CheckpointConfig;

// The torch CPU generator (dropout draws from it), as a checkpoint keeps it,
// and back; FormatError naming `source` for a missing or invalid state.
NamedTensors rng_state();
void restore_rng(const std::map<std::string, torch::Tensor>& rng, const std::string& source);

class RunCheckpoints {
 public:
  // No checkpoints are written when checkpoint.dir is empty. IoError naming
  // checkpoint.dir when it cannot be created. `world` outlives this.
  RunCheckpoints(const CheckpointConfig& config, Communicator& world);
  ~RunCheckpoints();

  // Writes this rank's part of step data.state.step and, once every rank's
  // part is in place, the manifest recording the layout (`stages` x
  // `replicas`, `micro_batches`). Returns the part's path; "" without
  // checkpoint.dir. Collective.
  std::string save(const CheckpointData& data, int stages, int replicas, int64_t micro_batches);

  // The checkpoint to resume from: `resume` is a path (a single rank only:
  // ConfigError otherwise) or "auto", the newest step every rank holds
  // complete with a manifest. A candidate that fails to load on any rank is
  // skipped by all (a warning); IoError when there were candidates and none
  // loaded; nullopt when there are none. Collective.
  std::optional<LoadedCheckpoint> load_for_resume(const std::string& resume);

  // A multi-rank job: ConfigError naming checkpoint.dir unless the saved
  // manifest's rank count is this job's and its K is `stages`, or (with
  // `elastic`: freezing may have compressed the pipeline) the saved K is at
  // most `stages`.
  void check_layout(const TrainerState& saved, int stages, int replicas, bool elastic) const;

 private:
  std::string dir_;  // checkpoint.dir
  Communicator& world_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

}  // namespace pipet
