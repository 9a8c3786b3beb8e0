// Forward passes: ranges, shapes, masking, dropout modes, gradients, init.
#include "runtime/core/errors.h"
#include "runtime/model/model.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

using testing::bert_inputs;
using testing::tiny_bert_spec;
using testing::tiny_vit_spec;
using testing::vit_inputs;

TEST(ModelForward, VitRangesComposeToTheFullForward) {
  torch::manual_seed(1);
  TransformerModel model(tiny_vit_spec(3));
  model.eval();
  const auto inputs = vit_inputs(model.spec(), 2);
  const auto full = model.forward(inputs);
  for (size_t k = 0; k <= model.num_sublayers(); ++k) {
    const auto middle = model.forward_range(inputs, 0, k);
    const auto logits = model.forward_range(middle, k, model.num_sublayers()).hidden;
    EXPECT_TRUE(torch::equal(logits, full)) << "split at " << k;
  }
}

TEST(ModelForward, BertRangesComposeAndCarryTheMask) {
  torch::manual_seed(2);
  TransformerModel model(tiny_bert_spec(2));
  model.eval();
  const auto inputs = bert_inputs(model.spec(), 3, 7, /*padding=*/2);
  const auto full = model.forward(inputs);
  const auto after_embedding = model.forward_range(inputs, 0, 1);
  EXPECT_TRUE(after_embedding.attention_mask.is_same(inputs.attention_mask));
  const auto after_block = model.forward_range(after_embedding, 1, 3);
  EXPECT_TRUE(after_block.attention_mask.is_same(inputs.attention_mask));
  const auto logits = model.forward_range(after_block, 3, model.num_sublayers()).hidden;
  EXPECT_TRUE(torch::equal(logits, full));
}

TEST(ModelForward, ShapesBetweenSubLayers) {
  TransformerModel vit(tiny_vit_spec(1, 4));
  const auto tokens = vit.forward_range(vit_inputs(vit.spec(), 2), 0, 1).hidden;
  EXPECT_EQ(tokens.sizes().vec(), (std::vector<int64_t>{2, 5, 16}));  // 4 patches + CLS
  EXPECT_EQ(vit.forward_range({tokens, {}, {}}, 1, 3).hidden.sizes().vec(),
            (std::vector<int64_t>{2, 5, 16}));
  EXPECT_EQ(vit.forward(vit_inputs(vit.spec(), 2)).sizes().vec(), (std::vector<int64_t>{2, 4}));

  TransformerModel bert(tiny_bert_spec(1, 6));
  const auto inputs = bert_inputs(bert.spec(), 3, 9);
  EXPECT_EQ(bert.forward_range(inputs, 0, 1).hidden.sizes().vec(),
            (std::vector<int64_t>{3, 9, 16}));
  EXPECT_EQ(bert.forward(inputs).sizes().vec(), (std::vector<int64_t>{3, 6}));
}

TEST(ModelForward, EmptyRangeReturnsTheInputAndBadRangesThrow) {
  TransformerModel model(tiny_vit_spec(1));
  const auto inputs = vit_inputs(model.spec(), 1);
  EXPECT_TRUE(model.forward_range(inputs, 2, 2).hidden.is_same(inputs.hidden));
  EXPECT_THROW(model.forward_range(inputs, 3, 2), ModelError);
  EXPECT_THROW(model.forward_range(inputs, 0, model.num_sublayers() + 1), ModelError);
}

TEST(ModelForward, PaddedPositionsDoNotChangeTheLogits) {
  torch::manual_seed(3);
  TransformerModel model(tiny_bert_spec(2));
  model.eval();
  auto inputs = bert_inputs(model.spec(), 2, 8, /*padding=*/3);
  const auto before = model.forward(inputs);
  inputs.hidden = inputs.hidden.clone();
  inputs.hidden[0][6] = 17;  // a padded position of sample 0
  const auto after = model.forward(inputs);
  EXPECT_TRUE(torch::allclose(before, after, 1e-6, 1e-6));
  inputs.hidden[0][2] = 17;  // a real token: the logits must move
  EXPECT_FALSE(torch::allclose(before[0], model.forward(inputs)[0], 1e-6, 1e-6));
}

