// TransformerModel: ViT or BERT as a sequence of sub-layers with Hugging Face
// parameter names. ModelSpec is the resolved architecture (preset + overrides).
#pragma once

#include "runtime/core/torch_pch.h"
#include "runtime/model/sublayer.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

struct ModelConfig;

enum class ModelFamily { kVit, kBert };

// What the last sub-layer computes: class logits [B,num_labels] from the
// pooled first token (*ForSequenceClassification / ViTForImageClassification),
// or start/end logits [B,S,2] for every token (BertForQuestionAnswering).
enum class ModelHead { kClassification, kQuestionAnswering };

struct ModelSpec {
  ModelFamily family = ModelFamily::kVit;
  std::string preset;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t image_size = 0;       // ViT
  int64_t patch_size = 0;       // ViT
  int64_t num_channels = 0;     // ViT
  int64_t vocab_size = 0;       // BERT
  int64_t max_position_embeddings = 0;  // BERT
  int64_t type_vocab_size = 0;  // BERT
  double hidden_dropout = 0.0;
  double attention_dropout = 0.0;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  int64_t num_labels = 0;
  std::vector<std::string> id2label;  // optional class names, size num_labels
  ModelHead head = ModelHead::kClassification;
};

// Preset + explicit overrides; `dataset_num_labels` fills num_labels when the
// config leaves it 0. Throws ConfigError naming the key for impossible shapes
// (hidden_size not divisible by num_heads, image_size by patch_size, ...).
ModelSpec resolve_model_spec(const ModelConfig& config, int64_t dataset_num_labels);

std::vector<std::string> model_preset_names();

class TransformerModel : public torch::nn::Module {
 public:
  // Builds the sub-layers and initialises them as Hugging Face does
  // (normal(0, initializer_range) weights, zero biases, unit LayerNorm),
  // drawing from torch's default generator (seed it first for reproducibility).
  explicit TransformerModel(const ModelSpec& spec);

  const ModelSpec& spec() const { return spec_; }

  size_t num_sublayers() const { return sublayers_.size(); }
  SubLayer& sublayer(size_t i) const { return *sublayers_.at(i); }
  const std::vector<std::shared_ptr<SubLayer>>& sublayers() const { return sublayers_; }

  // Runs sub-layers [begin, end) on `in`.
  Activations forward_range(Activations in, size_t begin, size_t end);
  // Runs the whole model: embedding inputs in, logits out.
  torch::Tensor forward(const Activations& inputs);

  // Every parameter under its Hugging Face name, in model order.
  NamedTensors hf_parameters() const;

  // Copies `tensors` (Hugging Face names) into the parameters. Every
  // parameter must be present with the same shape, and no tensor may be left
  // over; otherwise ModelError naming the tensors and `source`. Known
  // non-parameter buffers of HF checkpoints (e.g. position_ids) are ignored.
  // With `allow_head_reinit`, a classifier whose class count differs is kept
  // at its fresh initialisation and a log line says so.
  void load_hf_parameters(const std::map<std::string, torch::Tensor>& tensors,
                          const std::string& source, bool allow_head_reinit);

 private:
  ModelSpec spec_;
  std::vector<std::shared_ptr<SubLayer>> sublayers_;
};

// config.json in the Hugging Face format (ViTForImageClassification /
// BertForSequenceClassification), and back.
nlohmann::json hf_config_json(const ModelSpec& spec);
ModelSpec spec_from_hf_config(const nlohmann::json& config, const std::string& source);

// Loads safetensors weights (Hugging Face names) into `model` for
// --init-from: a differently-sized head is re-initialised with a log line,
// anything else that does not fit is a ModelError naming the tensor.
void init_from_pretrained(TransformerModel& model, const std::string& path);

}  // namespace pipet
