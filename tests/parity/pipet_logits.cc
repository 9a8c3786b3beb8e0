// pipet_logits: the engine's side of the parity checks with other
// implementations (tests/parity/hf_parity.py). It computes the logits of a
// model in eval mode, fp32, for inputs read from a safetensors file.
//
//   pipet_logits --model DIR --inputs IN --out OUT [--device cpu|cuda]
//       loads DIR/config.json + DIR/model.safetensors (Hugging Face format)
//       through the same code as `train --init-from`.
//   pipet_logits --new-model CONFIG --seed N --export DIR --inputs IN --out OUT
//       builds a fresh model from a Hugging Face config.json, exports it with
//       the engine's exporter, then computes its logits.
//   pipet_logits --build-info
//       one JSON line: whether this build and this machine can use CUDA.
//
// IN holds pixel_values (ViT) or input_ids with optional attention_mask and
// token_type_ids (BERT); OUT gets "logits". A JSON summary goes to stdout.
#include "pipet/build_config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/safetensors_torch.h"
#include "runtime/engine/export.h"
#include "runtime/model/model.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <iostream>
#include <map>
#include <set>
#include <string>

namespace pipet {
namespace {

struct Options {
  std::string model_dir;
  std::string new_model_config;
  std::string export_dir;
  uint64_t seed = 0;
  bool spread = false;
  std::string inputs;
  std::string out;
  std::string device = "cpu";
  std::string log_level = "warn";
  bool build_info = false;
};

nlohmann::json build_info() {
  const bool built = PIPET_WITH_CUDA != 0;
  return {{"cuda_built", built},
          {"cuda_devices", built ? static_cast<int64_t>(torch::cuda::device_count()) : 0},
          {"torch", PIPET_TORCH_VERSION}};
}

// The device to run on. Parity is an fp32 comparison, so TF32 (on by default
// for cuDNN convolutions) is switched off, as the Python side does too.
torch::Device select_device(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name != "cuda") {
    throw ConfigError("--device: '" + name + "' is not a device; expected cpu or cuda");
  }
  if (PIPET_WITH_CUDA == 0) {
    throw ConfigError("--device cuda: this build has no CUDA path (configure with "
                      "-DPIPET_WITH_CUDA=ON against a CUDA LibTorch)");
  }
  if (!torch::cuda::is_available()) {
    throw ConfigError("--device cuda: no CUDA device is visible to this process (LibTorch " +
                      std::string(PIPET_TORCH_VERSION) + " sees " +
                      std::to_string(torch::cuda::device_count()) + " devices)");
  }
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  return torch::Device(torch::kCUDA, 0);
}

ModelSpec read_spec(const std::string& config_path) {
  const auto text = read_file(config_path, "Hugging Face config.json");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw FormatError(config_path + ": not valid JSON: " + e.what());
  }
  return spec_from_hf_config(config, config_path);
}

// Moves every tensor well away from Hugging Face's tiny initialisation, so
// each one changes the logits by far more than the comparison's tolerance.
void spread_parameters(TransformerModel& model) {
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : model.hf_parameters()) {
    const bool norm_weight =
        (name.find("LayerNorm.") != std::string::npos || name.find("layernorm") != std::string::npos) &&
        name.size() >= 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    if (norm_weight) {
      tensor.copy_(1.0 + 0.2 * torch::randn_like(tensor));
    } else {
      tensor.copy_(0.2 * torch::randn_like(tensor));
    }
  }
}

// `tensor` converted to `type`, which must be of the same kind (floating or
// integral); `what` names it for the error.
torch::Tensor convert_input(const torch::Tensor& tensor, torch::ScalarType type,
                            const std::string& what) {
  const bool want_float = c10::isFloatingType(type);
  const bool ok = want_float ? tensor.is_floating_point()
                             : (c10::isIntegralType(tensor.scalar_type(), /*includeBool=*/false));
  if (!ok) {
    throw ModelError(what + " is " + c10::toString(tensor.scalar_type()) + "; expected " +
                     (want_float ? "a floating-point" : "an integer") + " tensor");
  }
  return tensor.to(type);
}

