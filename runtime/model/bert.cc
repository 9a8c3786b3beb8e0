// BERT as Hugging Face's BertForSequenceClassification or
// BertForQuestionAnswering (post-norm encoder), split into sub-layers whose parameter names are the HF ones under hf_prefix().
#include "runtime/core/errors.h"
#include "runtime/model/builders.h"
#include "runtime/model/layers.h"

namespace pipet::model_detail {
namespace {

constexpr int64_t kPadTokenId = 0;

std::string dtype_string(const torch::Tensor& t) { return c10::toString(t.scalar_type()); }

// bert.embeddings: LayerNorm(word + token_type + position) -> dropout.
class BertEmbedding final : public SubLayer {
 public:
  explicit BertEmbedding(const ModelSpec& spec)
      : SubLayer(SubLayerKind::kEmbedding, "bert.embeddings.", -1),
        vocab_size_(spec.vocab_size),
        max_positions_(spec.max_position_embeddings),
        type_vocab_size_(spec.type_vocab_size),
        dropout_(spec.hidden_dropout) {
    const int64_t h = spec.hidden_size;
    words_ = register_module("word_embeddings",
                             std::make_shared<EmbeddingParams>(spec.vocab_size, h, kPadTokenId));
    positions_ = register_module("position_embeddings",
                                 std::make_shared<EmbeddingParams>(spec.max_position_embeddings, h));
    token_types_ = register_module("token_type_embeddings",
                                   std::make_shared<EmbeddingParams>(spec.type_vocab_size, h));
    layernorm_ = register_module("LayerNorm", std::make_shared<LayerNormParams>(h, spec.layer_norm_eps));
    words_->init_normal(spec.initializer_range);
    positions_->init_normal(spec.initializer_range);
    token_types_->init_normal(spec.initializer_range);
  }

  Activations forward(const Activations& in) override {
    check_inputs(in);
    const int64_t seq = in.hidden.size(1);
    // Positions are 0..S-1, so the lookup is the first S rows.
    auto embeddings = words_->forward(in.hidden) + token_types_->forward(in.token_type_ids);
    embeddings = embeddings + positions_->weight.narrow(0, 0, seq);
    embeddings = dropout(layernorm_->forward(embeddings), dropout_, 0);
    return Activations{std::move(embeddings), in.attention_mask, {}};
  }

 private:
  void check_inputs(const Activations& in) const {
    const auto require = [](const torch::Tensor& t, const char* name) {
      if (!t.defined()) {
        throw ModelError(std::string("BERT embedding: ") + name +
                         " is missing; BERT needs input_ids, attention_mask and token_type_ids");
      }
      if (t.scalar_type() != torch::kLong) {
        throw ModelError(std::string("BERT embedding: ") + name + " must be int64, got " +
                         dtype_string(t));
      }
    };
    require(in.hidden, "input_ids");
    require(in.attention_mask, "attention_mask");
    require(in.token_type_ids, "token_type_ids");
    const auto& ids = in.hidden;
    if (ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1) {
      throw ModelError("BERT embedding: input_ids must be [batch, seq] with batch, seq >= 1, got " +
                       shape_string(ids.sizes()));
    }
    for (const auto& [t, name] : {std::pair{&in.attention_mask, "attention_mask"},
                                  std::pair{&in.token_type_ids, "token_type_ids"}}) {
      if (t->sizes() != ids.sizes()) {
        throw ModelError(std::string("BERT embedding: ") + name + " has shape " +
                         shape_string(t->sizes()) + " but input_ids has " +
                         shape_string(ids.sizes()) + "; they must match");
      }
    }
    if (ids.size(1) > max_positions_) {
      throw ModelError("BERT embedding: sequence length " + std::to_string(ids.size(1)) +
                       " exceeds model.max_position_embeddings = " + std::to_string(max_positions_));
    }
    // One host round trip for all value checks.
    const auto stats = torch::stack({ids.min(), ids.max(), in.token_type_ids.min(),
                                     in.token_type_ids.max(), in.attention_mask.min(),
                                     in.attention_mask.max()})
                           .cpu();
    const auto v = stats.accessor<int64_t, 1>();
    if (v[0] < 0 || v[1] >= vocab_size_) {
      throw ModelError("BERT embedding: input_ids must lie in [0, " + std::to_string(vocab_size_) +
                       ") (model.vocab_size), found values in [" + std::to_string(v[0]) + ", " +
                       std::to_string(v[1]) + "]");
    }
    if (v[2] < 0 || v[3] >= type_vocab_size_) {
      throw ModelError("BERT embedding: token_type_ids must lie in [0, " +
                       std::to_string(type_vocab_size_) +
                       ") (model.type_vocab_size), found values in [" + std::to_string(v[2]) +
                       ", " + std::to_string(v[3]) + "]");
    }
    if (v[4] < 0 || v[5] > 1) {
      throw ModelError("BERT embedding: attention_mask must hold 1 (token) or 0 (padding), found "
                       "values in [" + std::to_string(v[4]) + ", " + std::to_string(v[5]) + "]");
    }
  }

