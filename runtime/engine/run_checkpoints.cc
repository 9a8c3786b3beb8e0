#include "runtime/engine/run_checkpoints.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include "runtime/comm/collectives.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"

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

const LoadedCheckpoint& ResumePoint::primary() const {
  auto own = parts.find(own_part);
  return own != parts.end() ? own->second : parts.begin()->second;
}

namespace {

// The part `name` is read from: the own part when it holds it, else the
// lowest opened one; -1 when none.
int reading_part(const std::map<std::string, SavedTensor>& names, const std::map<int, LoadedCheckpoint>& parts,
                 int own_part, const std::string& name) {
  auto it = names.find(name);
  if (it == names.end()) return -1;
  int chosen = -1;
  for (int part : it->second.parts) {
    if (parts.count(part) == 0) continue;
    if (part == own_part) return part;
    if (chosen < 0 || part < chosen) chosen = part;
  }
  return chosen;
}

torch::Tensor tensor_of(const std::map<std::string, torch::Tensor>& held, const std::string& name) {
  auto it = held.find(name);
  return it == held.end() ? torch::Tensor() : it->second;
}

// One rank's tensor names and shapes as lines "<kind>\t<name>\t<d0,d1,...>".
std::string describe_tensors(const NamedTensors& model, const NamedTensors& optimizer) {
  std::string out;
  const auto add = [&](char kind, const NamedTensors& tensors) {
    for (const auto& [name, tensor] : tensors) {
      out += kind;
      out += '\t' + name + '\t';
      for (int64_t d = 0; d < tensor.dim(); ++d) out += (d ? "," : "") + std::to_string(tensor.size(d));
      out += '\n';
    }
  };
  add('m', model);
  add('o', optimizer);
  return out;
}

}  // namespace

torch::Tensor ResumePoint::model_tensor(const std::string& name) const {
  const int part = reading_part(saved.model, parts, own_part, name);
  return part < 0 ? torch::Tensor() : tensor_of(parts.at(part).model, name);
}

torch::Tensor ResumePoint::optimizer_tensor(const std::string& name) const {
  const int part = reading_part(saved.optimizer, parts, own_part, name);
  return part < 0 ? torch::Tensor() : tensor_of(parts.at(part).optimizer, name);
}

