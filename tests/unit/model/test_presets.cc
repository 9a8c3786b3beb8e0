// Presets, overrides, validation, and the Hugging Face config.json.
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/model/model.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace pipet {
namespace {

using nlohmann::json;

ModelConfig preset(const std::string& name) {
  ModelConfig config;
  config.preset = name;
  return config;
}

// The message of the exception `fn` throws as `E` ("" if none).
template <typename E, typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

TEST(ModelPresets, NamesAndFamilies) {
  const std::vector<std::string> expected = {"vit-tiny",  "vit-small", "vit-b16",   "vit-l16",
                                             "bert-tiny", "bert-mini", "bert-base", "bert-large"};
  EXPECT_EQ(model_preset_names(), expected);
  for (const auto& name : expected) {
    const auto spec = resolve_model_spec(preset(name), 10);
    EXPECT_EQ(spec.preset, name);
    EXPECT_EQ(spec.family, name.rfind("vit", 0) == 0 ? ModelFamily::kVit : ModelFamily::kBert);
    EXPECT_EQ(spec.num_labels, 10);
  }
}

TEST(ModelPresets, VitTinyAndBertBaseValues) {
  const auto vit = resolve_model_spec(preset("vit-tiny"), 10);
  EXPECT_EQ(vit.image_size, 32);
  EXPECT_EQ(vit.patch_size, 8);
  EXPECT_EQ(vit.num_channels, 3);
  EXPECT_EQ(vit.hidden_size, 64);
  EXPECT_EQ(vit.num_layers, 4);
  EXPECT_EQ(vit.num_heads, 4);
  EXPECT_EQ(vit.intermediate_size, 128);
  EXPECT_EQ(vit.hidden_dropout, 0.0);
  EXPECT_EQ(vit.attention_dropout, 0.0);
  EXPECT_EQ(vit.layer_norm_eps, 1e-12);
  EXPECT_EQ(vit.initializer_range, 0.02);

  const auto small = resolve_model_spec(preset("vit-small"), 10);
  EXPECT_EQ(small.hidden_size, 384);
  EXPECT_EQ(small.num_heads, 6);
  EXPECT_EQ(small.intermediate_size, 1536);
  const auto large = resolve_model_spec(preset("vit-l16"), 10);
  EXPECT_EQ(large.num_layers, 24);
  EXPECT_EQ(large.num_heads, 16);

  const auto bert = resolve_model_spec(preset("bert-base"), 2);
  EXPECT_EQ(bert.vocab_size, 30522);
  EXPECT_EQ(bert.max_position_embeddings, 512);
  EXPECT_EQ(bert.type_vocab_size, 2);
  EXPECT_EQ(bert.hidden_dropout, 0.1);
  EXPECT_EQ(bert.attention_dropout, 0.1);
  const auto mini = resolve_model_spec(preset("bert-mini"), 2);
  EXPECT_EQ(mini.hidden_size, 256);
  EXPECT_EQ(mini.num_layers, 4);
  EXPECT_EQ(mini.intermediate_size, 1024);
  const auto tiny = resolve_model_spec(preset("bert-tiny"), 2);
  EXPECT_EQ(tiny.hidden_size, 128);
  EXPECT_EQ(tiny.num_heads, 2);
}

TEST(ModelPresets, OverridesApplyAndConfigLabelsWin) {
  ModelConfig config = preset("vit-tiny");
  config.hidden_size = 96;
  config.num_heads = 6;
  config.image_size = 48;
  config.hidden_dropout = 0.2;
  config.num_labels = 7;
  const auto spec = resolve_model_spec(config, 100);
  EXPECT_EQ(spec.hidden_size, 96);
  EXPECT_EQ(spec.num_heads, 6);
  EXPECT_EQ(spec.image_size, 48);
  EXPECT_EQ(spec.hidden_dropout, 0.2);
  EXPECT_EQ(spec.num_labels, 7);
  EXPECT_EQ(spec.num_layers, 4);  // untouched
}

TEST(ModelPresets, ValidationErrorsNameTheKey) {
  EXPECT_NE(error_of<ConfigError>([] { resolve_model_spec(preset("vit-b61"), 10); })
                .find("model.preset: unknown preset 'vit-b61' (did you mean 'vit-b16'?)"),
            std::string::npos);

  ModelConfig heads = preset("vit-tiny");
  heads.num_heads = 5;
  EXPECT_NE(error_of<ConfigError>([&] { resolve_model_spec(heads, 10); })
                .find("model.hidden_size: 64 is not divisible by the number of heads (5)"),
            std::string::npos);

  ModelConfig patch = preset("vit-tiny");
  patch.patch_size = 5;
  EXPECT_NE(error_of<ConfigError>([&] { resolve_model_spec(patch, 10); })
                .find("model.image_size: 32 is not divisible by the patch size (5)"),
            std::string::npos);

  EXPECT_NE(error_of<ConfigError>([] { resolve_model_spec(preset("vit-tiny"), 0); })
                .find("model.num_labels"),
            std::string::npos);

  ModelConfig wrong_family = preset("bert-tiny");
  wrong_family.image_size = 32;
  EXPECT_NE(error_of<ConfigError>([&] { resolve_model_spec(wrong_family, 2); })
                .find("model.image_size: applies to ViT models only"),
            std::string::npos);

  ModelConfig dropout = preset("bert-tiny");
  dropout.attention_dropout = 1.0;
  EXPECT_NE(error_of<ConfigError>([&] { resolve_model_spec(dropout, 2); })
                .find("model.attention_dropout"),
            std::string::npos);

  ModelConfig negative = preset("bert-tiny");
  negative.num_labels = -1;
  EXPECT_NE(error_of<ConfigError>([&] { resolve_model_spec(negative, 2); }).find("model.num_labels"),
            std::string::npos);

  ModelConfig zero_layers = preset("bert-tiny");
  zero_layers.num_layers = 0;
  EXPECT_NE(error_of<ConfigError>([&] { resolve_model_spec(zero_layers, 2); })
                .find("model.num_layers: must be >= 1"),
            std::string::npos);
}

TEST(HfConfig, VitFields) {
  const auto spec = resolve_model_spec(preset("vit-b16"), 3);
  const json config = hf_config_json(spec);
  EXPECT_EQ(config["architectures"], json::array({"ViTForImageClassification"}));
  EXPECT_EQ(config["model_type"], "vit");
  EXPECT_EQ(config["hidden_size"], 768);
  EXPECT_EQ(config["num_hidden_layers"], 12);
  EXPECT_EQ(config["num_attention_heads"], 12);
  EXPECT_EQ(config["intermediate_size"], 3072);
  EXPECT_EQ(config["hidden_act"], "gelu");
  EXPECT_EQ(config["hidden_dropout_prob"], 0.0);
  EXPECT_EQ(config["attention_probs_dropout_prob"], 0.0);
  EXPECT_EQ(config["initializer_range"], 0.02);
  EXPECT_EQ(config["layer_norm_eps"], 1e-12);
  EXPECT_EQ(config["image_size"], 224);
  EXPECT_EQ(config["patch_size"], 16);
  EXPECT_EQ(config["num_channels"], 3);
  EXPECT_EQ(config["qkv_bias"], true);
  EXPECT_EQ(config["encoder_stride"], 16);
  EXPECT_EQ(config["id2label"], json({{"0", "LABEL_0"}, {"1", "LABEL_1"}, {"2", "LABEL_2"}}));
  EXPECT_EQ(config["label2id"], json({{"LABEL_0", 0}, {"LABEL_1", 1}, {"LABEL_2", 2}}));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["transformers_version"], "4.40.0");
  EXPECT_FALSE(config.contains("vocab_size"));
}

TEST(HfConfig, BertFieldsWithClassNames) {
  auto spec = resolve_model_spec(preset("bert-base"), 2);
  spec.id2label = {"negative", "positive"};
  const json config = hf_config_json(spec);
  EXPECT_EQ(config["architectures"], json::array({"BertForSequenceClassification"}));
  EXPECT_EQ(config["model_type"], "bert");
  EXPECT_EQ(config["vocab_size"], 30522);
  EXPECT_EQ(config["max_position_embeddings"], 512);
  EXPECT_EQ(config["type_vocab_size"], 2);
  EXPECT_EQ(config["pad_token_id"], 0);
  EXPECT_EQ(config["position_embedding_type"], "absolute");
  EXPECT_EQ(config["problem_type"], "single_label_classification");
  EXPECT_EQ(config["hidden_dropout_prob"], 0.1);
  EXPECT_EQ(config["id2label"], json({{"0", "negative"}, {"1", "positive"}}));
  EXPECT_EQ(config["label2id"], json({{"negative", 0}, {"positive", 1}}));
  EXPECT_FALSE(config.contains("image_size"));
}

void expect_same_spec(const ModelSpec& a, const ModelSpec& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.preset, b.preset);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.image_size, b.image_size);
  EXPECT_EQ(a.patch_size, b.patch_size);
  EXPECT_EQ(a.num_channels, b.num_channels);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.type_vocab_size, b.type_vocab_size);
  EXPECT_EQ(a.hidden_dropout, b.hidden_dropout);
  EXPECT_EQ(a.attention_dropout, b.attention_dropout);
  EXPECT_EQ(a.layer_norm_eps, b.layer_norm_eps);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
  EXPECT_EQ(a.num_labels, b.num_labels);
  EXPECT_EQ(a.id2label, b.id2label);
}

