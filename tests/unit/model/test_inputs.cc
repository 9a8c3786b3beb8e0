// Inputs that do not fit the model are ModelErrors that say what and where.
#include "runtime/core/errors.h"
#include "runtime/model/model.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

using testing::bert_inputs;
using testing::tiny_bert_spec;
using testing::tiny_vit_spec;

std::string forward_error(TransformerModel& model, const Activations& in, size_t end = 1) {
  try {
    model.forward_range(in, 0, end);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_MESSAGE(message, fragment) \
  EXPECT_NE((message).find(fragment), std::string::npos) << (message)

TEST(BertInputs, MissingTensorsAreNamed) {
  TransformerModel model(tiny_bert_spec(1));
  const auto good = bert_inputs(model.spec(), 2, 5);
  EXPECT_MESSAGE(forward_error(model, {{}, good.attention_mask, good.token_type_ids}),
                 "BERT embedding: input_ids is missing");
  EXPECT_MESSAGE(forward_error(model, {good.hidden, {}, good.token_type_ids}),
                 "BERT embedding: attention_mask is missing");
  EXPECT_MESSAGE(forward_error(model, {good.hidden, good.attention_mask, {}}),
                 "BERT embedding: token_type_ids is missing");
}

TEST(BertInputs, ShapesDtypesAndValuesAreChecked) {
  TransformerModel model(tiny_bert_spec(1));  // vocab 50, 16 positions, 2 types
  const auto good = bert_inputs(model.spec(), 2, 5);
  EXPECT_NO_THROW(model.forward(good));

  EXPECT_MESSAGE(forward_error(model, {good.hidden, good.attention_mask.narrow(1, 0, 4),
                                       good.token_type_ids}),
                 "attention_mask has shape [2, 4] but input_ids has [2, 5]");
  EXPECT_MESSAGE(forward_error(model, {good.hidden, good.attention_mask,
                                       good.token_type_ids.to(torch::kInt)}),
                 "token_type_ids must be int64, got Int");
  EXPECT_MESSAGE(forward_error(model, {good.hidden.flatten(), good.attention_mask.flatten(),
                                       good.token_type_ids.flatten()}),
                 "input_ids must be [batch, seq]");

  auto big_id = good.hidden.clone();
  big_id[1][3] = 50;
  EXPECT_MESSAGE(forward_error(model, {big_id, good.attention_mask, good.token_type_ids}),
                 "input_ids must lie in [0, 50) (model.vocab_size), found values in [");
  auto negative = good.hidden.clone();
  negative[0][0] = -1;
  EXPECT_MESSAGE(forward_error(model, {negative, good.attention_mask, good.token_type_ids}),
                 "input_ids must lie in [0, 50)");
  auto type = good.token_type_ids.clone();
  type[0][1] = 2;
  EXPECT_MESSAGE(forward_error(model, {good.hidden, good.attention_mask, type}),
                 "token_type_ids must lie in [0, 2) (model.type_vocab_size)");
  auto mask = good.attention_mask.clone();
  mask[0][1] = 2;
  EXPECT_MESSAGE(forward_error(model, {good.hidden, mask, good.token_type_ids}),
                 "attention_mask must hold 1 (token) or 0 (padding)");

  const auto long_inputs = bert_inputs(model.spec(), 1, 17);
  EXPECT_MESSAGE(forward_error(model, long_inputs),
                 "sequence length 17 exceeds model.max_position_embeddings = 16");
}

TEST(BertInputs, EncoderSubLayersNeedTheMask) {
  TransformerModel model(tiny_bert_spec(1));
  const auto hidden = model.forward_range(bert_inputs(model.spec(), 2, 5), 0, 1).hidden;
  try {
    model.forward_range({hidden, {}, {}}, 1, 2);
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_MESSAGE(std::string(e.what()), "block0.attention: attention_mask is missing");
  }
}

TEST(VitInputs, PixelShapeAndDtypeAreChecked) {
  TransformerModel model(tiny_vit_spec(1));  // 3 x 8 x 8
  EXPECT_MESSAGE(forward_error(model, {torch::randn({2, 1, 8, 8}), {}, {}}),
                 "pixel_values must be [batch, 3, 8, 8]");
  EXPECT_MESSAGE(forward_error(model, {torch::randn({2, 3, 16, 16}), {}, {}}), "got [2, 3, 16, 16]");
  EXPECT_MESSAGE(forward_error(model, {torch::randn({2, 3, 8, 8}, torch::kDouble), {}, {}}),
                 "pixel_values are Double but the model parameters are Float");
  EXPECT_MESSAGE(forward_error(model, {}), "no pixel_values given");
}

TEST(SubLayerInputs, HiddenStatesOfTheWrongWidthAreNamed) {
  TransformerModel model(tiny_vit_spec(2));
  try {
    model.forward_range({torch::randn({2, 5, 12}), {}, {}}, 3, 4);
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_MESSAGE(std::string(e.what()),
                   "block1.attention: expected hidden states [batch, seq, 16]");
  }
}

}  // namespace
}  // namespace pipet
