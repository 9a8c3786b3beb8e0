// Model presets and the resolution of ModelConfig (preset + overrides) into a
// validated ModelSpec.
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/strings.h"
#include "runtime/model/builders.h"

#include <optional>

namespace pipet {
namespace {

ModelSpec vit_preset(const char* name, int64_t image, int64_t patch, int64_t hidden,
                     int64_t layers, int64_t heads, int64_t intermediate) {
  ModelSpec spec;
  spec.family = ModelFamily::kVit;
  spec.preset = name;
  spec.image_size = image;
  spec.patch_size = patch;
  spec.num_channels = 3;
  spec.hidden_size = hidden;
  spec.num_layers = layers;
  spec.num_heads = heads;
  spec.intermediate_size = intermediate;
  spec.hidden_dropout = 0.0;
  spec.attention_dropout = 0.0;
  spec.layer_norm_eps = 1e-12;
  spec.initializer_range = 0.02;
  return spec;
}

ModelSpec bert_preset(const char* name, int64_t hidden, int64_t layers, int64_t heads,
                      int64_t intermediate) {
  ModelSpec spec;
  spec.family = ModelFamily::kBert;
  spec.preset = name;
  spec.vocab_size = 30522;
  spec.max_position_embeddings = 512;
  spec.type_vocab_size = 2;
  spec.hidden_size = hidden;
  spec.num_layers = layers;
  spec.num_heads = heads;
  spec.intermediate_size = intermediate;
  spec.hidden_dropout = 0.1;
  spec.attention_dropout = 0.1;
  spec.layer_norm_eps = 1e-12;
  spec.initializer_range = 0.02;
  return spec;
}

const std::vector<ModelSpec>& presets() {
  static const std::vector<ModelSpec> all = {
      vit_preset("vit-tiny", 32, 8, 64, 4, 4, 128),
      vit_preset("vit-small", 224, 16, 384, 12, 6, 1536),  // DeiT-S
      vit_preset("vit-b16", 224, 16, 768, 12, 12, 3072),
      vit_preset("vit-l16", 224, 16, 1024, 24, 16, 4096),
      bert_preset("bert-tiny", 128, 2, 2, 512),
      bert_preset("bert-mini", 256, 4, 4, 1024),
      bert_preset("bert-base", 768, 12, 12, 3072),
      bert_preset("bert-large", 1024, 24, 16, 4096),
  };
  return all;
}

// Applies `value` to `field`, refusing keys of the other family.
template <typename T>
void override_field(const std::optional<T>& value, T& field, const char* key,
                    std::optional<ModelFamily> only_for, const ModelSpec& spec) {
  if (!value) return;
  if (only_for && *only_for != spec.family) {
    throw ConfigError(std::string(key) + ": applies to " + model_detail::family_name(*only_for) +
                      " models only, but model.preset '" + spec.preset + "' is a " +
                      model_detail::family_name(spec.family) + " model");
  }
  field = *value;
}

}  // namespace

namespace model_detail {

const char* family_name(ModelFamily family) {
  return family == ModelFamily::kVit ? "ViT" : "BERT";
}

void validate_model_spec(const ModelSpec& spec, const SpecFailure& fail) {
  const auto positive = [&](int64_t value, const char* key, const char* field) {
    if (value < 1) fail(key, field, "must be >= 1, got " + std::to_string(value));
  };
  positive(spec.hidden_size, "model.hidden_size", "hidden_size");
  positive(spec.num_layers, "model.num_layers", "num_hidden_layers");
  positive(spec.num_heads, "model.num_heads", "num_attention_heads");
  positive(spec.intermediate_size, "model.intermediate_size", "intermediate_size");
  if (spec.hidden_size % spec.num_heads != 0) {
    fail("model.hidden_size", "hidden_size",
         std::to_string(spec.hidden_size) + " is not divisible by the number of heads (" +
             std::to_string(spec.num_heads) + ")");
  }
  if (spec.family == ModelFamily::kVit) {
    positive(spec.image_size, "model.image_size", "image_size");
    positive(spec.patch_size, "model.patch_size", "patch_size");
    positive(spec.num_channels, "model.num_channels", "num_channels");
    if (spec.image_size % spec.patch_size != 0) {
      fail("model.image_size", "image_size",
           std::to_string(spec.image_size) + " is not divisible by the patch size (" +
               std::to_string(spec.patch_size) + ")");
    }
  } else {
    positive(spec.vocab_size, "model.vocab_size", "vocab_size");
    positive(spec.max_position_embeddings, "model.max_position_embeddings",
             "max_position_embeddings");
    positive(spec.type_vocab_size, "model.type_vocab_size", "type_vocab_size");
  }
  const auto probability = [&](double value, const char* key, const char* field) {
    if (!(value >= 0.0 && value < 1.0)) {
      fail(key, field, "must be a probability in [0, 1), got " + std::to_string(value));
    }
  };
  probability(spec.hidden_dropout, "model.hidden_dropout", "hidden_dropout_prob");
  probability(spec.attention_dropout, "model.attention_dropout", "attention_probs_dropout_prob");
  if (!(spec.layer_norm_eps > 0.0)) {
    fail("model.layer_norm_eps", "layer_norm_eps",
         "must be > 0, got " + std::to_string(spec.layer_norm_eps));
  }
  if (!(spec.initializer_range >= 0.0)) {
    fail("model.initializer_range", "initializer_range",
         "must be >= 0, got " + std::to_string(spec.initializer_range));
  }
  if (spec.num_labels < 1) {
    fail("model.num_labels", "id2label",
         "the classifier needs at least 1 class, got " + std::to_string(spec.num_labels) +
             " (set model.num_labels or use a dataset that defines its classes)");
  }
  if (spec.head == ModelHead::kQuestionAnswering) {
    if (spec.family != ModelFamily::kBert)
      fail("model.head", "architectures",
           "question-answering is a BERT head (BertForQuestionAnswering); ViT models classify");
    if (spec.num_labels != 2)
      fail("model.num_labels", "num_labels",
           "the question-answering head scores start and end: it needs 2, got " +
               std::to_string(spec.num_labels));
  }
  if (!spec.id2label.empty() && static_cast<int64_t>(spec.id2label.size()) != spec.num_labels) {
    fail("model.num_labels", "id2label",
         std::to_string(spec.id2label.size()) + " class names for " +
             std::to_string(spec.num_labels) + " classes");
  }
}

void validate_model_spec_or_throw(const ModelSpec& spec) {
  validate_model_spec(spec, [](const std::string& key, const std::string&, const std::string& problem) {
    throw ConfigError(key + ": " + problem);
  });
}

}  // namespace model_detail

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& spec : presets()) names.push_back(spec.preset);
  return names;
}

