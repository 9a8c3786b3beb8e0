// load_hf_parameters and init_from_pretrained.
#include "runtime/core/errors.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/model/model.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

namespace pipet {
namespace {

using testing::tiny_bert_spec;
using testing::tiny_vit_spec;
using TensorMap = std::map<std::string, torch::Tensor>;

TensorMap to_map(const TransformerModel& model) {
  TensorMap map;
  for (const auto& [name, t] : model.hf_parameters()) map[name] = t.detach().clone();
  return map;
}

std::string load_error(TransformerModel& model, const TensorMap& tensors, bool allow_head_reinit) {
  try {
    model.load_hf_parameters(tensors, "/weights/model.safetensors", allow_head_reinit);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

bool same_parameters(const TransformerModel& model, const TensorMap& expected,
                     bool skip_classifier = false) {
  for (const auto& [name, t] : model.hf_parameters()) {
    if (skip_classifier && name.rfind("classifier.", 0) == 0) continue;
    if (!torch::equal(t, expected.at(name))) return false;
  }
  return true;
}

// Captures log lines of the default logger for the life of the object.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return stream_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream stream_;
};

TEST(ModelLoad, CopiesEveryTensorByName) {
  torch::manual_seed(1);
  TransformerModel source(tiny_bert_spec(2));
  torch::manual_seed(2);
  TransformerModel target(tiny_bert_spec(2));
  const auto tensors = to_map(source);
  ASSERT_FALSE(same_parameters(target, tensors));
  target.load_hf_parameters(tensors, "mem", /*allow_head_reinit=*/false);
  EXPECT_TRUE(same_parameters(target, tensors));
}

TEST(ModelLoad, MissingUnexpectedAndMisshapenAreAllNamedInOneError) {
  torch::manual_seed(3);
  TransformerModel model(tiny_vit_spec(2));
  const auto original = to_map(model);
  auto tensors = original;
  tensors.erase("vit.encoder.layer.1.attention.attention.key.bias");
  tensors["vit.encoder.layer.7.output.dense.weight"] = torch::zeros({2, 2});
  tensors["vit.encoder.layer.0.intermediate.dense.weight"] = torch::zeros({16, 32});
  // Everything else is different, so a partial load would show.
  for (auto& [name, t] : tensors) t = t + 1.0;

  const auto message = load_error(model, tensors, /*allow_head_reinit=*/false);
  EXPECT_NE(message.find("/weights/model.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("3 problems"), std::string::npos) << message;
  EXPECT_NE(message.find("missing: vit.encoder.layer.1.attention.attention.key.bias (expected [16])"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("unexpected: vit.encoder.layer.7.output.dense.weight (found [2, 2])"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("shape mismatch: vit.encoder.layer.0.intermediate.dense.weight expected "
                         "[32, 16], found [16, 32]"),
            std::string::npos)
      << message;
  EXPECT_TRUE(same_parameters(model, original));  // nothing was loaded
}

TEST(ModelLoad, ClassifierShapeIsAnErrorUnlessHeadReinitIsAllowed) {
  torch::manual_seed(4);
  TransformerModel source(tiny_vit_spec(2, /*labels=*/10));
  TransformerModel target(tiny_vit_spec(2, /*labels=*/3));
  const auto tensors = to_map(source);
  const auto message = load_error(target, tensors, /*allow_head_reinit=*/false);
  EXPECT_NE(message.find("shape mismatch: classifier.weight expected [3, 16], found [10, 16]"),
            std::string::npos)
      << message;

  const auto fresh_head = target.hf_parameters().back().second.clone();  // classifier.bias
  const auto fresh_weight = target.hf_parameters()[target.hf_parameters().size() - 2].second.clone();
  LogCapture log;
  target.load_hf_parameters(tensors, "/weights/model.safetensors", /*allow_head_reinit=*/true);
  EXPECT_TRUE(same_parameters(target, tensors, /*skip_classifier=*/true));
  const auto params = target.hf_parameters();
  EXPECT_EQ(params[params.size() - 2].second.sizes().vec(), (std::vector<int64_t>{3, 16}));
  EXPECT_TRUE(torch::equal(params[params.size() - 2].second, fresh_weight));
  EXPECT_TRUE(torch::equal(params.back().second, fresh_head));
  EXPECT_NE(log.text().find("[model] classifier has 10 classes in /weights/model.safetensors, the "
                            "model has 3: re-initialised"),
            std::string::npos)
      << log.text();
}

TEST(ModelLoad, HeadReinitDoesNotExcuseBackboneMismatches) {
  TransformerModel model(tiny_vit_spec(1));
  auto tensors = to_map(model);
  tensors["vit.layernorm.weight"] = torch::ones({8});
  EXPECT_NE(load_error(model, tensors, /*allow_head_reinit=*/true)
                .find("shape mismatch: vit.layernorm.weight"),
            std::string::npos);
}

TEST(ModelLoad, KnownBuffersAreIgnoredAndDtypesConverted) {
  torch::manual_seed(5);
  TransformerModel source(tiny_bert_spec(1));
  TransformerModel target(tiny_bert_spec(1));
  auto tensors = to_map(source);
  tensors["bert.embeddings.position_ids"] = torch::arange(16).unsqueeze(0);
  tensors["bert.pooler.dense.weight"] = tensors["bert.pooler.dense.weight"].to(torch::kHalf);
  tensors["classifier.weight"] = tensors["classifier.weight"].to(torch::kDouble);
  tensors["bert.embeddings.LayerNorm.bias"] =
      tensors["bert.embeddings.LayerNorm.bias"].to(torch::kBFloat16);
  LogCapture log;
  target.load_hf_parameters(tensors, "mem", /*allow_head_reinit=*/false);
  EXPECT_NE(log.text().find("ignoring buffer bert.embeddings.position_ids"), std::string::npos);
  for (const auto& [name, t] : target.hf_parameters()) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat) << name;
    EXPECT_TRUE(torch::equal(t, tensors.at(name).to(torch::kFloat))) << name;
  }
}

TEST(ModelLoad, IntegerTensorForAParameterIsRejected) {
  TransformerModel model(tiny_vit_spec(1));
  auto tensors = to_map(model);
  tensors["vit.embeddings.cls_token"] = torch::zeros({1, 1, 16}, torch::kLong);
  EXPECT_NE(load_error(model, tensors, false).find("wrong dtype: vit.embeddings.cls_token is Long"),
            std::string::npos);
}

TEST(Pretrained, LoadsAFileAndReinitialisesTheHead) {
  testing::TempDir dir;
  torch::manual_seed(6);
  TransformerModel source(tiny_vit_spec(2, 10));
  save_safetensors(dir.file("model.safetensors"), source.hf_parameters());
  TransformerModel target(tiny_vit_spec(2, 4));
  init_from_pretrained(target, dir.file("model.safetensors"));
  EXPECT_TRUE(same_parameters(target, to_map(source), /*skip_classifier=*/true));
  EXPECT_EQ(target.hf_parameters().back().second.size(0), 4);
}

TEST(Pretrained, ReadsHubCheckpointLayouts) {
  // A BertForPreTraining-style file: legacy gamma/beta names, MLM/NSP heads,
  // no classifier. A ViTModel-style file: no "vit." prefix, a pooler.
  testing::TempDir dir;
  torch::manual_seed(7);
  TransformerModel bert_source(tiny_bert_spec(1));
  std::vector<std::pair<std::string, torch::Tensor>> bert_file;
  for (const auto& [name, t] : bert_source.hf_parameters()) {
    if (name.rfind("classifier.", 0) == 0) continue;
    std::string stored = name;
    if (name == "bert.embeddings.LayerNorm.weight") stored = "bert.embeddings.LayerNorm.gamma";
    if (name == "bert.embeddings.LayerNorm.bias") stored = "bert.embeddings.LayerNorm.beta";
    bert_file.emplace_back(stored, t);
  }
  bert_file.emplace_back("cls.predictions.bias", torch::zeros({50}));
  bert_file.emplace_back("cls.seq_relationship.weight", torch::zeros({2, 16}));
  save_safetensors(dir.file("bert.safetensors"), bert_file);
  TransformerModel bert(tiny_bert_spec(1));
  init_from_pretrained(bert, dir.file("bert.safetensors"));
  EXPECT_TRUE(same_parameters(bert, to_map(bert_source), /*skip_classifier=*/true));

  TransformerModel vit_source(tiny_vit_spec(1));
  std::vector<std::pair<std::string, torch::Tensor>> vit_file;
  for (const auto& [name, t] : vit_source.hf_parameters()) {
    if (name.rfind("vit.", 0) == 0) vit_file.emplace_back(name.substr(4), t);
  }
  vit_file.emplace_back("pooler.dense.weight", torch::zeros({16, 16}));
  vit_file.emplace_back("pooler.dense.bias", torch::zeros({16}));
  save_safetensors(dir.file("vit.safetensors"), vit_file);
  TransformerModel vit(tiny_vit_spec(1));
  init_from_pretrained(vit, dir.file("vit.safetensors"));
  EXPECT_TRUE(same_parameters(vit, to_map(vit_source), /*skip_classifier=*/true));
}

TEST(Pretrained, ForeignWeightsAreAModelErrorNamingTheFile) {
  testing::TempDir dir;
  TransformerModel bert(tiny_bert_spec(1));
  save_safetensors(dir.file("bert.safetensors"), bert.hf_parameters());
  TransformerModel vit(tiny_vit_spec(1));
  try {
    init_from_pretrained(vit, dir.file("bert.safetensors"));
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(dir.file("bert.safetensors")), std::string::npos) << message;
    EXPECT_NE(message.find("missing: vit.embeddings.cls_token"), std::string::npos) << message;
    EXPECT_NE(message.find("unexpected: bert.embeddings.word_embeddings.weight"), std::string::npos)
        << message;
  }
}

}  // namespace
}  // namespace pipet
