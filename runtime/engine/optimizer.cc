#include "runtime/engine/optimizer.h"

#include "runtime/core/torch_compat.h"

#include <algorithm>
#include <cmath>

#include "runtime/core/config.h"
#include "runtime/core/errors.h"

namespace pipet {
namespace {

// Looks up "<param>/<slot>" and checks its shape; records it as consumed.
torch::Tensor take_slot(const std::map<std::string, torch::Tensor>& state, const std::string& key,
                        const torch::Tensor& like, const std::string& source,
                        std::vector<std::string>* consumed) {
  auto it = state.find(key);
  if (it == state.end()) {
    throw ModelError(source + ": optimizer state '" + key + "' is missing");
  }
  if (like.defined() && !it->second.sizes().equals(like.sizes())) {
    throw ModelError(source + ": optimizer state '" + key + "' has shape " +
                     shape_string(it->second.sizes()) + ", the parameter has " + shape_string(like.sizes()));
  }
  consumed->push_back(key);
  return it->second;
}

void reject_leftovers(const std::map<std::string, torch::Tensor>& state,
                      std::vector<std::string> consumed, const std::string& source,
                      const std::string& optimizer) {
  std::sort(consumed.begin(), consumed.end());
  std::vector<std::string> unexpected;
  for (const auto& [key, tensor] : state) {
    if (!std::binary_search(consumed.begin(), consumed.end(), key)) unexpected.push_back(key);
  }
  if (!unexpected.empty()) {
    std::string list;
    for (size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", " : "") + unexpected[i];
    if (unexpected.size() > 5) list += ", ... (" + std::to_string(unexpected.size()) + " in all)";
    throw ModelError(source + ": optimizer state has entries that no " + optimizer +
                     " parameter owns: " + list);
  }
}

torch::Tensor scalar_i64(int64_t v) { return torch::tensor({v}, torch::kInt64).reshape({}); }

}  // namespace

Optimizer::Optimizer(NamedTensors parameters) : parameters_(std::move(parameters)) {}

std::map<std::string, torch::Tensor> Optimizer::slots_from(
    const std::function<torch::Tensor(const std::string&)>& find) const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, parameter] : parameters_)
    for (const std::string& slot : slot_names()) {
      torch::Tensor stored = find(name + "/" + slot);
      if (stored.defined()) out.emplace(name + "/" + slot, std::move(stored));
    }
  return out;
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : parameters_) p.mutable_grad() = torch::Tensor();
}

AdamW::AdamW(NamedTensors parameters, double beta1, double beta2, double eps, double weight_decay)
    : Optimizer(std::move(parameters)), beta1_(beta1), beta2_(beta2), eps_(eps),
      weight_decay_(weight_decay) {
  for (auto& [name, p] : parameters_) {
    exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    steps_.push_back(0);
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
#if PIPET_TORCH_HAS_FUSED_ADAMW
  if (!parameters_.empty() && parameters_.front().second.is_cuda()) {
    fused_step(lr);
    return;
  }
#endif
  for (size_t i = 0; i < parameters_.size(); ++i) {
    torch::Tensor& p = parameters_[i].second;
    const torch::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    int64_t t = ++steps_[i];
    if (weight_decay_ != 0.0 && decays(p)) p.mul_(1.0 - lr * weight_decay_);
    exp_avg_[i].mul_(beta1_).add_(grad, 1.0 - beta1_);
    exp_avg_sq_[i].mul_(beta2_).addcmul_(grad, grad, 1.0 - beta2_);
    const double bias_correction1 = 1.0 - std::pow(beta1_, static_cast<double>(t));
    const double bias_correction2 = 1.0 - std::pow(beta2_, static_cast<double>(t));
    const double step_size = lr / bias_correction1;
    torch::Tensor denom = (exp_avg_sq_[i].sqrt() / std::sqrt(bias_correction2)).add_(eps_);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::fused_step(double lr) {
#if PIPET_TORCH_HAS_FUSED_ADAMW
  if (device_steps_.size() != parameters_.size()) {
    device_steps_.clear();
    for (size_t i = 0; i < parameters_.size(); ++i)
      device_steps_.push_back(torch::full({}, static_cast<double>(steps_[i]),
                                          parameters_[i].second.options().dtype(torch::kFloat)));
  }
  // Two groups: weight decay applies to matrices only (see decays()).
  struct Group {
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  } groups[2];
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const torch::Tensor& p = parameters_[i].second;
    if (!p.grad().defined()) continue;  // its state does not advance
    ++steps_[i];
    Group& g = groups[decays(p) ? 1 : 0];
    g.params.push_back(p);
    g.grads.push_back(p.grad());
    g.exp_avgs.push_back(exp_avg_[i]);
    g.exp_avg_sqs.push_back(exp_avg_sq_[i]);
    g.steps.push_back(device_steps_[i]);
  }
  for (int decay = 0; decay < 2; ++decay) {
    Group& g = groups[decay];
    if (g.params.empty()) continue;
    at::_foreach_add_(g.steps, 1.0);
    at::_fused_adamw_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, /*max_exp_avg_sqs=*/{}, g.steps, lr,
                      beta1_, beta2_, decay ? weight_decay_ : 0.0, eps_, /*amsgrad=*/false,
                      /*maximize=*/false);
  }
#else
  (void)lr;
  throw ModelError("the fused AdamW kernel needs LibTorch 2.0 or newer");
#endif
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].first;
    out.emplace_back(name + "/exp_avg", exp_avg_[i]);
    out.emplace_back(name + "/exp_avg_sq", exp_avg_sq_[i]);
    out.emplace_back(name + "/step", scalar_i64(steps_[i]));
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& state, const std::string& source) {
  std::vector<std::string> consumed;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const auto& [name, p] = parameters_[i];
    exp_avg_[i].copy_(take_slot(state, name + "/exp_avg", p, source, &consumed));
    exp_avg_sq_[i].copy_(take_slot(state, name + "/exp_avg_sq", p, source, &consumed));
    torch::Tensor step = take_slot(state, name + "/step", torch::Tensor(), source, &consumed);
    if (step.numel() != 1) throw ModelError(source + ": optimizer state '" + name + "/step' is not a scalar");
    steps_[i] = step.to(torch::kInt64).item<int64_t>();
  }
  device_steps_.clear();  // rebuilt from steps_ by the next fused step
  reject_leftovers(state, std::move(consumed), source, name());
}

