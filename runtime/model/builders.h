// Internal to runtime/model: the per-family sub-layer builders and the spec
// validation shared by presets (config keys) and config.json (HF fields).
#pragma once

#include "runtime/model/model.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pipet::model_detail {

// The sequence every family shares: embedding, (attention, MLP) per block, head.
template <typename Embedding, typename Attention, typename Mlp, typename Head>
std::vector<std::shared_ptr<SubLayer>> build_sublayer_sequence(const ModelSpec& spec) {
  std::vector<std::shared_ptr<SubLayer>> layers;
  layers.reserve(static_cast<size_t>(2 * spec.num_layers + 2));
  layers.push_back(std::make_shared<Embedding>(spec));
  for (int64_t block = 0; block < spec.num_layers; ++block) {
    layers.push_back(std::make_shared<Attention>(spec, block));
    layers.push_back(std::make_shared<Mlp>(spec, block));
  }
  layers.push_back(std::make_shared<Head>(spec));
  return layers;
}

// Embedding, (attention, MLP) per block, head; initialised as Hugging Face does.
std::vector<std::shared_ptr<SubLayer>> build_vit_sublayers(const ModelSpec& spec);
std::vector<std::shared_ptr<SubLayer>> build_bert_sublayers(const ModelSpec& spec);

// Reports the first impossible value of `spec` through `fail(config_key,
// hf_field, problem)`, which must throw. `config_key` is the model.* key,
// `hf_field` the config.json field holding the same value.
using SpecFailure =
    std::function<void(const std::string& config_key, const std::string& hf_field,
                       const std::string& problem)>;
void validate_model_spec(const ModelSpec& spec, const SpecFailure& fail);

// validate_model_spec reporting ConfigError("model.<key>: <problem>").
void validate_model_spec_or_throw(const ModelSpec& spec);

const char* family_name(ModelFamily family);  // "ViT" / "BERT"

}  // namespace pipet::model_detail
