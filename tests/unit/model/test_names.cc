// Hugging Face parameter names, sub-layer structure and parameter counts.
#include "runtime/core/config.h"
#include "runtime/model/model.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pipet {
namespace {

using testing::tiny_bert_spec;
using testing::tiny_vit_spec;

std::vector<std::string> names_of(const TransformerModel& model) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model.hf_parameters()) names.push_back(name);
  return names;
}

std::vector<std::string> vit_block_names(int block) {
  const std::string p = "vit.encoder.layer." + std::to_string(block) + ".";
  return {p + "layernorm_before.weight",
          p + "layernorm_before.bias",
          p + "attention.attention.query.weight",
          p + "attention.attention.query.bias",
          p + "attention.attention.key.weight",
          p + "attention.attention.key.bias",
          p + "attention.attention.value.weight",
          p + "attention.attention.value.bias",
          p + "attention.output.dense.weight",
          p + "attention.output.dense.bias",
          p + "layernorm_after.weight",
          p + "layernorm_after.bias",
          p + "intermediate.dense.weight",
          p + "intermediate.dense.bias",
          p + "output.dense.weight",
          p + "output.dense.bias"};
}

std::vector<std::string> bert_block_names(int block) {
  const std::string p = "bert.encoder.layer." + std::to_string(block) + ".";
  return {p + "attention.self.query.weight",
          p + "attention.self.query.bias",
          p + "attention.self.key.weight",
          p + "attention.self.key.bias",
          p + "attention.self.value.weight",
          p + "attention.self.value.bias",
          p + "attention.output.dense.weight",
          p + "attention.output.dense.bias",
          p + "attention.output.LayerNorm.weight",
          p + "attention.output.LayerNorm.bias",
          p + "intermediate.dense.weight",
          p + "intermediate.dense.bias",
          p + "output.dense.weight",
          p + "output.dense.bias",
          p + "output.LayerNorm.weight",
          p + "output.LayerNorm.bias"};
}

TEST(ModelNames, VitTwoBlocksHasExactHuggingFaceNamesInModelOrder) {
  TransformerModel model(tiny_vit_spec(2));
  std::vector<std::string> expected = {
      "vit.embeddings.cls_token", "vit.embeddings.position_embeddings",
      "vit.embeddings.patch_embeddings.projection.weight",
      "vit.embeddings.patch_embeddings.projection.bias"};
  for (int b = 0; b < 2; ++b) {
    const auto block = vit_block_names(b);
    expected.insert(expected.end(), block.begin(), block.end());
  }
  expected.insert(expected.end(), {"vit.layernorm.weight", "vit.layernorm.bias",
                                   "classifier.weight", "classifier.bias"});
  EXPECT_EQ(names_of(model), expected);
}

TEST(ModelNames, BertTwoBlocksHasExactHuggingFaceNamesInModelOrder) {
  TransformerModel model(tiny_bert_spec(2));
  std::vector<std::string> expected = {
      "bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
      "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
      "bert.embeddings.LayerNorm.bias"};
  for (int b = 0; b < 2; ++b) {
    const auto block = bert_block_names(b);
    expected.insert(expected.end(), block.begin(), block.end());
  }
  expected.insert(expected.end(), {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                   "classifier.weight", "classifier.bias"});
  EXPECT_EQ(names_of(model), expected);
}

