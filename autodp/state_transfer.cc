#include "autodp/state_transfer.h"

#include "runtime/comm/communicator.h"
#include "runtime/core/errors.h"
#include "runtime/model/model.h"

#include <chrono>
#include <cstring>
#include <memory>

namespace pipet {

namespace {

constexpr int kTransferTag = 31;

std::pair<size_t, size_t> range_of(const OwnershipLayout& layout, int rank) {
  const auto [begin, end] = layout.ranges.at(static_cast<size_t>(rank % layout.stages));
  // Stage 0 also holds the frozen prefix (it is the start of its range).
  return {begin, end};
}

bool holds(const OwnershipLayout& layout, int rank, size_t sublayer) {
  const auto [begin, end] = range_of(layout, rank);
  return sublayer >= begin && sublayer < end;
}

// The rank that sends sub-layer j to `receiver`: the holder of j in the
// receiver's own replica of the old layout.
int sender_of(const OwnershipLayout& before, int receiver, size_t sublayer) {
  int stage = -1;
  for (int s = 0; s < before.stages; ++s)
    if (sublayer >= before.ranges[s].first && sublayer < before.ranges[s].second) stage = s;
  if (stage < 0) throw ModelError("sub-layer " + std::to_string(sublayer) + " has no owner in the old layout");
  return (receiver / before.stages) * before.stages + stage;
}

// What travels for sub-layer j: its parameters, then the slots of each
// parameter when j stays trainable. `state` supplies (sender) or receives
// (receiver) the slot tensors.
void collect(TransformerModel& model, size_t sublayer, bool with_state, const std::vector<std::string>& slots,
             std::map<std::string, torch::Tensor>& state, bool sender, std::vector<torch::Tensor>& out) {
  for (auto& [name, parameter] : model.sublayer(sublayer).hf_parameters()) {
    out.push_back(parameter);
    if (!with_state) continue;
    for (const std::string& slot : slots) {
      const std::string key = name + "/" + slot;
      auto it = state.find(key);
      torch::Tensor value;
      if (sender && it != state.end()) {
        value = it->second;
      } else {
        value = slot == "step" ? torch::zeros({}, torch::kInt64) : torch::zeros_like(parameter);
        if (!sender) state[key] = value;
      }
      out.push_back(value);
    }
  }
}

int64_t total_bytes(const std::vector<torch::Tensor>& tensors) {
  int64_t total = 0;
  for (const torch::Tensor& t : tensors) total += static_cast<int64_t>(t.nbytes());
  return total;
}

}  // namespace

TransferStats move_training_state(Communicator& world, TransformerModel& model,
                                  const OwnershipLayout& before, const OwnershipLayout& after,
                                  const std::vector<std::string>& slots,
                                  std::map<std::string, torch::Tensor>& optimizer_state) {
  const auto started = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  const int ranks = world.size();
  const int me = world.rank();
  if (before.stages < 1 || after.stages < 1 || ranks % before.stages != 0 || ranks % after.stages != 0 ||
      static_cast<int>(before.ranges.size()) != before.stages ||
      static_cast<int>(after.ranges.size()) != after.stages)
    throw ModelError("moving training state: layouts of " + std::to_string(before.stages) + " and " +
                     std::to_string(after.stages) + " stages do not fit " + std::to_string(ranks) + " ranks");

  // Every rank derives the same plan: for each receiver, the sub-layers it
  // newly holds, grouped by sender.
  std::map<int, std::vector<size_t>> to_send;     // receiver -> sub-layers
  std::map<int, std::vector<size_t>> to_receive;  // sender -> sub-layers
  for (int receiver = 0; receiver < ranks; ++receiver) {
    const auto [begin, end] = range_of(after, receiver);
    for (size_t j = begin; j < end; ++j) {
      if (holds(before, receiver, j)) continue;
      const int sender = sender_of(before, receiver, j);
      if (sender == me) to_send[receiver].push_back(j);
      if (receiver == me) to_receive[sender].push_back(j);
    }
  }

  // Every message of the move in one exchange: no send waits for another
  // rank's receive to be posted first (NCCL's rules hold, whatever the
  // pattern of senders and receivers).
  TransferStats stats;
  std::vector<P2POp> ops;
  for (const auto& [receiver, sublayers] : to_send) {
    std::vector<torch::Tensor> tensors;
    for (size_t j : sublayers)
      collect(model, j, j >= after.frozen_end, slots, optimizer_state, /*sender=*/true, tensors);
    torch::Tensor packed = torch::empty({total_bytes(tensors)}, torch::kUInt8);
    int64_t offset = 0;
    for (const torch::Tensor& t : tensors) {
      // The move travels over the world's host communicator: GPU state is staged through host memory.
      const torch::Tensor source = t.to(torch::kCPU).contiguous();
      std::memcpy(packed.data_ptr<uint8_t>() + offset, source.data_ptr(), source.nbytes());
      offset += static_cast<int64_t>(source.nbytes());
    }
    stats.bytes_sent += packed.numel();
    ++stats.messages_sent;
    ops.push_back(send_op(packed, receiver, kTransferTag, "state move to rank " + std::to_string(receiver)));
  }
  std::vector<std::pair<torch::Tensor, std::vector<torch::Tensor>>> received;  // packed, its tensors
  for (const auto& [sender, sublayers] : to_receive) {
    std::vector<torch::Tensor> tensors;
    for (size_t j : sublayers)
      collect(model, j, j >= after.frozen_end, slots, optimizer_state, /*sender=*/false, tensors);
    torch::Tensor packed = torch::empty({total_bytes(tensors)}, torch::kUInt8);
    ops.push_back(recv_op(packed, sender, kTransferTag, "state move from rank " + std::to_string(sender)));
    received.emplace_back(packed, std::move(tensors));
  }
  world.exchange(std::move(ops));
  for (auto& [packed, tensors] : received) {
    int64_t offset = 0;
    for (torch::Tensor& t : tensors) {
      t.copy_(torch::from_blob(packed.data_ptr<uint8_t>() + offset, t.sizes(), t.options().device(torch::kCPU)));
      offset += static_cast<int64_t>(t.nbytes());
    }
  }

  // Keep exactly the state of the new range's trainable parameters. A
  // sub-layer an unfreeze re-activates had no state: it starts with fresh
  // slots (zero moments, step 0), as a newly built optimizer would.
  std::map<std::string, torch::Tensor> kept;
  const auto [begin, end] = range_of(after, me);
  for (size_t j = std::max(begin, after.frozen_end); j < end; ++j)
    for (const auto& [name, parameter] : model.sublayer(j).hf_parameters())
      for (const std::string& slot : slots) {
        auto it = optimizer_state.find(name + "/" + slot);
        if (it != optimizer_state.end()) {
          kept.emplace(it->first, it->second);
        } else if (j < before.frozen_end) {
          kept.emplace(name + "/" + slot,
                       slot == "step" ? torch::zeros({}, torch::kInt64) : torch::zeros_like(parameter));
        }
      }
  optimizer_state = std::move(kept);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return stats;
}

}  // namespace pipet
