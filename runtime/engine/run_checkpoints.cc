#include "runtime/engine/run_checkpoints.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "runtime/comm/communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/engine/stage_layout.h"

namespace pipet {
namespace {

// The first rank of this host (Open MPI's local rank), which writes the
// host's copy of shared files such as checkpoint manifests.
bool local_rank_leader(int world_rank) {
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) return std::string(local) == "0";
  return world_rank == 0;
}

}  // namespace

NamedTensors rng_state() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return {{"torch_cpu", generator.get_state()}};
}

void restore_rng(const std::map<std::string, torch::Tensor>& rng, const std::string& source) {
  auto it = rng.find("torch_cpu");
  if (it == rng.end()) throw FormatError(source + ": random generator state 'torch_cpu' is missing");
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(it->second);
  } catch (const c10::Error& e) {
    throw FormatError(source + ": random generator state 'torch_cpu' is invalid: " + e.what_without_backtrace());
  }
}

RunCheckpoints::RunCheckpoints(const CheckpointConfig& config, Communicator& world)
    : dir_(config.dir), world_(world) {
  if (dir_.empty()) return;
  // One directory per rank, so hosts without a shared filesystem each hold
  // their own ranks' parts.
  std::string rank_dir = dir_;
  if (world_.size() > 1) rank_dir += "/" + rank_directory_name(world_.rank());
  checkpointer_ = std::make_unique<Checkpointer>(rank_dir, config.keep);
}

RunCheckpoints::~RunCheckpoints() = default;

std::string RunCheckpoints::save(const CheckpointData& data, int stages, int replicas, int64_t micro_batches) {
  if (!checkpointer_) return "";
  const std::string path = checkpointer_->save(data);
  const int64_t step = data.state.step;
  if (world_.size() > 1) {
    // The manifest ties the parts together: written once every rank's part is
    // in place, by the first rank of each host (no shared filesystem needed).
    world_.barrier();
    if (local_rank_leader(world_.rank())) {
      nlohmann::json manifest = {{"step", step},
                                 {"world_size", world_.size()},
                                 {"pipeline_stages", stages},
                                 {"replicas", replicas},
                                 {"micro_batches", micro_batches}};
      write_checkpoint_manifest(dir_, step, manifest);
    }
    world_.barrier();
    if (local_rank_leader(world_.rank())) prune_checkpoint_manifests(dir_, checkpointer_->list());
  }
  if (world_.rank() == 0) spdlog::info("[checkpoint] saved {}", path);
  return path;
}

std::optional<LoadedCheckpoint> RunCheckpoints::load_for_resume(const std::string& resume) {
  // Which checkpoint: an explicit path (single rank) or the newest step that
  // every rank holds complete, agreed over the world.
  std::vector<std::string> candidates;
  if (resume != "auto") {
    if (world_.size() > 1)
      throw ConfigError("checkpoint.resume: a path names one rank's checkpoint; a " + std::to_string(world_.size()) +
                        "-rank job resumes with 'auto' from checkpoint.dir");
    candidates.push_back(resume);
  } else if (checkpointer_) {
    std::vector<std::string> own = checkpointer_->list();
    if (world_.size() > 1) {
      // Newest first, at most 64 steps per rank, -1 padded.
      constexpr int64_t kSlots = 64;
      torch::Tensor steps = torch::full({kSlots}, -1, torch::kInt64);
      int64_t slot = 0;
      for (auto it = own.rbegin(); it != own.rend() && slot < kSlots; ++it) {
        const int64_t step = checkpoint_step_of(*it);
        if (step >= 0 && checkpoint_manifest_exists(dir_, step)) steps[slot++] = step;
      }
      const torch::Tensor all = world_.all_gather(steps);
      for (int64_t i = 0; i < kSlots; ++i) {
        const int64_t step = all[world_.rank()][i].item<int64_t>();
        if (step < 0) break;
        if (all.eq(step).any(1).all().item<bool>())
          candidates.push_back(checkpointer_->dir() + "/" + checkpoint_directory_name(step));
      }
    } else {
      candidates.assign(own.rbegin(), own.rend());
    }
  }

  for (const std::string& path : candidates) {
    std::optional<LoadedCheckpoint> checkpoint;
    std::string failure;
    try {
      checkpoint = Checkpointer::load(path);
    } catch (const IoError& e) {
      if (resume != "auto") throw;
      failure = e.what();
    }
    // Every rank must resume from the same step: one failure moves all of
    // them to the next older candidate.
    torch::Tensor failed = torch::tensor({failure.empty() ? 0.0 : 1.0}, torch::kDouble);
    world_.all_reduce(failed);
    if (failed.item<double>() > 0) {
      if (!failure.empty()) spdlog::warn("[checkpoint] skipping {}: {}", path, failure);
      continue;
    }
    return checkpoint;
  }
  if (!candidates.empty())
    throw IoError("checkpoint.dir '" + dir_ + "': none of the " + std::to_string(candidates.size()) +
                  " checkpoints could be loaded (see the warnings above)");
  return std::nullopt;
}

void RunCheckpoints::check_layout(const TrainerState& saved, int stages, int replicas, bool elastic) const {
  if (world_.size() == 1) return;
  const nlohmann::json manifest = read_checkpoint_manifest(dir_, saved.step);
  const int64_t saved_stages = manifest.value("pipeline_stages", int64_t{-1});
  const int64_t ranks = manifest.value("world_size", int64_t{-1});
  // Freezing may have compressed the pipeline: the checkpoint's K is valid
  // when it divides the same rank count.
  const bool elastic_layout =
      elastic && saved_stages == saved.pipeline_stages && saved_stages >= 1 && saved_stages <= stages;
  if (ranks != world_.size() || (saved_stages != stages && !elastic_layout)) {
    throw ConfigError("checkpoint.dir '" + dir_ + "' holds step " + std::to_string(saved.step) + " written by " +
                      std::to_string(ranks) + " ranks as " +
                      layout_text(saved_stages, ranks / std::max<int64_t>(saved_stages, 1)) + ", but this job is " +
                      std::to_string(world_.size()) + " ranks as " + layout_text(stages, replicas) +
                      "; resume with the same parallel.pipeline_stages and rank count");
  }
}

}  // namespace pipet