ModelSpec resolve_model_spec(const ModelConfig& config, int64_t dataset_num_labels) {
  const ModelSpec* preset = nullptr;
  for (const auto& spec : presets()) {
    if (spec.preset == config.preset) preset = &spec;
  }
  if (preset == nullptr) {
    throw ConfigError("model.preset: unknown preset '" + config.preset + "'" +
                      did_you_mean(config.preset, model_preset_names()) + "; expected one of " +
                      join(model_preset_names(), ", "));
  }
  ModelSpec spec = *preset;
  const std::optional<ModelFamily> any;
  override_field(config.hidden_size, spec.hidden_size, "model.hidden_size", any, spec);
  override_field(config.num_layers, spec.num_layers, "model.num_layers", any, spec);
  override_field(config.num_heads, spec.num_heads, "model.num_heads", any, spec);
  override_field(config.intermediate_size, spec.intermediate_size, "model.intermediate_size", any,
                 spec);
  override_field(config.image_size, spec.image_size, "model.image_size", ModelFamily::kVit, spec);
  override_field(config.patch_size, spec.patch_size, "model.patch_size", ModelFamily::kVit, spec);
  override_field(config.num_channels, spec.num_channels, "model.num_channels", ModelFamily::kVit,
                 spec);
  override_field(config.vocab_size, spec.vocab_size, "model.vocab_size", ModelFamily::kBert, spec);
  override_field(config.max_position_embeddings, spec.max_position_embeddings,
                 "model.max_position_embeddings", ModelFamily::kBert, spec);
  override_field(config.type_vocab_size, spec.type_vocab_size, "model.type_vocab_size",
                 ModelFamily::kBert, spec);
  override_field(config.hidden_dropout, spec.hidden_dropout, "model.hidden_dropout", any, spec);
  override_field(config.attention_dropout, spec.attention_dropout, "model.attention_dropout", any,
                 spec);
  override_field(config.layer_norm_eps, spec.layer_norm_eps, "model.layer_norm_eps", any, spec);
  override_field(config.initializer_range, spec.initializer_range, "model.initializer_range", any,
                 spec);
  if (config.num_labels < 0) {
    throw ConfigError("model.num_labels: must be >= 0 (0 = from the dataset), got " +
                      std::to_string(config.num_labels));
  }
  spec.num_labels = config.num_labels > 0 ? config.num_labels : dataset_num_labels;
  if (config.head == "question-answering") {
    spec.head = ModelHead::kQuestionAnswering;
    // Start and end logits, whatever the dataset reports (HF: num_labels 2).
    if (config.num_labels == 0) spec.num_labels = 2;
  } else if (config.head != "classification") {
    throw ConfigError("model.head: unknown head '" + config.head +
                      "'; expected classification or question-answering");
  }
  model_detail::validate_model_spec_or_throw(spec);
  return spec;
}

}  // namespace pipet
