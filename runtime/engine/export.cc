#include "runtime/engine/export.h"

#include <nlohmann/json.hpp>

#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/model/model.h"

namespace pipet {

void export_hf_model(const TransformerModel& model, const std::string& dir, const std::string& what) {
  ensure_writable_directory(dir, what);
  save_safetensors(dir + "/model.safetensors", model.hf_parameters(), {{"format", "pt"}});
  write_file_atomic(dir + "/config.json", hf_config_json(model.spec()).dump(2) + "\n");
  spdlog::info("[export] wrote {}/model.safetensors and config.json ({} tensors)", dir,
               model.hf_parameters().size());
}

void export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir) {
  LoadedCheckpoint checkpoint = Checkpointer::load(checkpoint_dir);
  ModelSpec spec = spec_from_hf_config(checkpoint.model_config,
                                       checkpoint_dir + "/trainer_state.json (model_config)");
  TransformerModel model(spec);
  model.load_hf_parameters(checkpoint.model, checkpoint_dir + "/model.safetensors",
                           /*allow_head_reinit=*/false);
  export_hf_model(model, out_dir, "--output");
}

}  // namespace pipet
