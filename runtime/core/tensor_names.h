// Small vocabulary for named tensors, shared by the model (HF parameter
// names), the optimizer (state slots), checkpoints and safetensors I/O.
#pragma once

#include "runtime/core/torch_pch.h"

#include <string>
#include <utility>
#include <vector>

namespace pipet {

// (name, tensor) pairs in a meaningful order (model order, file order).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// "[2, 3, 4]": shapes in error messages.
std::string shape_string(c10::IntArrayRef shape);

}  // namespace pipet
