// Where this rank computes (runtime.device) and the autocast dtype of its
// forward passes (runtime.precision), with the two things every collaborator
// of the trainer asks of a device: move a batch there, and wait for it.
#pragma once

#include "runtime/core/torch_pch.h"
#include "runtime/model/sublayer.h"

namespace pipet {

struct RuntimeConfig;

struct ComputeDevice {
  torch::Device device{torch::kCPU};
  int cuda_index = -1;  // this rank's GPU; -1 on CPU
  c10::ScalarType autocast_dtype = c10::ScalarType::Float;  // kFloat = plain fp32

  // ConfigError naming runtime.device and `world_rank` when CUDA is asked
  // for and this build or process has none. Call before any group exists:
  // the groups' backends depend on it.
  static ComputeDevice from_config(const RuntimeConfig& runtime, int world_rank);

  bool is_cuda() const { return device.is_cuda(); }
  // A batch's tensors on this device (pinned, non-blocking copies).
  Activations to_device(const Activations& inputs) const;
  // Waits for the device's queued kernels (nothing on CPU), so that a host
  // timer reads the device's time.
  void synchronize() const;
};

}  // namespace pipet
