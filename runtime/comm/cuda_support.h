// CUDA runtime helpers shared by the CUDA-aware communicators (host-staged MPI
// and NCCL). Internal to runtime/comm: included only by its .cc files built
// with PIPET_WITH_CUDA, never by a public header (DESIGN.md §2).
//
// LibTorch's CUDA API is deliberately not used: the same sources compile
// against a CPU-only LibTorch (compile-only check) and a CUDA one.
#pragma once

#include "runtime/core/torch_pch.h"

#include <cuda_runtime_api.h>

#include <string>

namespace pipet::cuda_support {

// "cudaErrorInvalidDevice (invalid device ordinal)".
std::string error_text(cudaError_t code);

// Throws CommError "<what>: <call> failed: <error_text>" unless code is success.
void check(cudaError_t code, const std::string& what, const char* call);

// CUDA devices this process can use; 0 when there is no driver or device.
int device_count() noexcept;

// Makes `device` current for the guard's lifetime; restores the previous one.
class DeviceGuard {
 public:
  DeviceGuard(int device, const std::string& what);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

// A cudaEvent_t without timing (cheap to record and query). Move-only.
class Event {
 public:
  explicit Event(const std::string& what);
  ~Event();
  Event(Event&& other) noexcept : event_(other.event_) { other.event_ = nullptr; }
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Throws CommError naming `what` unless `tensor` is a defined, strided CUDA
// tensor with a device index; returns that index.
int check_cuda_tensor(const torch::Tensor& tensor, const std::string& what);

// A CPU tensor of `sizes` x `type` in page-locked memory from LibTorch's
// caching host allocator (reused after the last reference goes, never freed
// per message). Throws CommError naming `what` when it cannot be allocated.
torch::Tensor pinned_empty(at::IntArrayRef sizes, at::ScalarType type, const std::string& what);

// Synchronous copies of `bytes` between a contiguous device tensor and a
// contiguous host tensor, ordered after the work queued on `stream` (nullptr:
// the legacy default stream, where LibTorch runs unless a stream guard is set).
void copy_device_to_host(torch::Tensor& host, const torch::Tensor& device, cudaStream_t stream,
                         const std::string& what);
void copy_host_to_device(torch::Tensor& device, const torch::Tensor& host, cudaStream_t stream,
                         const std::string& what);

}  // namespace pipet::cuda_support