  int64_t vocab_size_;
  int64_t max_positions_;
  int64_t type_vocab_size_;
  double dropout_;
  std::shared_ptr<EmbeddingParams> words_;
  std::shared_ptr<EmbeddingParams> positions_;
  std::shared_ptr<EmbeddingParams> token_types_;
  std::shared_ptr<LayerNormParams> layernorm_;
};

// The [B,S] mask every encoder sub-layer needs; `where` names the sub-layer.
const torch::Tensor& require_mask(const Activations& in, const std::string& where) {
  const auto& mask = in.attention_mask;
  if (!mask.defined()) {
    throw ModelError(where + ": attention_mask is missing (BERT sub-layers need it)");
  }
  if (mask.dim() != 2 || mask.size(0) != in.hidden.size(0) || mask.size(1) != in.hidden.size(1)) {
    throw ModelError(where + ": attention_mask has shape " + shape_string(mask.sizes()) +
                     " but the hidden states are " + shape_string(in.hidden.sizes()));
  }
  return mask;
}

// bert.encoder.layer.{i}: attention.output.LayerNorm(x + dropout(dense(attn(x, mask)))).
class BertAttention final : public SubLayer {
 public:
  BertAttention(const ModelSpec& spec, int64_t block)
      : SubLayer(SubLayerKind::kAttention, "bert.encoder.layer." + std::to_string(block) + ".",
                 block),
        hidden_size_(spec.hidden_size),
        num_heads_(spec.num_heads),
        attention_dropout_(spec.attention_dropout),
        hidden_dropout_(spec.hidden_dropout) {
    const int64_t h = spec.hidden_size;
    auto attention = scope(*this, "attention");
    auto self = scope(*attention, "self");
    qkv_.query = self->register_module("query", std::make_shared<LinearParams>(h, h));
    qkv_.key = self->register_module("key", std::make_shared<LinearParams>(h, h));
    qkv_.value = self->register_module("value", std::make_shared<LinearParams>(h, h));
    auto output = scope(*attention, "output");
    dense_ = output->register_module("dense", std::make_shared<LinearParams>(h, h));
    layernorm_ = output->register_module("LayerNorm",
                                         std::make_shared<LayerNormParams>(h, spec.layer_norm_eps));
    for (auto* linear : {qkv_.query.get(), qkv_.key.get(), qkv_.value.get(), dense_.get()}) {
      linear->init_normal(spec.initializer_range, /*truncated=*/false);
    }
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    const auto& mask = require_mask(in, display_name());
    const auto additive = additive_attention_mask(mask, in.hidden.scalar_type());
    const auto context =
        self_attention(in.hidden, qkv_, num_heads_, additive, attention_dropout_, is_training(), dropout_site(0));
    auto out = layernorm_->forward(
        dropout(dense_->forward(context), hidden_dropout_, 1) + in.hidden);
    return Activations{std::move(out), mask, {}};
  }