TEST(ModelForward, DropoutOnlyInTrainingMode) {
  torch::manual_seed(4);
  TransformerModel model(tiny_bert_spec(2));  // dropout 0.1
  const auto inputs = bert_inputs(model.spec(), 4, 8);
  model.eval();
  for (const auto& layer : model.sublayers()) EXPECT_FALSE(layer->is_training());
  const auto eval1 = model.forward(inputs);
  const auto eval2 = model.forward(inputs);
  EXPECT_TRUE(torch::equal(eval1, eval2));
  model.train();
  for (const auto& layer : model.sublayers()) EXPECT_TRUE(layer->is_training());
  torch::manual_seed(10);
  const auto train1 = model.forward(inputs);
  const auto train2 = model.forward(inputs);
  torch::manual_seed(10);
  const auto train1_again = model.forward(inputs);
  EXPECT_FALSE(torch::allclose(train1, eval1));
  EXPECT_FALSE(torch::allclose(train1, train2));
  EXPECT_TRUE(torch::equal(train1, train1_again));  // dropout draws from the seeded generator

  // ViT presets have no dropout: training mode changes nothing.
  TransformerModel vit(tiny_vit_spec(2));
  const auto pixels = vit_inputs(vit.spec(), 2);
  vit.train();
  const auto vit_train = vit.forward(pixels);
  vit.eval();
  EXPECT_TRUE(torch::equal(vit_train, vit.forward(pixels)));
}

TEST(ModelForward, BackwardReachesEveryParameter) {
  torch::manual_seed(5);
  for (const auto& spec : {tiny_vit_spec(2), tiny_bert_spec(2)}) {
    TransformerModel model(spec);
    const auto inputs = spec.family == ModelFamily::kVit ? vit_inputs(spec, 2)
                                                         : bert_inputs(spec, 2, 6, 1);
    model.forward(inputs).pow(2).sum().backward();
    for (const auto& [name, param] : model.hf_parameters()) {
      ASSERT_TRUE(param.grad().defined()) << name;
      EXPECT_TRUE(torch::isfinite(param.grad()).all().item<bool>()) << name;
      EXPECT_GT(param.grad().abs().sum().item<double>(), 0.0) << name;
    }
  }
}

TEST(ModelForward, PaddingRowGetsNoGradient) {
  torch::manual_seed(6);
  TransformerModel model(tiny_bert_spec(1));
  model.forward(bert_inputs(model.spec(), 2, 6, /*padding=*/2)).sum().backward();
  const auto grad = model.hf_parameters().front().second.grad();  // word_embeddings
  EXPECT_EQ(grad[0].abs().sum().item<double>(), 0.0);
}

TEST(ModelInit, FollowsHuggingFaceAndTheSeed) {
  torch::manual_seed(7);
  TransformerModel a(tiny_bert_spec(2));
  torch::manual_seed(7);
  TransformerModel b(tiny_bert_spec(2));
  const auto pa = a.hf_parameters();
  const auto pb = b.hf_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  for (const auto& [name, t] : pa) {
    const bool layernorm = name.find("LayerNorm") != std::string::npos;
    if (layernorm && name.find(".weight") != std::string::npos) {
      EXPECT_TRUE(torch::equal(t, torch::ones_like(t))) << name;
    } else if (name.find(".bias") != std::string::npos) {
      EXPECT_TRUE(torch::equal(t, torch::zeros_like(t))) << name;
    }
  }
  EXPECT_TRUE(torch::equal(pa[0].second[0], torch::zeros({16})));  // padding row
  // A large draw to check the spread: normal(0, 0.02).
  ModelSpec wide = tiny_bert_spec(1);
  wide.vocab_size = 4000;
  TransformerModel big(wide);
  const auto words = big.hf_parameters().front().second.slice(0, 1);
  EXPECT_NEAR(words.std().item<double>(), 0.02, 0.0005);
  EXPECT_NEAR(words.mean().item<double>(), 0.0, 0.0005);
}

TEST(ModelInit, VitUsesTruncatedNormalIncludingClsAndPositions) {
  torch::manual_seed(8);
  ModelSpec spec = tiny_vit_spec(1);
  spec.initializer_range = 1.5;  // wide enough that the +-2 truncation shows
  TransformerModel model(spec);
  for (const auto& [name, t] : model.hf_parameters()) {
    if (name.find("layernorm") != std::string::npos || name.find(".bias") != std::string::npos) {
      continue;
    }
    EXPECT_LE(t.abs().max().item<double>(), 2.0) << name;
    EXPECT_GT(t.abs().max().item<double>(), 1.0) << name;  // not a narrow init
  }
}

}  // namespace
}  // namespace pipet
