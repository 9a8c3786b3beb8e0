// Hugging Face config.json for ViTForImageClassification and
// BertForSequenceClassification, written from and read into a ModelSpec.
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/model/builders.h"

#include <nlohmann/json.hpp>

namespace pipet {
namespace {

using nlohmann::json;

constexpr const char* kTransformersVersion = "4.40.0";

std::string default_label(int64_t id) { return "LABEL_" + std::to_string(id); }

// Typed access to config.json fields; errors name the file and the field.
class ConfigReader {
 public:
  ConfigReader(const json& config, const std::string& source) : config_(config), source_(source) {}

  bool has(const char* field) const { return config_.contains(field) && !config_[field].is_null(); }

  int64_t integer(const char* field) const {
    require(field);
    const auto& value = config_[field];
    if (!value.is_number_integer()) type_error(field, "an integer", value);
    return value.get<int64_t>();
  }
  int64_t integer_or(const char* field, int64_t fallback) const {
    return has(field) ? integer(field) : fallback;
  }
  double number_or(const char* field, double fallback) const {
    if (!has(field)) return fallback;
    const auto& value = config_[field];
    if (!value.is_number()) type_error(field, "a number", value);
    return value.get<double>();
  }
  std::string string_or(const char* field, const std::string& fallback) const {
    if (!has(field)) return fallback;
    const auto& value = config_[field];
    if (!value.is_string()) type_error(field, "a string", value);
    return value.get<std::string>();
  }
  bool boolean_or(const char* field, bool fallback) const {
    if (!has(field)) return fallback;
    const auto& value = config_[field];
    if (!value.is_boolean()) type_error(field, "true or false", value);
    return value.get<bool>();
  }

  [[noreturn]] void unsupported(const char* field, const std::string& problem) const {
    throw ModelError(source_ + ": field '" + field + "': " + problem);
  }
  [[noreturn]] void malformed(const std::string& field, const std::string& problem) const {
    throw FormatError(source_ + ": field '" + field + "': " + problem);
  }

  const json& raw() const { return config_; }

 private:
  void require(const char* field) const {
    if (!has(field)) malformed(field, "missing (a required model dimension)");
  }
  [[noreturn]] void type_error(const char* field, const char* expected, const json& value) const {
    malformed(field, std::string("must be ") + expected + ", got " + value.dump());
  }

