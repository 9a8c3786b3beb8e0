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
  // LibTorch's caching host allocator: a freed block goes back to its cache
  // instead of to cudaFreeHost, which would synchronise the whole device on
  // every staged message (and cudaMallocHost costs milliseconds per call).
  // Reusing a block at once is safe here: every copy into or out of it is
  // synchronised before the tensor is released.
  try {
    return torch::empty(sizes, torch::TensorOptions().dtype(type).device(torch::kCPU).pinned_memory(true));
  } catch (const c10::Error& e) {
    throw CommError(what + ": cannot allocate pinned host memory for " + std::to_string(c10::multiply_integers(sizes)) +
                    " elements: " + e.what_without_backtrace());
  }
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
