// Small collectives built from Communicator's primitives, for messages whose
// size only the sender knows: a string from one rank to all, and every
// rank's variable-length 1-D tensor to all.
#pragma once

#include "runtime/core/torch_pch.h"

#include <string>
#include <vector>

namespace pipet {

class Communicator;

// `text` of rank `root` on every rank of `group` (length first, then bytes).
std::string broadcast_string(Communicator& group, const std::string& text, int root);

// Every rank's 1-D tensor (lengths may differ), in rank order.
std::vector<torch::Tensor> all_gather_variable(Communicator& group, const torch::Tensor& local);

}  // namespace pipet
