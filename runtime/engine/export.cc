#include "runtime/engine/export.h"

#include <nlohmann/json.hpp>

#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/engine/saved_step.h"
#include "runtime/model/model.h"

namespace pipet {

void export_hf_model(const TransformerModel& model, const std::string& dir, const std::string& what) {
  ensure_writable_directory(dir, what);
  save_safetensors(dir + "/model.safetensors", model.hf_parameters(), {{"format", "pt"}});
  write_file_atomic(dir + "/config.json", hf_config_json(model.spec()).dump(2) + "\n");
  spdlog::info("[export] wrote {}/model.safetensors and config.json ({} tensors)", dir,
               model.hf_parameters().size());
}

void export_checkpoint(const std::string& checkpoint, const std::string& out_dir) {
  // Any layout: the model's tensors from whichever parts hold them.
  SavedStep saved = resolve_saved_step(checkpoint);
  std::map<std::string, torch::Tensor> weights;
  nlohmann::json model_config;
  std::string config_source;
  for (int part = 0; part < static_cast<int>(saved.parts.size()); ++part) {
    LoadedCheckpoint loaded = open_part(saved, part);
    if (part == 0) {
      model_config = loaded.model_config;
      config_source = loaded.path + "/trainer_state.json (model_config)";
    }
    for (auto& [name, tensor] : loaded.model) weights.emplace(name, tensor);
  }
  ModelSpec spec = spec_from_hf_config(model_config, config_source);
  TransformerModel model(spec);
  model.load_hf_parameters(weights, saved.source + " (model tensors of " + std::to_string(saved.parts.size()) +
                                        (saved.parts.size() == 1 ? " part)" : " parts)"),
                           /*allow_head_reinit=*/false);
  spdlog::info("[export] step {} saved on {}", saved.step, saved.layout_text());
  export_hf_model(model, out_dir, "--output");
}

}  // namespace pipet
