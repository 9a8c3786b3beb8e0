#include "tests/unit/model/model_test_util.h"

#include <cstdlib>

namespace pipet::testing {

ModelSpec tiny_vit_spec(int64_t blocks, int64_t labels) {
  ModelSpec spec;
  spec.family = ModelFamily::kVit;
  spec.preset = "test-vit";
  spec.image_size = 8;
  spec.patch_size = 4;
  spec.num_channels = 3;
  spec.hidden_size = 16;
  spec.num_layers = blocks;
  spec.num_heads = 2;
  spec.intermediate_size = 32;
  spec.num_labels = labels;
  return spec;
}

ModelSpec tiny_bert_spec(int64_t blocks, int64_t labels) {
  ModelSpec spec;
  spec.family = ModelFamily::kBert;
  spec.preset = "test-bert";
  spec.vocab_size = 50;
  spec.max_position_embeddings = 16;
  spec.type_vocab_size = 2;
  spec.hidden_size = 16;
  spec.num_layers = blocks;
  spec.num_heads = 2;
  spec.intermediate_size = 32;
  spec.hidden_dropout = 0.1;
  spec.attention_dropout = 0.1;
  spec.num_labels = labels;
  return spec;
}

Activations vit_inputs(const ModelSpec& spec, int64_t batch) {
  return Activations{
      torch::randn({batch, spec.num_channels, spec.image_size, spec.image_size}), {}, {}};
}

Activations bert_inputs(const ModelSpec& spec, int64_t batch, int64_t seq, int64_t padding) {
  auto ids = torch::randint(1, spec.vocab_size, {batch, seq}, torch::kLong);
  auto mask = torch::ones({batch, seq}, torch::kLong);
  auto types = torch::zeros({batch, seq}, torch::kLong);
  types.narrow(1, seq / 2, seq - seq / 2).fill_(1);
  if (padding > 0) {
    ids[0].narrow(0, seq - padding, padding).fill_(0);
    mask[0].narrow(0, seq - padding, padding).fill_(0);
    types[0].narrow(0, seq - padding, padding).fill_(0);
  }
  return Activations{ids, mask, types};
}

std::string python_with_torch() {
  static const std::string python = [] {
    const int rc = std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1");
    return rc == 0 ? std::string("/usr/bin/python3") : std::string();
  }();
  return python;
}

}  // namespace pipet::testing