SgdMomentum::SgdMomentum(NamedTensors parameters, double momentum, bool nesterov, double weight_decay)
    : Optimizer(std::move(parameters)), momentum_(momentum), weight_decay_(weight_decay),
      nesterov_(nesterov), momentum_buffer_(parameters_.size()) {}

void SgdMomentum::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    torch::Tensor& p = parameters_[i].second;
    torch::Tensor grad = p.grad();
    if (!grad.defined()) continue;
    if (weight_decay_ != 0.0 && decays(p)) grad = grad.add(p, weight_decay_);
    if (momentum_ != 0.0) {
      torch::Tensor& buf = momentum_buffer_[i];
      if (!buf.defined()) {
        buf = grad.clone().detach();
      } else {
        buf.mul_(momentum_).add_(grad);
      }
      grad = nesterov_ ? grad.add(buf, momentum_) : buf;
    }
    p.add_(grad, -lr);
  }
}

NamedTensors SgdMomentum::state() const {
  NamedTensors out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (momentum_buffer_[i].defined()) {
      out.emplace_back(parameters_[i].first + "/momentum_buffer", momentum_buffer_[i]);
    }
  }
  return out;
}

void SgdMomentum::load_state(const std::map<std::string, torch::Tensor>& state,
                             const std::string& source) {
  std::vector<std::string> consumed;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const auto& [name, p] = parameters_[i];
    const std::string key = name + "/momentum_buffer";
    // A buffer exists only once its parameter has been stepped.
    if (state.count(key)) {
      momentum_buffer_[i] = take_slot(state, key, p, source, &consumed).to(p.options()).clone();
    } else {
      momentum_buffer_[i] = torch::Tensor();
    }
  }
  reject_leftovers(state, std::move(consumed), source, name());
}

std::unique_ptr<Optimizer> make_optimizer(const TrainLoopConfig& config, NamedTensors parameters) {
  if (config.optimizer == "adamw") {
    return std::make_unique<AdamW>(std::move(parameters), config.adam_beta1, config.adam_beta2,
                                   config.adam_eps, config.weight_decay);
  }
  if (config.optimizer == "sgd") {
    return std::make_unique<SgdMomentum>(std::move(parameters), config.momentum, config.nesterov,
                                         config.weight_decay);
  }
  throw ConfigError("train.optimizer: unknown optimizer '" + config.optimizer +
                    "'; expected adamw or sgd");
}

torch::Tensor squared_gradient_norms(const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  if (grads.empty()) return torch::zeros({0}, torch::kDouble);
  // Not a double copy of every gradient: on the CPU that costs more than the
  // rest of the clip (4 ms a step for bert-tiny's embedding).
  return torch::stack(at::_foreach_norm(grads, 2)).to(torch::kDouble).pow(2);
}

void clip_gradients(const std::vector<torch::Tensor>& grads, double norm, double max_norm) {
  if (grads.empty() || !(max_norm > 0.0) || !std::isfinite(norm) || norm <= max_norm) return;
  torch::NoGradGuard no_grad;
  at::_foreach_mul_(grads, max_norm / (norm + 1e-6));
}

}  // namespace pipet
