#include "runtime/core/safetensors_torch.h"

#include "runtime/core/errors.h"

#include <cstdint>
#include <cstring>
#include <memory>

namespace pipet {

torch::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kF64: return torch::kFloat64;
    case DType::kF32: return torch::kFloat32;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kInt64;
    case DType::kI32: return torch::kInt32;
    case DType::kI16: return torch::kInt16;
    case DType::kI8: return torch::kInt8;
    case DType::kU8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  throw Error(ExitCode::kInternal,
              "unknown DType value " + std::to_string(static_cast<int>(dtype)));
}

DType from_scalar_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat64: return DType::kF64;
    case torch::kFloat32: return DType::kF32;
    case torch::kFloat16: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kInt64: return DType::kI64;
    case torch::kInt32: return DType::kI32;
    case torch::kInt16: return DType::kI16;
    case torch::kInt8: return DType::kI8;
    case torch::kUInt8: return DType::kU8;
    case torch::kBool: return DType::kBool;
    default:
      throw FormatError(std::string("safetensors cannot hold tensors of type ") +
                        c10::toString(type) +
                        " (supported: Double, Float, Half, BFloat16, Long, Int, Short, Char, "
                        "Byte, Bool)");
  }
}

std::map<std::string, torch::Tensor> load_safetensors(const std::string& path) {
  // Shared by every zero-copy tensor: the mapping lives until the last one dies.
  auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(path));
  std::map<std::string, torch::Tensor> tensors;
  for (const TensorInfo& info : file->tensors()) {
    const auto options = torch::TensorOptions().dtype(to_scalar_type(info.dtype)).device(torch::kCPU);
    const uint8_t* bytes = file->data(info);
    // Kernels may assume element alignment; a misaligned view would be UB.
    const bool aligned = reinterpret_cast<uintptr_t>(bytes) % dtype_size(info.dtype) == 0;
    if (info.nbytes() > 0 && aligned && file->writable()) {
      // The mapping is private and copy-on-write, so a mutable view is safe.
      void* view = const_cast<uint8_t*>(bytes);
      tensors.emplace(info.name, torch::from_blob(view, info.shape, [file](void*) {}, options));
    } else {
      torch::Tensor copy = torch::empty(info.shape, options);
      if (info.nbytes() > 0) std::memcpy(copy.data_ptr(), bytes, info.nbytes());
      tensors.emplace(info.name, std::move(copy));
    }
  }
  return tensors;
}

void save_safetensors(const std::string& path,
                      const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  torch::NoGradGuard no_grad;
  // Holds the contiguous CPU versions alive while their bytes are written; for
  // tensors that already are contiguous CPU this is the same storage, no copy.
  std::vector<torch::Tensor> prepared;
  std::vector<TensorBytes> views;
  prepared.reserve(tensors.size());
  views.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined())
      throw FormatError(path + ": tensor '" + name + "' is undefined and cannot be saved");
    DType dtype;
    try {
      dtype = from_scalar_type(tensor.scalar_type());
    } catch (const FormatError& e) {
      throw FormatError(path + ": tensor '" + name + "': " + e.what());
    }
    torch::Tensor cpu = tensor;
    if (cpu.layout() != torch::kStrided) cpu = cpu.to_dense();
    cpu = cpu.to(torch::kCPU).resolve_neg().contiguous();
    prepared.push_back(cpu);

    TensorBytes view;
    view.name = name;
    view.dtype = dtype;
    view.shape = cpu.sizes().vec();
    view.data = cpu.data_ptr();
    view.nbytes = static_cast<size_t>(cpu.numel()) * cpu.element_size();
    views.push_back(std::move(view));
  }
  write_safetensors(path, views, metadata);
}

}  // namespace pipet