std::string ResumePoint::model_file(const std::string& name) const {
  const int part = reading_part(saved.model, parts, own_part, name);
  return (part < 0 ? primary().path : parts.at(part).path) + "/model.safetensors";
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

std::string RunCheckpoints::save(const CheckpointData& data, int stages, int replicas, int initial_stages,
                                 int64_t micro_batches) {
  if (!checkpointer_) return "";
  const std::string path = checkpointer_->save(data);
  const int64_t step = data.state.step;
  if (world_.size() > 1) {
    // Every part's names and shapes; gathered once every part is in place,
    // so the manifest written after it ties complete parts together. The
    // first rank of each host writes it (no shared filesystem needed).
    const std::string mine = describe_tensors(data.model, data.optimizer);
    torch::Tensor bytes = torch::empty({static_cast<int64_t>(mine.size())}, torch::kUInt8);
    if (!mine.empty()) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
    const std::vector<torch::Tensor> all = all_gather_variable(world_, bytes);
    if (local_rank_leader(world_.rank())) {
      std::vector<std::vector<std::string>> model(all.size()), optimizer(all.size());
      std::map<std::string, std::vector<int64_t>> shapes;
      for (size_t rank = 0; rank < all.size(); ++rank) {
        std::istringstream lines(std::string(reinterpret_cast<const char*>(all[rank].data_ptr()), all[rank].numel()));
        for (std::string line; std::getline(lines, line);) {
          const size_t tab1 = line.find('\t');
          const size_t tab2 = line.find('\t', tab1 + 1);
          const std::string name = line.substr(tab1 + 1, tab2 - tab1 - 1);
          (line[0] == 'm' ? model : optimizer)[rank].push_back(name);
          std::vector<int64_t>& shape = shapes[name];
          shape.clear();
          std::istringstream dims(line.substr(tab2 + 1));
          for (std::string d; std::getline(dims, d, ',');) shape.push_back(std::stoll(d));
        }
      }
      write_checkpoint_manifest(dir_, step,
                                manifest_json(step, world_.size(), stages, replicas, initial_stages, micro_batches,
                                              model, optimizer, shapes));
    }
    world_.barrier();
    if (local_rank_leader(world_.rank())) prune_checkpoint_manifests(dir_, checkpointer_->list());
  }
  if (world_.rank() == 0) spdlog::info("[checkpoint] saved {}", path);
  return path;
}

std::optional<ResumePoint> RunCheckpoints::open(const SavedStep& step, int initial_stages,
                                                std::string* failure) const {
  ResumePoint point;
  point.saved = step;
  const int rank = world_.rank();
  const bool same_world = step.world_size == world_.size();
  // Without a recorded starting K (version 1, a single rank), the saved K
  // is the layout's when it is at most this job's (freezing compresses).
  point.same_layout = same_world && (step.initial_stages >= 0 ? step.initial_stages == initial_stages
                                                                : step.stages <= initial_stages);
  point.own_part = rank < step.world_size ? rank : -1;
  try {
    if (point.same_layout) {
      point.parts.emplace(rank, open_part(point.saved, rank));
    } else {
      for (int part = 0; part < step.world_size; ++part) point.parts.emplace(part, open_part(point.saved, part));
    }
  } catch (const IoError& e) {
    *failure = e.what();
    return std::nullopt;
  }
  return point;
}

std::optional<ResumePoint> RunCheckpoints::load_for_resume(const std::string& resume, int initial_stages) {
  // Candidates, newest first (list_saved_steps), travelling between ranks as
  // keys 2*step + 1 (a manifest) or 2*step (a single-rank step directory).
  std::vector<int64_t> keys;
  if (resume == "auto" && !dir_.empty()) {
    for (const SavedStepEntry& entry : list_saved_steps(dir_))
      keys.push_back(2 * entry.step + (entry.manifest ? 1 : 0));
    if (world_.size() > 1) {
      // The steps every rank sees (hosts may hold their own copies).
      constexpr int64_t kSlots = 64;
      torch::Tensor mine = torch::full({kSlots}, -1, torch::kInt64);
      for (size_t i = 0; i < keys.size() && i < static_cast<size_t>(kSlots); ++i) mine[i] = keys[i];
      const torch::Tensor all = world_.all_gather(mine);
      std::vector<int64_t> common;
      for (const int64_t key : keys)
        if (all.eq(key).any(1).all().item<bool>()) common.push_back(key);
      keys = common;
    }
  }

  const size_t count = resume == "auto" ? keys.size() : 1;
  std::string last_failure;
  for (size_t i = 0; i < count; ++i) {
    std::string failure;
    std::optional<ResumePoint> point;
    std::string what = resume == "auto" ? "step " + std::to_string(keys[i] / 2) : resume;
    try {
      // An explicit path must be there: its errors are the job's.
      const SavedStep step = resume == "auto" ? saved_step_of(dir_, SavedStepEntry{keys[i] / 2, keys[i] % 2 == 1})
                                              : resolve_saved_step(resume);
      point = open(step, initial_stages, &failure);
    } catch (const IoError& e) {
      failure = e.what();
    }
    // Every rank must resume from the same step: one failure moves all of
    // them to the next older candidate (an explicit path fails them all).
    torch::Tensor failed = torch::tensor({failure.empty() ? 0.0 : 1.0}, torch::kDouble);
    world_.all_reduce(failed);
    if (failed.item<double>() > 0) {
      if (resume != "auto")
        throw IoError("checkpoint.resume '" + resume + "': " +
                      (failure.empty() ? std::string("another rank could not open it (see its error)") : failure));
      if (!failure.empty()) {
        spdlog::warn("[checkpoint] skipping {}: {}", what, failure);
        last_failure = failure;
      }
      continue;
    }
    return point;
  }
  if (count > 0)
    throw IoError("checkpoint.dir '" + dir_ + "': none of the " + std::to_string(count) +
                  " checkpoints could be loaded; the newest failure: " +
                  (last_failure.empty() ? std::string("on another rank (see its warning)") : last_failure));
  return std::nullopt;
}

}  // namespace pipet