  const json& config_;
  const std::string& source_;
};

ModelFamily read_family(const ConfigReader& reader) {
  if (reader.has("model_type")) {
    const auto type = reader.string_or("model_type", "");
    if (type == "vit") return ModelFamily::kVit;
    if (type == "bert") return ModelFamily::kBert;
    reader.unsupported("model_type", "'" + type + "' is not supported; expected \"vit\" or \"bert\"");
  }
  const auto& architectures = reader.raw().value("architectures", json());
  if (architectures.is_array() && !architectures.empty() && architectures[0].is_string()) {
    const auto name = architectures[0].get<std::string>();
    if (name.rfind("ViT", 0) == 0) return ModelFamily::kVit;
    if (name.rfind("Bert", 0) == 0) return ModelFamily::kBert;
    reader.unsupported("architectures", "'" + name + "' is not a ViT or BERT architecture");
  }
  reader.malformed("model_type", "missing (and no \"architectures\" to tell the model family)");
}

// Class names from id2label; default "LABEL_i" names mean "no names" (empty).
void read_labels(const ConfigReader& reader, ModelSpec& spec) {
  if (!reader.has("id2label")) {
    spec.num_labels = reader.integer_or("num_labels", 2);  // HF's default
    return;
  }
  const auto& id2label = reader.raw()["id2label"];
  if (!id2label.is_object()) reader.malformed("id2label", "must be an object {\"0\": name, ...}");
  const auto count = static_cast<int64_t>(id2label.size());
  std::vector<std::string> names(static_cast<size_t>(count));
  std::vector<bool> seen(static_cast<size_t>(count), false);
  for (const auto& [key, value] : id2label.items()) {
    int64_t id = -1;
    try {
      size_t used = 0;
      id = std::stoll(key, &used);
      if (used != key.size()) id = -1;
    } catch (const std::exception&) {
      id = -1;
    }
    if (id < 0 || id >= count || seen[static_cast<size_t>(id)]) {
      reader.malformed("id2label", "key '" + key + "' is not one of the ids 0.." +
                                       std::to_string(count - 1));
    }
    if (!value.is_string()) reader.malformed("id2label", "the name of id " + key + " must be a string");
    seen[static_cast<size_t>(id)] = true;
    names[static_cast<size_t>(id)] = value.get<std::string>();
  }
  if (reader.has("num_labels") && reader.integer("num_labels") != count) {
    reader.malformed("num_labels", std::to_string(reader.integer("num_labels")) +
                                       " disagrees with the " + std::to_string(count) +
                                       " entries of id2label");
  }
  spec.num_labels = count;
  bool all_default = true;
  for (int64_t i = 0; i < count; ++i) {
    all_default = all_default && names[static_cast<size_t>(i)] == default_label(i);
  }
  if (!all_default) spec.id2label = std::move(names);
}

// The preset whose architecture `spec` has, for log messages; "" if none.
std::string matching_preset(const ModelSpec& spec) {
  ModelConfig config;
  for (const auto& name : model_preset_names()) {
    config.preset = name;
    const auto preset = resolve_model_spec(config, 1);
    const bool same = preset.family == spec.family && preset.hidden_size == spec.hidden_size &&
                      preset.num_layers == spec.num_layers && preset.num_heads == spec.num_heads &&
                      preset.intermediate_size == spec.intermediate_size &&
                      preset.image_size == spec.image_size && preset.patch_size == spec.patch_size &&
                      preset.num_channels == spec.num_channels &&
                      preset.vocab_size == spec.vocab_size &&
                      preset.max_position_embeddings == spec.max_position_embeddings &&
                      preset.type_vocab_size == spec.type_vocab_size;
    if (same) return name;
  }
  return "";
}

}  // namespace

json hf_config_json(const ModelSpec& spec) {
  const bool vit = spec.family == ModelFamily::kVit;
  json config;
  const bool span = spec.head == ModelHead::kQuestionAnswering;
  config["architectures"] = json::array({vit    ? "ViTForImageClassification"
                                         : span ? "BertForQuestionAnswering"
                                                : "BertForSequenceClassification"});
  config["model_type"] = vit ? "vit" : "bert";
  config["hidden_size"] = spec.hidden_size;
  config["num_hidden_layers"] = spec.num_layers;
  config["num_attention_heads"] = spec.num_heads;
  config["intermediate_size"] = spec.intermediate_size;
  config["hidden_act"] = "gelu";
  config["hidden_dropout_prob"] = spec.hidden_dropout;
  config["attention_probs_dropout_prob"] = spec.attention_dropout;
  config["initializer_range"] = spec.initializer_range;
  config["layer_norm_eps"] = spec.layer_norm_eps;
  if (vit) {
    config["image_size"] = spec.image_size;
    config["patch_size"] = spec.patch_size;
    config["num_channels"] = spec.num_channels;
    config["qkv_bias"] = true;
    config["encoder_stride"] = spec.patch_size;
  } else {
    config["vocab_size"] = spec.vocab_size;
    config["max_position_embeddings"] = spec.max_position_embeddings;
    config["type_vocab_size"] = spec.type_vocab_size;
    config["pad_token_id"] = 0;
    config["position_embedding_type"] = "absolute";
    config["classifier_dropout"] = nullptr;  // HF: falls back to hidden_dropout_prob
  }
  // Without it HF treats num_labels == 1 as regression.
  if (!span) config["problem_type"] = "single_label_classification";
  json id2label = json::object();
  json label2id = json::object();
  for (int64_t i = 0; i < spec.num_labels; ++i) {
    const auto name =
        spec.id2label.empty() ? default_label(i) : spec.id2label[static_cast<size_t>(i)];
    id2label[std::to_string(i)] = name;
    label2id[name] = i;
  }
  config["id2label"] = std::move(id2label);
  config["label2id"] = std::move(label2id);
  config["torch_dtype"] = "float32";
  config["transformers_version"] = kTransformersVersion;
  return config;
}

ModelSpec spec_from_hf_config(const json& config, const std::string& source) {
  if (!config.is_object()) {
    throw FormatError(source + ": a Hugging Face config.json must be a JSON object, got " +
                      std::string(config.type_name()));
  }
  const ConfigReader reader(config, source);
  ModelSpec spec;
  spec.family = read_family(reader);
  const bool vit = spec.family == ModelFamily::kVit;
  spec.hidden_size = reader.integer("hidden_size");
  spec.num_layers = reader.integer("num_hidden_layers");
  spec.num_heads = reader.integer("num_attention_heads");
  spec.intermediate_size = reader.integer("intermediate_size");
  // Defaults are those of transformers' ViTConfig / BertConfig.
  spec.hidden_dropout = reader.number_or("hidden_dropout_prob", vit ? 0.0 : 0.1);
  spec.attention_dropout = reader.number_or("attention_probs_dropout_prob", vit ? 0.0 : 0.1);
  spec.layer_norm_eps = reader.number_or("layer_norm_eps", 1e-12);
  spec.initializer_range = reader.number_or("initializer_range", 0.02);
  const auto act = reader.string_or("hidden_act", "gelu");
  if (act != "gelu") {
    reader.unsupported("hidden_act", "'" + act + "' is not supported; this engine implements \"gelu\"");
  }
  if (vit) {
    spec.image_size = reader.integer("image_size");
    spec.patch_size = reader.integer("patch_size");
    spec.num_channels = reader.integer_or("num_channels", 3);
    if (!reader.boolean_or("qkv_bias", true)) {
      reader.unsupported("qkv_bias", "false is not supported; the attention projections have biases");
    }
  } else {
    spec.vocab_size = reader.integer("vocab_size");
    spec.max_position_embeddings = reader.integer("max_position_embeddings");
    spec.type_vocab_size = reader.integer_or("type_vocab_size", 2);
    if (reader.integer_or("pad_token_id", 0) != 0) {
      reader.unsupported("pad_token_id", "only 0 is supported (the padding row of word_embeddings)");
    }
    const auto positions = reader.string_or("position_embedding_type", "absolute");
    if (positions != "absolute") {
      reader.unsupported("position_embedding_type",
                         "'" + positions + "' is not supported; expected \"absolute\"");
    }
    if (reader.has("classifier_dropout") &&
        reader.number_or("classifier_dropout", 0.0) != spec.hidden_dropout) {
      reader.unsupported("classifier_dropout",
                         "differs from hidden_dropout_prob; this engine uses hidden_dropout_prob "
                         "before the classifier (set it to null)");
    }
  }
  const auto problem = reader.string_or("problem_type", "single_label_classification");
  if (problem != "single_label_classification") {
    reader.unsupported("problem_type",
                       "'" + problem + "' is not supported; expected \"single_label_classification\"");
  }
  read_labels(reader, spec);
  const auto& architectures = reader.raw().value("architectures", json());
  if (architectures.is_array() && !architectures.empty() &&
      architectures[0] == "BertForQuestionAnswering")
    spec.head = ModelHead::kQuestionAnswering;
  model_detail::validate_model_spec(
      spec, [&](const std::string&, const std::string& field, const std::string& problem_text) {
        reader.unsupported(field.c_str(), problem_text);
      });
  spec.preset = matching_preset(spec);
  return spec;
}

}  // namespace pipet
