// The partition unit of AutoPipe: a model is a sequence of sub-layers
// (embedding, then per block an attention and an MLP sub-layer with the
// residual inside each, then the head). Boundaries never cut a skip
// connection, so any contiguous range of sub-layers can run on one stage and
// hand `Activations` to the next.
#pragma once

#include "runtime/core/tensor_names.h"
#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

// What flows between sub-layers (and, later, between pipeline stages).
//  - Into the embedding: `hidden` is pixel_values [B,C,H,W] float (ViT) or
//    input_ids [B,S] int64 (BERT, with token_type_ids and attention_mask).
//  - Between sub-layers: `hidden` is [B,S,H]; BERT carries attention_mask.
//  - Out of the head: `hidden` is the logits [B,num_labels].
struct Activations {
  torch::Tensor hidden;
  torch::Tensor attention_mask;   // [B,S] int64 1 = token, 0 = padding (BERT)
  torch::Tensor token_type_ids;   // [B,S] int64 (BERT embedding input only)
};

enum class SubLayerKind { kEmbedding, kAttention, kMlp, kHead };
const char* to_string(SubLayerKind kind);

class SubLayer : public torch::nn::Module {
 public:
  SubLayer(SubLayerKind kind, std::string hf_prefix, int64_t block)
      : kind_(kind), hf_prefix_(std::move(hf_prefix)), block_(block) {}

  virtual Activations forward(const Activations& in) = 0;

  SubLayerKind kind() const { return kind_; }
  // Transformer block index for attention/MLP sub-layers; -1 otherwise.
  int64_t block() const { return block_; }
  // Prefix that makes the local parameter names Hugging Face names,
  // e.g. "vit.encoder.layer.3." for a ViT block's sub-layers.
  const std::string& hf_prefix() const { return hf_prefix_; }
  // Human-readable identity for logs: "embedding", "block3.attention", "head".
  std::string display_name() const;

  // (Hugging Face name, tensor) for every parameter of this sub-layer.
  NamedTensors hf_parameters() const;
  int64_t parameter_count() const;

 protected:
  // Dropout number `index` of this sub-layer: counter-based masks keyed by
  // its site (runtime/model/counter_dropout.h), when training.
  uint64_t dropout_site(int index) const;
  torch::Tensor dropout(const torch::Tensor& x, double p, int index) const;

 private:
  SubLayerKind kind_;
  std::string hf_prefix_;
  int64_t block_;
};

}  // namespace pipet