 private:
  int64_t hidden_size_;
  int64_t num_heads_;
  double attention_dropout_;
  double hidden_dropout_;
  QkvProjections qkv_;
  std::shared_ptr<LinearParams> dense_;
  std::shared_ptr<LayerNormParams> layernorm_;
};

// bert.encoder.layer.{i}: output.LayerNorm(x + dropout(output.dense(gelu(intermediate.dense(x))))).
class BertMlp final : public SubLayer {
 public:
  BertMlp(const ModelSpec& spec, int64_t block)
      : SubLayer(SubLayerKind::kMlp, "bert.encoder.layer." + std::to_string(block) + ".", block),
        hidden_size_(spec.hidden_size),
        hidden_dropout_(spec.hidden_dropout) {
    intermediate_ = scope(*this, "intermediate")
                        ->register_module("dense", std::make_shared<LinearParams>(
                                                       spec.hidden_size, spec.intermediate_size));
    auto output = scope(*this, "output");
    dense_ = output->register_module(
        "dense", std::make_shared<LinearParams>(spec.intermediate_size, spec.hidden_size));
    layernorm_ = output->register_module(
        "LayerNorm", std::make_shared<LayerNormParams>(spec.hidden_size, spec.layer_norm_eps));
    intermediate_->init_normal(spec.initializer_range, /*truncated=*/false);
    dense_->init_normal(spec.initializer_range, /*truncated=*/false);
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    const auto inner = torch::gelu(intermediate_->forward(in.hidden));
    auto out = layernorm_->forward(
        dropout(dense_->forward(inner), hidden_dropout_, 0) + in.hidden);
    return Activations{std::move(out), in.attention_mask, {}};
  }

 private:
  int64_t hidden_size_;
  double hidden_dropout_;
  std::shared_ptr<LinearParams> intermediate_;
  std::shared_ptr<LinearParams> dense_;
  std::shared_ptr<LayerNormParams> layernorm_;
};

// bert.pooler (dense + tanh on [CLS]), dropout, classifier.
class BertHead final : public SubLayer {
 public:
  explicit BertHead(const ModelSpec& spec)
      : SubLayer(SubLayerKind::kHead, "", -1),
        hidden_size_(spec.hidden_size),
        dropout_(spec.hidden_dropout) {
    pooler_ = scope(*scope(*this, "bert"), "pooler")
                  ->register_module("dense", std::make_shared<LinearParams>(spec.hidden_size,
                                                                            spec.hidden_size));
    classifier_ = register_module(
        "classifier", std::make_shared<LinearParams>(spec.hidden_size, spec.num_labels));
    pooler_->init_normal(spec.initializer_range, /*truncated=*/false);
    classifier_->init_normal(spec.initializer_range, /*truncated=*/false);
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    const auto pooled = torch::tanh(pooler_->forward(in.hidden.select(1, 0)));
    return Activations{classifier_->forward(dropout(pooled, dropout_, 0)), {}, {}};
  }

 private:
  int64_t hidden_size_;
  double dropout_;
  std::shared_ptr<LinearParams> pooler_;
  std::shared_ptr<LinearParams> classifier_;
};

// BertForQuestionAnswering's qa_outputs: start and end logits for every
// token, [B,S,2], no pooler and no dropout. Padding positions get -10000 (the
// additive mask value of BERT's attention), so neither the loss nor span
// selection can choose them; the weights are exactly Hugging Face's.
class BertSpanHead final : public SubLayer {
 public:
  explicit BertSpanHead(const ModelSpec& spec)
      : SubLayer(SubLayerKind::kHead, "", -1), hidden_size_(spec.hidden_size) {
    qa_outputs_ = register_module("qa_outputs",
                                  std::make_shared<LinearParams>(spec.hidden_size, spec.num_labels));
    qa_outputs_->init_normal(spec.initializer_range, /*truncated=*/false);
  }

  Activations forward(const Activations& in) override {
    check_hidden_states(in.hidden, hidden_size_, display_name());
    const auto& mask = require_mask(in, display_name());
    auto logits = qa_outputs_->forward(in.hidden);
    logits = logits.masked_fill(mask.eq(0).unsqueeze(-1), kPaddingLogit);
    return Activations{std::move(logits), {}, {}};
  }

 private:
  static constexpr double kPaddingLogit = -10000.0;
  int64_t hidden_size_;
  std::shared_ptr<LinearParams> qa_outputs_;
};

}  // namespace

std::vector<std::shared_ptr<SubLayer>> build_bert_sublayers(const ModelSpec& spec) {
  if (spec.head == ModelHead::kQuestionAnswering)
    return build_sublayer_sequence<BertEmbedding, BertAttention, BertMlp, BertSpanHead>(spec);
  return build_sublayer_sequence<BertEmbedding, BertAttention, BertMlp, BertHead>(spec);
}

}  // namespace pipet::model_detail
