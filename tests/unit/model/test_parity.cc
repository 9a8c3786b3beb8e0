// Parity with the PyTorch eager reference (benchmarks/reference/torch_models.py):
// the same weights and inputs give the same logits.
#include "runtime/core/config.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/model/model.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>

namespace pipet {
namespace {

// HF's init gives logits near zero; spread the weights so every tensor moves
// the logits well above the tolerance.
void spread_parameters(TransformerModel& model) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : model.hf_parameters()) {
    const bool norm_weight = (name.find("LayerNorm.weight") != std::string::npos ||
                              name.find("layernorm") != std::string::npos) &&
                             name.find(".weight") != std::string::npos;
    if (norm_weight) {
      t.copy_(1.0 + 0.2 * torch::randn_like(t));
    } else {
      t.copy_(0.2 * torch::randn_like(t));
    }
  }
}

// Runs the reference on `model` and `inputs`; returns its logits.
torch::Tensor reference_logits(const TransformerModel& model,
                               const std::vector<std::pair<std::string, torch::Tensor>>& inputs,
                               const testing::TempDir& dir) {
  testing::write_text(dir.file("config.json"), hf_config_json(model.spec()).dump(2));
  save_safetensors(dir.file("model.safetensors"), model.hf_parameters());
  save_safetensors(dir.file("inputs.safetensors"), inputs);
  const std::string family = model.spec().family == ModelFamily::kVit ? "vit" : "bert";
  const std::string command = testing::python_with_torch() + " " + PIPET_SOURCE_DIR +
                              "/benchmarks/reference/torch_models.py --family " + family +
                              " --config " + dir.file("config.json") + " --weights " +
                              dir.file("model.safetensors") + " --inputs " +
                              dir.file("inputs.safetensors") + " --out " +
                              dir.file("logits.safetensors");
  const int rc = std::system(command.c_str());
  EXPECT_EQ(rc, 0) << command;
  if (rc != 0) return {};
  return load_safetensors(dir.file("logits.safetensors")).at("logits");
}

TEST(ReferenceParity, VitTinyLogitsMatchPyTorchEager) {
  if (testing::python_with_torch().empty()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  ModelConfig config;
  config.preset = "vit-tiny";
  torch::manual_seed(11);
  TransformerModel model(resolve_model_spec(config, 10));
  spread_parameters(model);
  model.eval();
  const auto pixels = torch::randn({3, 3, 32, 32});
  const auto logits = model.forward(Activations{pixels, {}, {}});

  testing::TempDir dir;
  const auto expected = reference_logits(model, {{"pixel_values", pixels}}, dir);
  ASSERT_TRUE(expected.defined());
  ASSERT_EQ(expected.sizes(), logits.sizes());
  EXPECT_GT(expected.abs().max().item<double>(), 0.1);
  EXPECT_LE((logits - expected).abs().max().item<double>(), 1e-5)
      << "engine\n" << logits << "\nreference\n" << expected;
}

TEST(ReferenceParity, BertWithPaddingAndTokenTypesMatchesPyTorchEager) {
  if (testing::python_with_torch().empty()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  ModelConfig config;
  config.preset = "bert-tiny";
  config.vocab_size = 100;
  config.max_position_embeddings = 32;
  torch::manual_seed(12);
  TransformerModel model(resolve_model_spec(config, 3));
  spread_parameters(model);
  model.eval();  // the preset has dropout 0.1
  // Sample 0 ends in 4 padding tokens, sample 1 in 1, sample 2 has none.
  auto inputs = testing::bert_inputs(model.spec(), 3, 12, /*padding=*/4);
  inputs.attention_mask[1][11] = 0;
  inputs.hidden[1][11] = 0;
  const auto logits = model.forward(inputs);

  testing::TempDir dir;
  const auto expected = reference_logits(model,
                                         {{"input_ids", inputs.hidden},
                                          {"attention_mask", inputs.attention_mask},
                                          {"token_type_ids", inputs.token_type_ids}},
                                         dir);
  ASSERT_TRUE(expected.defined());
  ASSERT_EQ(expected.sizes(), logits.sizes());
  EXPECT_GT(expected.abs().max().item<double>(), 0.1);
  EXPECT_LE((logits - expected).abs().max().item<double>(), 1e-5)
      << "engine\n" << logits << "\nreference\n" << expected;
}

}  // namespace
}  // namespace pipet
