#include "runtime/engine/compute_device.h"

#include <torch/cuda.h>

#include <string>

#include "pipet/build_config.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/threads.h"

namespace pipet {

ComputeDevice ComputeDevice::from_config(const RuntimeConfig& runtime, int world_rank) {
  ComputeDevice out;
  if (runtime.device == "cuda") {
    const int visible = static_cast<int>(torch::cuda::device_count());
    if (!PIPET_WITH_CUDA || visible == 0) {
      throw ConfigError("runtime.device: 'cuda' on rank " + std::to_string(world_rank) + ", but " +
                        (PIPET_WITH_CUDA ? std::string("this process sees no CUDA device")
                                         : std::string("this build has no GPU path (configure with "
                                                       "PIPET_WITH_CUDA=ON against a CUDA LibTorch; "
                                                       "docs/gpu.md)")));
    }
    out.cuda_index = local_rank_on_this_node() % visible;
    out.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(out.cuda_index));
  }
  if (runtime.precision == "bf16") out.autocast_dtype = torch::kBFloat16;
  return out;
}

Activations ComputeDevice::to_device(const Activations& inputs) const {
  if (!device.is_cuda()) return inputs;
  // Page-locked host memory lets the copy run asynchronously on the current
  // stream, ordered before the forward pass that reads it.
  const auto move = [&](const torch::Tensor& t) {
    if (!t.defined() || t.device() == device) return t;
    return t.pin_memory().to(device, /*non_blocking=*/true);
  };
  Activations out = inputs;
  out.hidden = move(inputs.hidden);
  out.attention_mask = move(inputs.attention_mask);
  out.token_type_ids = move(inputs.token_type_ids);
  return out;
}

void ComputeDevice::synchronize() const {
  if (device.is_cuda()) torch::cuda::synchronize(cuda_index);
}

}  // namespace pipet
