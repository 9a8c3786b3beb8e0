// Export in the Hugging Face format: model.safetensors + config.json, which
// the transformers library loads with from_pretrained.
#pragma once

#include <string>

namespace pipet {

class TransformerModel;

// Writes model.safetensors and config.json into `dir` (created if needed;
// IoError naming `what` if it cannot be written).
void export_hf_model(const TransformerModel& model, const std::string& dir,
                     const std::string& what = "output.dir");

// Exports the model of a checkpoint (for `pipetransformer export`) written
// on any layout: a step directory, one part of a multi-rank step, or a
// checkpoint.dir (its newest step). The weights are checked against the
// checkpoint's config.json by loading them into a model of that shape first.
void export_checkpoint(const std::string& checkpoint, const std::string& out_dir);

}  // namespace pipet
