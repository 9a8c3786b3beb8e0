// A batch as produced by a dataset: image or text inputs, labels, and the
// dataset indices of its samples (for caching and deterministic sharding).
#pragma once

#include "runtime/core/torch_pch.h"

#include <cstdint>

namespace pipet {

struct Batch {
  torch::Tensor pixel_values;    // float32 [B,C,H,W], normalised (image data)
  torch::Tensor input_ids;       // int64 [B,S] (text data)
  torch::Tensor attention_mask;  // int64 [B,S], 1 = token, 0 = padding
  torch::Tensor token_type_ids;  // int64 [B,S]
  torch::Tensor labels;          // int64 [B]
  torch::Tensor sample_ids;      // int64 [B], dataset indices

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

}  // namespace pipet
