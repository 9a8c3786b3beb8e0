// torch::Tensor <-> safetensors.
#pragma once

#include "runtime/core/safetensors.h"
#include "runtime/core/tensor_names.h"
#include "runtime/core/torch_pch.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

torch::ScalarType to_scalar_type(DType dtype);
// Throws FormatError for a scalar type safetensors cannot hold.
DType from_scalar_type(torch::ScalarType type);

// Every tensor of the file, as CPU tensors that own or share the mapping
// (they stay valid after the call). Errors as SafetensorsFile::open.
std::map<std::string, torch::Tensor> load_safetensors(const std::string& path);

// Writes tensors (any device/layout; made contiguous CPU) atomically.
void save_safetensors(const std::string& path,
                      const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace pipet
