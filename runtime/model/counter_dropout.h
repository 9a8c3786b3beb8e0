// Dropout whose masks depend only on what is dropped, never on who drops it:
// element e of sample s at dropout site t in epoch n keeps or drops by the
// e-th output of the SplitMix64 stream keyed by (seed, epoch, site, sample)
// (runtime/core/random.h). Any layout, micro-batch split, transition or
// resume therefore draws the same masks, which per-rank generators
// (torch's bernoulli_) cannot give. A sample is drawn once per epoch, so
// (epoch, sample) names one training draw whatever the batch size.
//
// The executor installs the key of the micro-batch it runs (DropoutScope);
// outside a scope (a model driven directly, a timing probe) dropout falls
// back to torch::dropout.
#pragma once

#include "runtime/core/torch_pch.h"

#include <cstdint>

namespace pipet {

// The draw a micro-batch's forward makes: the run's seed, the epoch and the
// dataset index of every row (CPU int64 [B]).
struct DropoutKey {
  uint64_t seed = 0;
  int64_t epoch = 0;
  torch::Tensor sample_ids;
};

// Makes `key` the current thread's key until destroyed (then the previous
// one, or none). `key` must outlive the scope.
class DropoutScope {
 public:
  explicit DropoutScope(const DropoutKey& key);
  ~DropoutScope();
  DropoutScope(const DropoutScope&) = delete;
  DropoutScope& operator=(const DropoutScope&) = delete;

 private:
  const DropoutKey* previous_;
};

// The current thread's key, or null.
const DropoutKey* current_dropout_key();

// A dropout site: which sub-layer (kind, block) and which of its dropouts.
uint64_t dropout_site(int kind, int64_t block, int index);

// The scaled keep mask (0 or 1/(1-p), in `options`' dtype and device) for a
// tensor of `shape` whose first dimension runs over key.sample_ids
// sample-major ([B,...], or [B*heads,...] as batched attention has it).
// ModelError when the shape does not split into key's rows.
torch::Tensor counter_dropout_mask(const DropoutKey& key, uint64_t site, double p, at::IntArrayRef shape,
                                   const torch::TensorOptions& options);

// The same mask computed with tensor operations only (any device; what
// non-CPU devices use). Bit-identical to counter_dropout_mask on CPU.
torch::Tensor counter_dropout_mask_by_tensor_ops(const DropoutKey& key, uint64_t site, double p,
                                                 at::IntArrayRef shape, const torch::TensorOptions& options);

// Dropout of `x` at `site`: nothing when !training or p == 0; the counter
// mask under a DropoutScope; torch::dropout otherwise.
torch::Tensor dropout_at(const torch::Tensor& x, double p, bool training, uint64_t site);

}  // namespace pipet