TEST(ModelNames, VitShapesFollowTheSpec) {
  const auto spec = tiny_vit_spec(1, 5);
  TransformerModel model(spec);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : model.hf_parameters()) shapes[name] = t.sizes().vec();
  EXPECT_EQ(shapes["vit.embeddings.cls_token"], (std::vector<int64_t>{1, 1, 16}));
  EXPECT_EQ(shapes["vit.embeddings.position_embeddings"], (std::vector<int64_t>{1, 5, 16}));
  EXPECT_EQ(shapes["vit.embeddings.patch_embeddings.projection.weight"],
            (std::vector<int64_t>{16, 3, 4, 4}));
  EXPECT_EQ(shapes["vit.encoder.layer.0.intermediate.dense.weight"],
            (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(shapes["vit.encoder.layer.0.output.dense.weight"], (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(shapes["classifier.weight"], (std::vector<int64_t>{5, 16}));
}

TEST(ModelNames, SubLayerSequenceKindsBlocksAndDisplayNames) {
  TransformerModel model(tiny_bert_spec(2));
  ASSERT_EQ(model.num_sublayers(), 6u);
  const std::vector<std::string> display = {"embedding",   "block0.attention", "block0.mlp",
                                            "block1.attention", "block1.mlp", "head"};
  const std::vector<SubLayerKind> kinds = {SubLayerKind::kEmbedding, SubLayerKind::kAttention,
                                           SubLayerKind::kMlp,       SubLayerKind::kAttention,
                                           SubLayerKind::kMlp,       SubLayerKind::kHead};
  const std::vector<int64_t> blocks = {-1, 0, 0, 1, 1, -1};
  const std::vector<std::string> prefixes = {"bert.embeddings.", "bert.encoder.layer.0.",
                                             "bert.encoder.layer.0.", "bert.encoder.layer.1.",
                                             "bert.encoder.layer.1.", ""};
  for (size_t i = 0; i < model.num_sublayers(); ++i) {
    EXPECT_EQ(model.sublayer(i).display_name(), display[i]);
    EXPECT_EQ(model.sublayer(i).kind(), kinds[i]);
    EXPECT_EQ(model.sublayer(i).block(), blocks[i]);
    EXPECT_EQ(model.sublayer(i).hf_prefix(), prefixes[i]);
  }
  EXPECT_STREQ(to_string(SubLayerKind::kEmbedding), "embedding");
  EXPECT_STREQ(to_string(SubLayerKind::kAttention), "attention");
  EXPECT_STREQ(to_string(SubLayerKind::kMlp), "mlp");
  EXPECT_STREQ(to_string(SubLayerKind::kHead), "head");
}

TEST(ModelNames, ModuleParametersAreTheSubLayerParameters) {
  // parameters() of the model (for optimisers, to(device)) sees the same
  // tensors as hf_parameters(), nothing more.
  TransformerModel model(tiny_vit_spec(2));
  const auto params = model.parameters();
  const auto hf = model.hf_parameters();
  ASSERT_EQ(params.size(), hf.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(params[i].is_same(hf[i].second)) << hf[i].first;
  }
}

int64_t total(const TransformerModel& model) {
  int64_t count = 0;
  for (const auto& layer : model.sublayers()) count += layer->parameter_count();
  return count;
}

TEST(ModelCounts, VitB16WithImageNetHeadHas86567656Parameters) {
  ModelConfig config;
  config.preset = "vit-b16";
  config.num_labels = 1000;
  TransformerModel model(resolve_model_spec(config, 0));
  EXPECT_EQ(total(model), 86567656);
  ASSERT_EQ(model.num_sublayers(), 26u);
  // Embedding: conv 768*3*16*16 + 768, CLS 768, positions 197*768.
  EXPECT_EQ(model.sublayer(0).parameter_count(), 742656);
  for (size_t block = 0; block < 12; ++block) {
    // q, k, v, output dense (4 * (768*768 + 768)) + layernorm_before (2 * 768).
    EXPECT_EQ(model.sublayer(1 + 2 * block).parameter_count(), 2362368 + 1536);
    // intermediate + output dense (768*3072 + 3072 + 3072*768 + 768) + layernorm_after.
    EXPECT_EQ(model.sublayer(2 + 2 * block).parameter_count(), 4722432 + 1536);
  }
  // vit.layernorm + classifier 768*1000 + 1000.
  EXPECT_EQ(model.sublayer(25).parameter_count(), 1536 + 769000);
}

TEST(ModelCounts, BertBaseWithTwoLabelsHas109483778Parameters) {
  ModelConfig config;
  config.preset = "bert-base";
  TransformerModel model(resolve_model_spec(config, 2));
  EXPECT_EQ(total(model), 109483778);
  // word 30522*768 + positions 512*768 + types 2*768 + LayerNorm.
  EXPECT_EQ(model.sublayer(0).parameter_count(), (30522 + 512 + 2) * 768 + 1536);
}

}  // namespace
}  // namespace pipet