TEST(HfConfig, RoundTripsThroughTextForEveryPreset) {
  for (const auto& name : model_preset_names()) {
    auto spec = resolve_model_spec(preset(name), 4);
    const auto text = hf_config_json(spec).dump(2);
    expect_same_spec(spec_from_hf_config(json::parse(text), "config.json"), spec);
  }
  auto named = resolve_model_spec(preset("bert-tiny"), 3);
  named.id2label = {"a", "b", "c"};
  expect_same_spec(spec_from_hf_config(hf_config_json(named), "config.json"), named);
  // A spec that matches no preset reads back with an empty preset name.
  auto custom = testing::tiny_vit_spec(2, 5);
  custom.preset = "";
  expect_same_spec(spec_from_hf_config(hf_config_json(custom), "config.json"), custom);
}

TEST(HfConfig, ReadErrorsNameTheFileAndField) {
  const auto base = hf_config_json(resolve_model_spec(preset("vit-tiny"), 10));

  auto missing = base;
  missing.erase("hidden_size");
  const auto m = error_of<FormatError>([&] { spec_from_hf_config(missing, "/ckpt/config.json"); });
  EXPECT_NE(m.find("/ckpt/config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("'hidden_size'"), std::string::npos) << m;

  auto typed = base;
  typed["patch_size"] = "eight";
  const auto t = error_of<FormatError>([&] { spec_from_hf_config(typed, "c.json"); });
  EXPECT_NE(t.find("c.json: field 'patch_size': must be an integer, got \"eight\""),
            std::string::npos)
      << t;

  auto act = base;
  act["hidden_act"] = "relu";
  EXPECT_NE(error_of<ModelError>([&] { spec_from_hf_config(act, "c.json"); }).find("'hidden_act'"),
            std::string::npos);

  auto type = base;
  type["model_type"] = "gpt2";
  EXPECT_NE(error_of<ModelError>([&] { spec_from_hf_config(type, "c.json"); }).find("'gpt2'"),
            std::string::npos);

  auto heads = base;
  heads["num_attention_heads"] = 3;
  const auto h = error_of<ModelError>([&] { spec_from_hf_config(heads, "c.json"); });
  EXPECT_NE(h.find("c.json: field 'hidden_size': 64 is not divisible"), std::string::npos) << h;

  auto labels = base;
  labels["id2label"] = json({{"0", "a"}, {"2", "b"}});
  EXPECT_NE(error_of<FormatError>([&] { spec_from_hf_config(labels, "c.json"); }).find("id2label"),
            std::string::npos);

  EXPECT_THROW(spec_from_hf_config(json::array(), "c.json"), FormatError);
}

TEST(HfConfig, HuggingFaceDefaultsFillOptionalFields) {
  // A minimal hand-written BERT config: HF's defaults fill the rest.
  const json config = {{"model_type", "bert"},        {"hidden_size", 32},
                       {"num_hidden_layers", 1},      {"num_attention_heads", 4},
                       {"intermediate_size", 64},     {"vocab_size", 100},
                       {"max_position_embeddings", 20}};
  const auto spec = spec_from_hf_config(config, "c.json");
  EXPECT_EQ(spec.family, ModelFamily::kBert);
  EXPECT_EQ(spec.type_vocab_size, 2);
  EXPECT_EQ(spec.hidden_dropout, 0.1);
  EXPECT_EQ(spec.num_labels, 2);
  EXPECT_TRUE(spec.id2label.empty());
}

}  // namespace
}  // namespace pipet
