#include "runtime/model/model.h"

#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/core/strings.h"
#include "runtime/model/builders.h"
#include "runtime/model/layers.h"

#include <algorithm>
#include <set>

namespace pipet {
namespace {


// Buffers Hugging Face checkpoints may carry that are not parameters here.
bool is_known_hf_buffer(const std::string& name) {
  return name == "bert.embeddings.position_ids" || name == "bert.embeddings.token_type_ids";
}

// Task-head tensors, which --init-from may re-initialise.
bool is_classifier(const std::string& name) {
  return starts_with(name, "classifier.") || starts_with(name, "qa_outputs.");
}

}  // namespace

TransformerModel::TransformerModel(const ModelSpec& spec) : spec_(spec) {
  model_detail::validate_model_spec_or_throw(spec_);
  sublayers_ = spec_.family == ModelFamily::kVit ? model_detail::build_vit_sublayers(spec_)
                                                 : model_detail::build_bert_sublayers(spec_);
  for (const auto& layer : sublayers_) {
    // Module names cannot hold dots: "block3.attention" -> "block3_attention".
    auto name = layer->display_name();
    std::replace(name.begin(), name.end(), '.', '_');
    register_module(name, layer);
  }
}

Activations TransformerModel::forward_range(Activations in, size_t begin, size_t end) {
  if (begin > end || end > sublayers_.size()) {
    throw ModelError("forward_range: sub-layer range [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ") is outside the model's " +
                     std::to_string(sublayers_.size()) + " sub-layers");
  }
  for (size_t i = begin; i < end; ++i) in = sublayers_[i]->forward(in);
  return in;
}

torch::Tensor TransformerModel::forward(const Activations& inputs) {
  return forward_range(inputs, 0, sublayers_.size()).hidden;
}

NamedTensors TransformerModel::hf_parameters() const {
  NamedTensors all;
  for (const auto& layer : sublayers_) {
    auto named = layer->hf_parameters();
    all.insert(all.end(), std::make_move_iterator(named.begin()),
               std::make_move_iterator(named.end()));
  }
  return all;
}

void TransformerModel::load_hf_parameters(const std::map<std::string, torch::Tensor>& tensors,
                                          const std::string& source, bool allow_head_reinit) {
  const auto params = hf_parameters();

  // The classifier is re-initialised as a unit: when any of its tensors is
  // absent or differently shaped (and that is allowed), none is loaded.
  bool reinit_head = false;
  if (allow_head_reinit) {
    for (const auto& [name, param] : params) {
      if (!is_classifier(name)) continue;
      const auto found = tensors.find(name);
      if (found == tensors.end() || !found->second.defined() ||
          found->second.sizes() != param.sizes()) {
        reinit_head = true;
      }
    }
  }

  std::vector<std::string> problems;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (parameter, source)
  std::set<std::string> parameter_names;
  for (const auto& [name, param] : params) {
    parameter_names.insert(name);
    if (reinit_head && is_classifier(name)) continue;
    const auto found = tensors.find(name);
    if (found == tensors.end() || !found->second.defined()) {
      problems.push_back("missing: " + name + " (expected " + shape_string(param.sizes()) + ")");
      continue;
    }
    const auto& tensor = found->second;
    if (tensor.sizes() != param.sizes()) {
      problems.push_back("shape mismatch: " + name + " expected " + shape_string(param.sizes()) +
                         ", found " + shape_string(tensor.sizes()));
      continue;
    }
    if (!tensor.is_floating_point()) {
      problems.push_back("wrong dtype: " + name + " is " + c10::toString(tensor.scalar_type()) +
                         ", expected a floating-point tensor");
      continue;
    }
    copies.emplace_back(param, tensor);
  }
  for (const auto& [name, tensor] : tensors) {
    if (parameter_names.count(name) != 0) continue;
    if (is_known_hf_buffer(name)) {
      spdlog::debug("[model] ignoring buffer {} in {}", name, source);
      continue;
    }
    problems.push_back("unexpected: " + name + " (found " +
                       (tensor.defined() ? shape_string(tensor.sizes()) : std::string("empty")) +
                       ")");
  }
  if (!problems.empty()) {
    throw ModelError(source + " does not fit the " + model_detail::family_name(spec_.family) +
                     " model" + (spec_.preset.empty() ? "" : " '" + spec_.preset + "'") + " (" +
                     std::to_string(problems.size()) + " problem" +
                     (problems.size() == 1 ? "" : "s") + "):\n  " + join(problems, "\n  "));
  }

  {
    torch::NoGradGuard no_grad;
    for (auto& [param, tensor] : copies) param.copy_(tensor);  // converts F16/BF16/F64
  }
  if (reinit_head) {
    const auto found = tensors.find("classifier.weight");
    if (found != tensors.end() && found->second.defined() && found->second.dim() >= 1) {
      spdlog::info("[model] classifier has {} classes in {}, the model has {}: re-initialised",
                   found->second.size(0), source, spec_.num_labels);
    } else {
      spdlog::info("[model] {} has no classifier for the model's {} classes: initialised fresh",
                   source, spec_.num_labels);
    }
  }
}

}  // namespace pipet