Activations read_inputs(const std::string& path, const ModelSpec& spec, const torch::Device& device) {
  auto tensors = load_safetensors(path);
  const bool vit = spec.family == ModelFamily::kVit;
  const std::set<std::string> accepted =
      vit ? std::set<std::string>{"pixel_values"}
          : std::set<std::string>{"input_ids", "attention_mask", "token_type_ids"};
  for (const auto& [name, tensor] : tensors) {
    if (accepted.count(name) == 0) {
      throw ModelError(path + ": unexpected tensor '" + name + "'; a " + (vit ? "ViT" : "BERT") +
                       " model takes " +
                       (vit ? "pixel_values" : "input_ids, attention_mask, token_type_ids"));
    }
  }
  const auto take = [&](const std::string& name) -> torch::Tensor {
    const auto found = tensors.find(name);
    return found == tensors.end() ? torch::Tensor() : found->second;
  };
  Activations in;
  if (vit) {
    const auto pixels = take("pixel_values");
    if (!pixels.defined()) throw ModelError(path + ": no 'pixel_values' tensor (a ViT input)");
    in.hidden = convert_input(pixels, torch::kFloat, path + ": pixel_values").to(device);
    return in;
  }
  const auto ids = take("input_ids");
  if (!ids.defined()) throw ModelError(path + ": no 'input_ids' tensor (a BERT input)");
  in.hidden = convert_input(ids, torch::kLong, path + ": input_ids");
  // Hugging Face's defaults when absent: every position a token, segment 0.
  const auto mask = take("attention_mask");
  in.attention_mask = mask.defined() ? convert_input(mask, torch::kLong, path + ": attention_mask")
                                     : torch::ones_like(in.hidden);
  const auto types = take("token_type_ids");
  in.token_type_ids = types.defined()
                          ? convert_input(types, torch::kLong, path + ": token_type_ids")
                          : torch::zeros_like(in.hidden);
  in.hidden = in.hidden.to(device);
  in.attention_mask = in.attention_mask.to(device);
  in.token_type_ids = in.token_type_ids.to(device);
  return in;
}

int run(const Options& o) {
  if (o.build_info) {
    std::cout << build_info().dump() << std::endl;
    return 0;
  }
  if (o.model_dir.empty() == o.new_model_config.empty()) {
    throw ConfigError("give exactly one of --model DIR (load) or --new-model CONFIG (build and export)");
  }
  if (!o.new_model_config.empty() && o.export_dir.empty()) {
    throw ConfigError("--new-model needs --export DIR (where the engine's export goes)");
  }
  if (o.inputs.empty() || o.out.empty()) throw ConfigError("--inputs and --out are required");
  const auto device = select_device(o.device);

  std::unique_ptr<TransformerModel> model;
  std::string source;
  if (!o.model_dir.empty()) {
    const auto weights = o.model_dir + "/model.safetensors";
    if (!path_exists(weights)) {
      const bool sharded = path_exists(o.model_dir + "/model.safetensors.index.json");
      throw IoError(weights + " does not exist" +
                    (sharded ? " (the checkpoint is sharded; this tool reads one file)" : ""));
    }
    model = std::make_unique<TransformerModel>(read_spec(o.model_dir + "/config.json"));
    init_from_pretrained(*model, weights);
    source = o.model_dir;
  } else {
    torch::manual_seed(o.seed);
    model = std::make_unique<TransformerModel>(read_spec(o.new_model_config));
    if (o.spread) spread_parameters(*model);
    export_hf_model(*model, o.export_dir, "--export");
    source = o.export_dir;
  }

  const auto inputs = read_inputs(o.inputs, model->spec(), device);
  model->to(device);
  model->eval();
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = model->forward(inputs).to(torch::kCPU).contiguous();
  }
  save_safetensors(o.out, {{"logits", logits}}, {{"device", o.device}, {"source", source}});

  nlohmann::json summary = {{"model", source},
                            {"device", o.device},
                            {"logits_shape", logits.sizes().vec()},
                            {"max_abs_logit", logits.abs().max().item<double>()},
                            {"out", o.out}};
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace pipet

int main(int argc, char** argv) {
  pipet::Options options;
  CLI::App app{"pipet_logits: logits of a Hugging Face-format model as the engine computes them"};
  app.add_option("--model", options.model_dir, "Directory with config.json and model.safetensors");
  app.add_option("--new-model", options.new_model_config,
                 "config.json of a fresh model to build (seeded) and export");
  app.add_option("--export", options.export_dir, "With --new-model: directory to export it to");
  app.add_option("--seed", options.seed, "With --new-model: seed of the initial weights")
      ->capture_default_str();
  app.add_flag("--spread", options.spread,
               "With --new-model: widen the initial weights so every tensor moves the logits");
  app.add_option("--inputs", options.inputs, "safetensors with the model inputs");
  app.add_option("--out", options.out, "safetensors to write {logits} to");
  app.add_option("--device", options.device, "cpu or cuda")->capture_default_str();
  app.add_option("--log-level", options.log_level, "debug, info, warn or error")
      ->capture_default_str();
  app.add_flag("--build-info", options.build_info, "Print whether CUDA can be used, then exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(pipet::ExitCode::kConfig);
  }
  pipet::init_logging(0, options.log_level);
  try {
    return pipet::run(options);
  } catch (const pipet::Error& e) {
    std::cerr << "pipet_logits: " << e.what() << std::endl;
    return static_cast<int>(e.exit_code());
  } catch (const c10::Error& e) {
    std::cerr << "pipet_logits: internal error (LibTorch): " << e.what_without_backtrace() << std::endl;
    return static_cast<int>(pipet::ExitCode::kInternal);
  } catch (const std::exception& e) {
    std::cerr << "pipet_logits: internal error: " << e.what() << std::endl;
    return static_cast<int>(pipet::ExitCode::kInternal);
  }
}
