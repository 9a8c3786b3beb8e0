#include "runtime/comm/cuda_support.h"

#include "runtime/core/errors.h"

namespace pipet::cuda_support {

std::string error_text(cudaError_t code) {
  return std::string(cudaGetErrorName(code)) + " (" + cudaGetErrorString(code) + ")";
}

void check(cudaError_t code, const std::string& what, const char* call) {
  if (code == cudaSuccess) return;
  throw CommError(what + ": " + call + " failed: " + error_text(code));
}

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error for later calls
    return 0;
  }
  return count;
}

DeviceGuard::DeviceGuard(int device, const std::string& what) {
  check(cudaGetDevice(&previous_), what, "cudaGetDevice");
  if (previous_ == device) return;
  check(cudaSetDevice(device), what, "cudaSetDevice");
  changed_ = true;
}

DeviceGuard::~DeviceGuard() {
  if (changed_) cudaSetDevice(previous_);
}

Event::Event(const std::string& what) {
  check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), what, "cudaEventCreate");
}

Event::~Event() {
  // A recorded event still pending is released by CUDA once it completes.
  if (event_ != nullptr) cudaEventDestroy(event_);
}

int check_cuda_tensor(const torch::Tensor& tensor, const std::string& what) {
  if (!tensor.defined()) throw CommError(what + ": the tensor is undefined");
  if (!tensor.device().is_cuda())
    throw CommError(what + ": expected a CUDA tensor, got one on " + tensor.device().str());
  if (tensor.layout() != torch::kStrided)
    throw CommError(what + ": only dense (strided) tensors are supported");
  if (!tensor.device().has_index())
    throw CommError(what + ": the CUDA tensor has no device index");
  return tensor.device().index();
}

torch::Tensor pinned_empty(at::IntArrayRef sizes, at::ScalarType type, const std::string& what) {
  const auto options = torch::TensorOptions().dtype(type).device(torch::kCPU);
  int64_t numel = 1;
  for (int64_t size : sizes) numel *= size;
  const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(type);
  if (bytes == 0) return torch::empty(sizes, options);
  void* memory = nullptr;
  check(cudaMallocHost(&memory, bytes), what, "cudaMallocHost");
  return torch::from_blob(memory, sizes, [](void* pointer) { cudaFreeHost(pointer); }, options);
}

void copy_device_to_host(torch::Tensor& host, const torch::Tensor& device, cudaStream_t stream,
                         const std::string& what) {
  if (device.nbytes() == 0) return;
  DeviceGuard guard(device.device().index(), what);
  check(cudaMemcpyAsync(host.data_ptr(), device.data_ptr(), device.nbytes(), cudaMemcpyDeviceToHost,
                        stream),
        what, "cudaMemcpyAsync (device to host)");
  check(cudaStreamSynchronize(stream), what, "cudaStreamSynchronize");
}

void copy_host_to_device(torch::Tensor& device, const torch::Tensor& host, cudaStream_t stream,
                         const std::string& what) {
  if (device.nbytes() == 0) return;
  DeviceGuard guard(device.device().index(), what);
  check(cudaMemcpyAsync(device.data_ptr(), host.data_ptr(), device.nbytes(), cudaMemcpyHostToDevice,
                        stream),
        what, "cudaMemcpyAsync (host to device)");
  check(cudaStreamSynchronize(stream), what, "cudaStreamSynchronize");
}

}  // namespace pipet::cuda_support
