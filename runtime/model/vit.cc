// ViT as Hugging Face's ViTForImageClassification (pre-norm encoder), split
// into sub-layers whose parameter names are the HF ones under hf_prefix().
#include "runtime/core/errors.h"
#include "runtime/model/builders.h"
#include "runtime/model/layers.h"

namespace pipet::model_detail {
namespace {

// torch.nn.Conv2d(C, H, kernel_size=patch, stride=patch)'s parameters.
class PatchProjection : public torch::nn::Module {
 public:
  PatchProjection(int64_t channels, int64_t hidden, int64_t patch)
      : torch::nn::Module("Conv2d"), patch_(patch) {
    weight = register_parameter("weight", torch::empty({hidden, channels, patch, patch}));
    bias = register_parameter("bias", torch::zeros({hidden}));
  }
  torch::Tensor forward(const torch::Tensor& pixels) const {
    return torch::conv2d(pixels, weight, bias, /*stride=*/{patch_, patch_});
  }

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  int64_t patch_;
};

// vit.embeddings: patches -> [CLS] + patches -> + position embeddings.
class VitEmbedding final : public SubLayer {
 public:
  explicit VitEmbedding(const ModelSpec& spec)
      : SubLayer(SubLayerKind::kEmbedding, "vit.embeddings.", -1),
        image_size_(spec.image_size),
        num_channels_(spec.num_channels),
        dropout_(spec.hidden_dropout) {
    const int64_t grid = spec.image_size / spec.patch_size;
    // Registration order is HF's: cls_token, position_embeddings, patch_embeddings.
    cls_token_ = register_parameter("cls_token", torch::empty({1, 1, spec.hidden_size}));
    position_embeddings_ = register_parameter(
        "position_embeddings", torch::empty({1, grid * grid + 1, spec.hidden_size}));
    projection_ = scope(*this, "patch_embeddings")
                      ->register_module("projection",
                                        std::make_shared<PatchProjection>(
                                            spec.num_channels, spec.hidden_size, spec.patch_size));
    trunc_normal_(cls_token_, spec.initializer_range);
    trunc_normal_(position_embeddings_, spec.initializer_range);
    {
      torch::NoGradGuard no_grad;
      trunc_normal_(projection_->weight, spec.initializer_range);
      projection_->bias.zero_();
    }
  }

  Activations forward(const Activations& in) override {
    check_pixels(in.hidden);
    const int64_t batch = in.hidden.size(0);
    auto patches = projection_->forward(in.hidden).flatten(2).transpose(1, 2);  // [B,N,H]
    auto tokens = torch::cat({cls_token_.expand({batch, -1, -1}), patches}, 1);
    tokens = tokens + position_embeddings_;
    return Activations{dropout(tokens, dropout_, 0), {}, {}};
  }

 private:
  void check_pixels(const torch::Tensor& pixels) const {
    if (!pixels.defined()) {
      throw ModelError("ViT embedding: no pixel_values given (Activations.hidden is empty)");
    }
    const bool shape_ok = pixels.dim() == 4 && pixels.size(1) == num_channels_ &&
                          pixels.size(2) == image_size_ && pixels.size(3) == image_size_;
    if (!shape_ok) {
      throw ModelError("ViT embedding: pixel_values must be [batch, " +
                       std::to_string(num_channels_) + ", " + std::to_string(image_size_) + ", " +
                       std::to_string(image_size_) + "] (model.num_channels, model.image_size), got " +
                       shape_string(pixels.sizes()));
    }
    if (pixels.scalar_type() != cls_token_.scalar_type()) {
      throw ModelError(std::string("ViT embedding: pixel_values are ") +
                       c10::toString(pixels.scalar_type()) + " but the model parameters are " +
                       c10::toString(cls_token_.scalar_type()));
    }
  }

