// Optimizers over named parameters whose state is a set of named tensors, so
// it can be checkpointed as safetensors and moved between ranks as is.
// Semantics follow torch.optim (AdamW decoupled weight decay, SGD momentum
// with dampening 0); parameters with fewer than 2 dimensions (biases,
// LayerNorm) get no weight decay, the Hugging Face Trainer convention.
#pragma once

#include "runtime/core/tensor_names.h"
#include "runtime/core/torch_pch.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

struct TrainLoopConfig;

class Optimizer {
 public:
  explicit Optimizer(NamedTensors parameters);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual std::string name() const = 0;
  // One update with learning rate `lr`; parameters without a gradient are
  // skipped (their state does not advance).
  virtual void step(double lr) = 0;
  // Releases every gradient (torch's zero_grad(set_to_none=True)): the next
  // backward writes fresh gradients instead of adding into zeroed ones, which
  // saves a pass that zeroes them and a read-modify-write that accumulates.
  // A parameter that backward then does not reach has no gradient and its
  // state does not advance in that step.
  void zero_grad();

  // State tensors named "<parameter>/<slot>", e.g. "classifier.weight/exp_avg".
  virtual NamedTensors state() const = 0;
  // Restores state() output. Throws ModelError naming the slot for missing,
  // unexpected or mis-shaped entries; `source` names the file.
  virtual void load_state(const std::map<std::string, torch::Tensor>& state,
                          const std::string& source) = 0;

  const NamedTensors& parameters() const { return parameters_; }
  // The "<parameter>/<slot>" entries of this optimizer's parameters that
  // `find` returns (an undefined tensor: absent): what load_state takes
  // from a larger store (a moved state, a checkpoint's parts).
  std::map<std::string, torch::Tensor> slots_from(
      const std::function<torch::Tensor(const std::string&)>& find) const;
  // The slots state() may hold per parameter ("exp_avg", ...). A slot named
  // "step" is an int64 scalar; the others have the parameter's shape.
  virtual std::vector<std::string> slot_names() const = 0;

 protected:
  static bool decays(const torch::Tensor& parameter) { return parameter.dim() >= 2; }
  NamedTensors parameters_;
};

class AdamW final : public Optimizer {
 public:
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq", "step"}; }
  AdamW(NamedTensors parameters, double beta1, double beta2, double eps, double weight_decay);
  std::string name() const override { return "adamw"; }
  void step(double lr) override;
  NamedTensors state() const override;
  void load_state(const std::map<std::string, torch::Tensor>& state,
                  const std::string& source) override;

 private:
  // CUDA parameters on LibTorch 2.x: the fused multi-tensor kernel, one
  // launch per weight-decay group instead of about ten per parameter.
  void fused_step(double lr);

  double beta1_, beta2_, eps_, weight_decay_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;  // per parameter, as torch.optim keeps it
  // The fused kernel reads the step count from a float tensor on the
  // parameter's device; built from steps_ on first use and after load_state.
  std::vector<torch::Tensor> device_steps_;
};

class SgdMomentum final : public Optimizer {
 public:
  // Without momentum there is no state. A missing buffer behaves as zeros
  // (the first step sets it to the gradient either way: dampening is 0).
  std::vector<std::string> slot_names() const override {
    return momentum_ != 0.0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{};
  }
  SgdMomentum(NamedTensors parameters, double momentum, bool nesterov, double weight_decay);
  std::string name() const override { return "sgd"; }
  void step(double lr) override;
  NamedTensors state() const override;
  void load_state(const std::map<std::string, torch::Tensor>& state,
                  const std::string& source) override;

 private:
  double momentum_, weight_decay_;
  bool nesterov_;
  std::vector<torch::Tensor> momentum_buffer_;  // undefined until the first step
};

std::unique_ptr<Optimizer> make_optimizer(const TrainLoopConfig& config, NamedTensors parameters);

// Global gradient-norm clipping in two halves, so that reading the norm can
// share the step's one copy to the host with the loss:
// squared_gradient_norms gives each gradient's squared L2 norm as a double
// tensor on the gradients' device (norms in the gradients' precision from the
// multi-tensor kernel, a few launches for the whole model on a GPU, squared
// in double);
// clip_gradients scales the gradients by max_norm / (norm + 1e-6) when
// max_norm > 0 and the global `norm` exceeds it, and leaves them untouched
// otherwise (also for a non-finite norm: the caller decides what that means).
torch::Tensor squared_gradient_norms(const std::vector<torch::Tensor>& grads);
void clip_gradients(const std::vector<torch::Tensor>& grads, double norm, double max_norm);

}  // namespace pipet
