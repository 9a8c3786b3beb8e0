#include "autodp/state_replication.h"

#include "runtime/comm/communicator.h"
#include "runtime/core/errors.h"
#include "runtime/model/model.h"

#include <chrono>
#include <cstring>

namespace pipet {

ReplicationStats replicate_training_state(Communicator& world, TransformerModel& model,
                                          const std::vector<std::pair<size_t, size_t>>& ranges,
                                          const std::set<std::string>& optimized,
                                          const std::vector<std::string>& slots,
                                          std::map<std::string, torch::Tensor>& optimizer_state) {
  const auto started = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  ReplicationStats stats;
  if (static_cast<int>(ranges.size()) > world.size())
    throw CommError("replicating training state: " + std::to_string(ranges.size()) +
                    " stages but only " + std::to_string(world.size()) + " ranks");
  for (size_t stage = 0; stage < ranges.size(); ++stage) {
    const int root = static_cast<int>(stage);
    const bool owner = world.rank() == root;
    // The stage's tensors in a fixed order every rank derives alike:
    // parameter, then its slots, sub-layer by sub-layer.
    std::vector<torch::Tensor> targets;
    std::vector<std::string> state_keys;  // "" for a parameter
    for (size_t j = ranges[stage].first; j < ranges[stage].second; ++j) {
      for (auto& [name, parameter] : model.sublayer(j).hf_parameters()) {
        targets.push_back(parameter);
        state_keys.emplace_back();
        if (!optimized.count(name)) continue;
        for (const std::string& slot : slots) {
          const std::string key = name + "/" + slot;
          torch::Tensor value;
          auto it = optimizer_state.find(key);
          if (owner && it != optimizer_state.end()) {
            value = it->second;
          } else {
            value = slot == "step" ? torch::zeros({}, torch::kInt64) : torch::zeros_like(parameter);
          }
          optimizer_state[key] = value;
          targets.push_back(value);
          state_keys.push_back(key);
        }
      }
    }
    int64_t total = 0;
    for (const torch::Tensor& t : targets) total += static_cast<int64_t>(t.nbytes());
    torch::Tensor packed = torch::empty({total}, torch::kUInt8);
    if (owner) {
      int64_t offset = 0;
      for (const torch::Tensor& t : targets) {
        const torch::Tensor source = t.contiguous();
        std::memcpy(packed.data_ptr<uint8_t>() + offset, source.data_ptr(), source.nbytes());
        offset += static_cast<int64_t>(source.nbytes());
      }
    }
    world.broadcast(packed, BroadcastOptions{root});
    stats.bytes += total;
    if (owner) continue;
    int64_t offset = 0;
    for (size_t i = 0; i < targets.size(); ++i) {
      torch::Tensor& t = targets[i];
      const int64_t bytes = static_cast<int64_t>(t.nbytes());
      torch::Tensor view = torch::from_blob(packed.data_ptr<uint8_t>() + offset, t.sizes(),
                                            t.options().device(torch::kCPU));
      t.copy_(view);
      offset += bytes;
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return stats;
}

}  // namespace pipet
