// The one place for LibTorch version differences: 1.13 (Debian, CPU) and 2.x
// (the GPU machine). Code tests these macros, never TORCH_VERSION directly.
#pragma once

#include <torch/version.h>

#define PIPET_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention (fused / flash attention) arrived in 2.0.
#define PIPET_TORCH_HAS_SDPA PIPET_TORCH_AT_LEAST(2, 0)

// The fused multi-tensor AdamW kernel (one launch per parameter group instead
// of about ten per parameter) arrived in 2.0 for CUDA tensors.
#define PIPET_TORCH_HAS_FUSED_ADAMW PIPET_TORCH_AT_LEAST(2, 0)

#include <ATen/autocast_mode.h>

namespace pipet {

// Mixed precision for the ops run while it lives: matrix products and
// attention in `dtype` (bf16), reductions, softmax and normalisation in fp32,
// as torch.autocast does. Weights stay fp32 (the master copy the optimizer
// updates); the casts of a weight are cached until the guard ends. Wrap
// forward passes only: backward follows the dtypes forward recorded.
// `dtype` kFloat means full fp32: the guard then changes nothing.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, c10::ScalarType dtype)
      : device_(device), active_(dtype != c10::ScalarType::Float) {
    if (!active_) return;
#if PIPET_TORCH_AT_LEAST(2, 4)
    was_enabled_ = at::autocast::is_autocast_enabled(device_);
    previous_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_dtype(device_, dtype);
    at::autocast::set_autocast_enabled(device_, true);
#else
    if (device_ == c10::DeviceType::CUDA) {
      was_enabled_ = at::autocast::is_enabled();
      previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(true);
    } else {
      was_enabled_ = at::autocast::is_cpu_enabled();
      previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(true);
    }
#endif
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    // The outermost guard drops the cached weight casts: the optimizer is
    // about to change the weights.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if PIPET_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(device_, was_enabled_);
    at::autocast::set_autocast_dtype(device_, previous_dtype_);
#else
    if (device_ == c10::DeviceType::CUDA) {
      at::autocast::set_enabled(was_enabled_);
      at::autocast::set_autocast_gpu_dtype(previous_dtype_);
    } else {
      at::autocast::set_cpu_enabled(was_enabled_);
      at::autocast::set_autocast_cpu_dtype(previous_dtype_);
    }
#endif
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool was_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

}  // namespace pipet
