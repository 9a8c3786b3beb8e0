// --init-from: Hugging Face safetensors checkpoints into a TransformerModel.
// Checkpoints on the Hub come from related classes, so before the strict
// load the names are brought to the *ForClassification layout the way
// transformers' from_pretrained does: legacy LayerNorm gamma/beta names, base
// models saved without the "vit."/"bert." prefix, pretraining heads that the
// classification model does not have, and a BERT pooler the checkpoint lacks.
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/core/strings.h"
#include "runtime/model/model.h"

#include <algorithm>

namespace pipet {
namespace {

std::string first_names(const std::vector<std::string>& names, size_t limit) {
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(limit, names.size()));
  return join(shown, ", ") + (names.size() > limit ? ", ..." : "");
}

// LayerNorm.gamma / LayerNorm.beta (TF-era BERT checkpoints) -> weight / bias.
std::map<std::string, torch::Tensor> rename_legacy(std::map<std::string, torch::Tensor> tensors,
                                                   const std::string& path) {
  std::map<std::string, torch::Tensor> out;
  size_t renamed = 0;
  for (auto& [name, tensor] : tensors) {
    std::string target = name;
    if (ends_with(name, ".gamma")) {
      target = name.substr(0, name.size() - 6) + ".weight";
    } else if (ends_with(name, ".beta")) {
      target = name.substr(0, name.size() - 5) + ".bias";
    }
    if (target != name) ++renamed;
    if (!out.emplace(target, std::move(tensor)).second) {
      throw ModelError(path + ": holds both " + name + " and " + target +
                       " (the legacy name of the same tensor)");
    }
  }
  if (renamed > 0) {
    spdlog::info("[model] {}: {} legacy gamma/beta names read as weight/bias", path, renamed);
  }
  return out;
}

// A base model (ViTModel / BertModel) saves "embeddings.*"; the
// classification model calls the same tensors "vit.embeddings.*".
std::map<std::string, torch::Tensor> add_base_prefix(std::map<std::string, torch::Tensor> tensors,
                                                     const std::string& prefix,
                                                     const std::string& path) {
  for (const auto& [name, tensor] : tensors) {
    if (starts_with(name, prefix)) return tensors;
  }
  const bool base_model = std::any_of(tensors.begin(), tensors.end(), [](const auto& item) {
    return starts_with(item.first, "embeddings.");
  });
  if (!base_model) return tensors;
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, tensor] : tensors) {
    const bool head = starts_with(name, "classifier.") || starts_with(name, "qa_outputs.");
    out.emplace(head ? name : prefix + name, std::move(tensor));
  }
  spdlog::info("[model] {} holds a base model: its names are read under '{}'", path, prefix);
  return out;
}

// Pretraining heads the classification model does not have: BERT's masked-LM
// and next-sentence heads ("cls.*"), ViTModel's pooler ("vit.pooler.*").
void drop_pretraining_heads(std::map<std::string, torch::Tensor>& tensors, ModelFamily family,
                            const std::string& path) {
  const std::string head_prefix = family == ModelFamily::kBert ? "cls." : "vit.pooler.";
  std::vector<std::string> dropped;
  for (auto it = tensors.begin(); it != tensors.end();) {
    if (starts_with(it->first, head_prefix)) {
      dropped.push_back(it->first);
      it = tensors.erase(it);
    } else {
      ++it;
    }
  }
  if (!dropped.empty()) {
    spdlog::info("[model] {}: ignoring {} tensors of a pretraining head ({})", path, dropped.size(),
                 first_names(dropped, 3));
  }
}

// BertForMaskedLM checkpoints have no pooler; like transformers, keep the
// model's freshly initialised one.
void keep_fresh_pooler(std::map<std::string, torch::Tensor>& tensors,
                       const TransformerModel& model, const std::string& path) {
  if (model.spec().family != ModelFamily::kBert) return;
  const std::string pooler = "bert.pooler.";
  if (model.spec().head == ModelHead::kQuestionAnswering) {
    // BertForQuestionAnswering has no pooler; transformers ignores it too.
    size_t dropped = 0;
    for (auto it = tensors.begin(); it != tensors.end();) {
      if (starts_with(it->first, pooler)) {
        it = tensors.erase(it);
        ++dropped;
      } else {
        ++it;
      }
    }
    if (dropped > 0)
      spdlog::info("[model] {}: ignoring its pooler (the question-answering model has none)", path);
    return;
  }
  const bool has_pooler = std::any_of(tensors.begin(), tensors.end(), [&](const auto& item) {
    return starts_with(item.first, pooler);
  });
  if (has_pooler) return;
  for (const auto& [name, param] : model.hf_parameters()) {
    if (starts_with(name, pooler)) tensors.emplace(name, param.detach());
  }
  spdlog::info("[model] {} has no pooler (bert.pooler.dense): initialised fresh", path);
}

}  // namespace

void init_from_pretrained(TransformerModel& model, const std::string& path) {
  auto tensors = rename_legacy(load_safetensors(path), path);
  const std::string prefix = model.spec().family == ModelFamily::kVit ? "vit." : "bert.";
  tensors = add_base_prefix(std::move(tensors), prefix, path);
  drop_pretraining_heads(tensors, model.spec().family, path);
  keep_fresh_pooler(tensors, model, path);
  model.load_hf_parameters(tensors, path, /*allow_head_reinit=*/true);
  spdlog::info("[model] initialised {} parameters from {}", model.hf_parameters().size(), path);
}

}  // namespace pipet
