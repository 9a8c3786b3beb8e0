// Building blocks shared by the ViT and BERT sub-layers: parameter holders
// whose registered names are the Hugging Face ones ("weight", "bias"), scope
// modules that give those names their dotted path ("attention.output.dense"),
// Hugging Face initialisers, and multi-head self-attention.
#pragma once

#include "runtime/core/tensor_names.h"
#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <memory>
#include <string>

namespace pipet::model_detail {

// A module that only holds children: it turns the dotted Hugging Face path
// into nested modules, since torch forbids dots in one registered name.
class Scope : public torch::nn::Module {
 public:
  Scope() : torch::nn::Module("Scope") {}
};

// Adds (or returns the existing) child scope `name` of `parent`.
std::shared_ptr<Scope> scope(torch::nn::Module& parent, const std::string& name);

// torch.nn.Linear's parameters: weight [out, in], bias [out].
class LinearParams : public torch::nn::Module {
 public:
  LinearParams(int64_t in_features, int64_t out_features);
  torch::Tensor forward(const torch::Tensor& x) const { return torch::linear(x, weight, bias); }
  // HF: weight normal(0, std) (truncated at +-2 for ViT), bias zero.
  void init_normal(double std, bool truncated);

  torch::Tensor weight;
  torch::Tensor bias;
};

// torch.nn.LayerNorm's parameters over the last dimension, created as HF
// initialises them (weight 1, bias 0).
class LayerNormParams : public torch::nn::Module {
 public:
  LayerNormParams(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x) const {
    return torch::layer_norm(x, {size_}, weight, bias, eps_);
  }

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  int64_t size_;
  double eps_;
};

// torch.nn.Embedding's parameter: weight [num_embeddings, dim].
class EmbeddingParams : public torch::nn::Module {
 public:
  EmbeddingParams(int64_t num_embeddings, int64_t dim, int64_t padding_idx = -1);
  // The padding row gets no gradient, as torch.nn.Embedding(padding_idx=...).
  torch::Tensor forward(const torch::Tensor& ids) const {
    return torch::embedding(weight, ids, padding_idx_);
  }
  // HF: normal(0, std) with the padding row zeroed.
  void init_normal(double std);

  torch::Tensor weight;

 private:
  int64_t padding_idx_;
};

// Fills `t` with normal(0, std) truncated to [a, b] (torch.nn.init.trunc_normal_
// with its default absolute bounds -2, 2, which is what HF's ViT uses), drawing
// from torch's default generator.
void trunc_normal_(torch::Tensor& t, double std, double a = -2.0, double b = 2.0);

// The query/key/value projections of one attention layer.
struct QkvProjections {
  std::shared_ptr<LinearParams> query;
  std::shared_ptr<LinearParams> key;
  std::shared_ptr<LinearParams> value;
};

// Converts a [B,S] 1/0 attention mask into HF's additive float mask
// (1 - mask) * finfo(float).min, shaped [B,1,S] to broadcast over queries.
torch::Tensor additive_attention_mask(const torch::Tensor& mask, torch::ScalarType dtype);

// Multi-head self-attention of x [B,S,H] up to (not including) the output
// projection: softmax(q k^T / sqrt(d) + mask) v, heads merged back to [B,S,H].
// `additive_mask` is [B,1,S] from additive_attention_mask, or undefined.
// Attention-probability dropout `dropout` applies when `training`, with
// counter-based masks of `dropout_site` under a DropoutScope (then the
// probabilities are materialised: a fused kernel draws its own masks).
torch::Tensor self_attention(const torch::Tensor& x, const QkvProjections& qkv,
                             int64_t num_heads, const torch::Tensor& additive_mask,
                             double dropout, bool training, uint64_t dropout_site);

// Throws ModelError unless `hidden` is [batch, seq, hidden_size] floating
// point; `where` names the sub-layer ("block3.attention").
void check_hidden_states(const torch::Tensor& hidden, int64_t hidden_size, const std::string& where);

}  // namespace pipet::model_detail
