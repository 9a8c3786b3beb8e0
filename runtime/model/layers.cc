#include "runtime/model/layers.h"

#include "runtime/core/errors.h"
#include "runtime/core/torch_compat.h"
#include "runtime/model/counter_dropout.h"

#include <cmath>
#include <limits>
#include <sstream>

namespace pipet::model_detail {

std::shared_ptr<Scope> scope(torch::nn::Module& parent, const std::string& name) {
  for (const auto& child : parent.named_children()) {
    if (child.key() == name) {
      auto existing = std::dynamic_pointer_cast<Scope>(child.value());
      PIPET_CHECK(existing != nullptr, "child '" + name + "' exists and is not a scope");
      return existing;
    }
  }
  return parent.register_module(name, std::make_shared<Scope>());
}

LinearParams::LinearParams(int64_t in_features, int64_t out_features)
    : torch::nn::Module("Linear") {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  bias = register_parameter("bias", torch::zeros({out_features}));
}

void LinearParams::init_normal(double std, bool truncated) {
  torch::NoGradGuard no_grad;
  if (truncated) {
    trunc_normal_(weight, std);
  } else {
    weight.normal_(0.0, std);
  }
  bias.zero_();
}

LayerNormParams::LayerNormParams(int64_t size, double eps)
    : torch::nn::Module("LayerNorm"), size_(size), eps_(eps) {
  weight = register_parameter("weight", torch::ones({size}));
  bias = register_parameter("bias", torch::zeros({size}));
}

EmbeddingParams::EmbeddingParams(int64_t num_embeddings, int64_t dim, int64_t padding_idx)
    : torch::nn::Module("Embedding"), padding_idx_(padding_idx) {
  weight = register_parameter("weight", torch::empty({num_embeddings, dim}));
}

void EmbeddingParams::init_normal(double std) {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, std);
  if (padding_idx_ >= 0) weight[padding_idx_].zero_();
}

void trunc_normal_(torch::Tensor& t, double std, double a, double b) {
  torch::NoGradGuard no_grad;
  const auto normal_cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double lower = normal_cdf(a / std);
  const double upper = normal_cdf(b / std);
  if (upper - lower > 0.5) {
    // Rejection sampling: the same distribution, and when the bounds are many
    // standard deviations out (HF's +-2 with std 0.02) nothing is redrawn.
    // Much faster than erfinv for ViT-L sized tensors.
    t.normal_(0.0, std);
    for (auto outside = (t < a).logical_or_(t > b); outside.any().item<bool>();
         outside = (t < a).logical_or_(t > b)) {
      const auto count = outside.sum().item<int64_t>();
      t.masked_scatter_(outside, torch::empty({count}, t.options()).normal_(0.0, std));
    }
    return;
  }
  // Inverse-CDF sampling (torch.nn.init.trunc_normal_'s method) when most
  // draws would fall outside.
  t.uniform_(2.0 * lower - 1.0, 2.0 * upper - 1.0);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.clamp_(a, b);
}

torch::Tensor additive_attention_mask(const torch::Tensor& mask, torch::ScalarType dtype) {
  // finfo(dtype).min as HF uses: finite, so a fully padded row still softmaxes.
  double lowest = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(torch::kHalf, torch::kBFloat16, dtype, "additive_attention_mask",
                                  [&] { lowest = static_cast<double>(std::numeric_limits<scalar_t>::lowest()); });
  return (1.0 - mask.to(dtype)).mul_(lowest).unsqueeze(1);
}

namespace {

// softmax(q k^T / sqrt(d) + mask) v with the probabilities materialised, so
// dropout draws its counter-based mask over them. Heads as contiguous
// [B*heads, S, d] batches for bmm. (Measured on LibTorch 1.13 CPU: one
// concatenated q/k/v GEMM is no faster than three, and adds a weight copy
// per step, so the projections stay separate.)
torch::Tensor materialised_attention(const torch::Tensor& x, const QkvProjections& qkv, int64_t num_heads,
                                     const torch::Tensor& additive_mask, double dropout_p, uint64_t dropout_site) {
  const int64_t batch = x.size(0);
  const int64_t seq = x.size(1);
  const int64_t hidden = x.size(2);
  const int64_t head_dim = hidden / num_heads;
  const auto heads = [&](const LinearParams& projection) {
    return projection.forward(x)
        .view({batch, seq, num_heads, head_dim})
        .transpose(1, 2)
        .reshape({batch * num_heads, seq, head_dim});
  };
  const auto q = heads(*qkv.query);
  const auto k = heads(*qkv.key);
  const auto v = heads(*qkv.value);
  // 1/sqrt(d) rides on the GEMM's alpha instead of a pass over the scores.
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  torch::Tensor scores;
  if (additive_mask.defined()) {
    const auto mask = additive_mask.unsqueeze(1)
                          .expand({batch, num_heads, 1, seq})
                          .reshape({batch * num_heads, 1, seq});
    scores = torch::baddbmm(mask, q, k.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
  } else {
    scores = torch::bmm(q, k.transpose(1, 2)).mul_(scale);  // bmm's backward needs q, k only
  }
  const auto probs = dropout_at(torch::softmax(scores, -1), dropout_p, dropout_p > 0.0, dropout_site);
  return torch::bmm(probs, v)
      .view({batch, num_heads, seq, head_dim})
      .transpose(1, 2)
      .reshape({batch, seq, hidden});
}

}  // namespace

torch::Tensor self_attention(const torch::Tensor& x, const QkvProjections& qkv,
                             int64_t num_heads, const torch::Tensor& additive_mask,
                             double dropout, bool training, uint64_t dropout_site) {
  const double dropout_p = training ? dropout : 0.0;
#if PIPET_TORCH_HAS_SDPA
  // Counter-based masks need the probabilities; otherwise the fused kernel
  // takes the strided [B,heads,S,d] views as they are.
  if (dropout_p == 0.0 || current_dropout_key() == nullptr) {
    const int64_t batch = x.size(0);
    const int64_t seq = x.size(1);
    const int64_t hidden = x.size(2);
    const int64_t head_dim = hidden / num_heads;
    const auto heads = [&](const LinearParams& projection) {
      return projection.forward(x).view({batch, seq, num_heads, head_dim}).transpose(1, 2);
    };
    c10::optional<torch::Tensor> mask;
    if (additive_mask.defined()) mask = additive_mask.unsqueeze(1);  // [B,1,1,S]
    const auto context = at::scaled_dot_product_attention(
        heads(*qkv.query), heads(*qkv.key), heads(*qkv.value), mask, dropout_p, /*is_causal=*/false);
    return context.transpose(1, 2).reshape({batch, seq, hidden});
  }
#endif
  return materialised_attention(x, qkv, num_heads, additive_mask, dropout_p, dropout_site);
}

void check_hidden_states(const torch::Tensor& hidden, int64_t hidden_size, const std::string& where) {
  if (!hidden.defined()) {
    throw ModelError(where + ": no hidden states given (Activations.hidden is empty)");
  }
  if (hidden.dim() != 3 || hidden.size(2) != hidden_size || !hidden.is_floating_point()) {
    throw ModelError(where + ": expected hidden states [batch, seq, " + std::to_string(hidden_size) +
                     "] of a floating-point type, got " + shape_string(hidden.sizes()) + " " +
                     std::string(c10::toString(hidden.scalar_type())));
  }
}

}  // namespace pipet::model_detail