  int64_t image_size_;
  int64_t num_channels_;
  double dropout_;
  torch::Tensor cls_token_;
  torch::Tensor position_embeddings_;
  std::shared_ptr<PatchProjection> projection_;
};

// vit.encoder.layer.{i}: x + dropout(attention.output.dense(attn(layernorm_before(x)))).
class VitAttention final : public SubLayer {
 public:
  VitAttention(const ModelSpec& spec, int64_t block)
      : SubLayer(SubLayerKind::kAttention, "vit.encoder.layer." + std::to_string(block) + ".",
                 block),
        hidden_size_(spec.hidden_size),
        num_heads_(spec.num_heads),
        attention_dropout_(spec.attention_dropout),
        hidden_dropout_(spec.hidden_dropout) {
    const int64_t h = spec.hidden_size;
    layernorm_before_ = register_module(
        "layernorm_before", std::make_shared<LayerNormParams>(h, spec.layer_norm_eps));
    auto attention = scope(*this, "attention");
    auto self = scope(*attention, "attention");
    qkv_.query = self->register_module("query", std::make_shared<LinearParams>(h, h));
    qkv_.key = self->register_module("key", std::make_shared<LinearParams>(h, h));
    qkv_.value = self->register_module("value", std::make_shared<LinearParams>(h, h));
    output_ = scope(*attention, "output")
                  ->register_module("dense", std::make_shared<LinearParams>(h, h));
    for (auto* linear : {qkv_.query.get(), qkv_.key.get(), qkv_.value.get(), output_.get()}) {
      linear->init_normal(spec.initializer_range, /*truncated=*/true);
    }
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    const auto context = self_attention(layernorm_before_->forward(in.hidden), qkv_, num_heads_,
                                        torch::Tensor(), attention_dropout_, is_training(), dropout_site(0));
    auto out = in.hidden + dropout(output_->forward(context), hidden_dropout_, 1);
    return Activations{std::move(out), {}, {}};
  }

 private:
  int64_t hidden_size_;
  int64_t num_heads_;
  double attention_dropout_;
  double hidden_dropout_;
  std::shared_ptr<LayerNormParams> layernorm_before_;
  QkvProjections qkv_;
  std::shared_ptr<LinearParams> output_;
};

// vit.encoder.layer.{i}: x + dropout(output.dense(gelu(intermediate.dense(layernorm_after(x))))).
class VitMlp final : public SubLayer {
 public:
  VitMlp(const ModelSpec& spec, int64_t block)
      : SubLayer(SubLayerKind::kMlp, "vit.encoder.layer." + std::to_string(block) + ".", block),
        hidden_size_(spec.hidden_size),
        hidden_dropout_(spec.hidden_dropout) {
    layernorm_after_ = register_module(
        "layernorm_after", std::make_shared<LayerNormParams>(spec.hidden_size, spec.layer_norm_eps));
    intermediate_ = scope(*this, "intermediate")
                        ->register_module("dense", std::make_shared<LinearParams>(
                                                       spec.hidden_size, spec.intermediate_size));
    output_ = scope(*this, "output")
                  ->register_module("dense", std::make_shared<LinearParams>(spec.intermediate_size,
                                                                            spec.hidden_size));
    intermediate_->init_normal(spec.initializer_range, /*truncated=*/true);
    output_->init_normal(spec.initializer_range, /*truncated=*/true);
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    const auto inner = torch::gelu(intermediate_->forward(layernorm_after_->forward(in.hidden)));
    auto out = in.hidden + dropout(output_->forward(inner), hidden_dropout_, 0);
    return Activations{std::move(out), {}, {}};
  }

 private:
  int64_t hidden_size_;
  double hidden_dropout_;
  std::shared_ptr<LayerNormParams> layernorm_after_;
  std::shared_ptr<LinearParams> intermediate_;
  std::shared_ptr<LinearParams> output_;
};

// vit.layernorm, then classifier on the [CLS] token.
class VitHead final : public SubLayer {
 public:
  explicit VitHead(const ModelSpec& spec)
      : SubLayer(SubLayerKind::kHead, "", -1), hidden_size_(spec.hidden_size) {
    layernorm_ = scope(*this, "vit")->register_module(
        "layernorm", std::make_shared<LayerNormParams>(spec.hidden_size, spec.layer_norm_eps));
    classifier_ = register_module(
        "classifier", std::make_shared<LinearParams>(spec.hidden_size, spec.num_labels));
    classifier_->init_normal(spec.initializer_range, /*truncated=*/true);
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    // LayerNorm is per token, so normalising only [CLS] gives HF's logits.
    const auto cls = layernorm_->forward(in.hidden.select(1, 0));
    return Activations{classifier_->forward(cls), {}, {}};
  }

 private:
  int64_t hidden_size_;
  std::shared_ptr<LayerNormParams> layernorm_;
  std::shared_ptr<LinearParams> classifier_;
};

}  // namespace

std::vector<std::shared_ptr<SubLayer>> build_vit_sublayers(const ModelSpec& spec) {
  return build_sublayer_sequence<VitEmbedding, VitAttention, VitMlp, VitHead>(spec);
}

}  // namespace pipet::model_detail
