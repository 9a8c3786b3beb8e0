// The one place for LibTorch version differences: 1.13 (Debian, CPU) and 2.x
// (the GPU machine). Code tests these macros, never TORCH_VERSION directly.
#pragma once

#include <torch/version.h>

#define PIPET_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention (fused / flash attention) arrived in 2.0.
#define PIPET_TORCH_HAS_SDPA PIPET_TORCH_AT_LEAST(2, 0)
