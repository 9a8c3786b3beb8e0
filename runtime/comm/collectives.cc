#include "runtime/comm/collectives.h"

#include <cstring>

#include "runtime/comm/communicator.h"

namespace pipet {

std::string broadcast_string(Communicator& group, const std::string& text, int root) {
  torch::Tensor length = torch::tensor({static_cast<int64_t>(text.size())}, torch::kInt64);
  group.broadcast(length, {root});
  torch::Tensor bytes = torch::empty({length.item<int64_t>()}, torch::kUInt8);
  if (group.rank() == root && !text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  group.broadcast(bytes, {root});
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()), bytes.numel());
}

std::vector<torch::Tensor> all_gather_variable(Communicator& group, const torch::Tensor& local) {
  torch::Tensor length = torch::tensor({local.numel()}, torch::kInt64);
  const torch::Tensor lengths = group.all_gather(length).reshape({-1});
  const int64_t longest = lengths.max().item<int64_t>();
  torch::Tensor padded = torch::zeros({longest}, local.options());
  padded.narrow(0, 0, local.numel()).copy_(local);
  const torch::Tensor gathered = group.all_gather(padded);
  std::vector<torch::Tensor> out;
  for (int64_t r = 0; r < group.size(); ++r)
    out.push_back(gathered[r].narrow(0, 0, lengths[r].item<int64_t>()));
  return out;
}

}  // namespace pipet
