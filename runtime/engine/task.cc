#include "runtime/engine/task.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/strings.h"
#include "runtime/data/squad.h"
#include "runtime/engine/squad_task.h"

namespace pipet {

double EvalResult::metric(const std::string& name) const {
  if (name == "loss") return loss;
  const auto it = metrics.find(name);
  if (it != metrics.end()) return it->second;
  std::vector<std::string> known = {"loss"};
  for (const auto& [key, value] : metrics) known.push_back(key);
  throw ConfigError("metric '" + name + "' is not produced by this task; it reports: " +
                    join(known, ", "));
}

bool Task::higher_is_better(const std::string& metric) const { return metric != "loss"; }

namespace {

// Sums of loss and correct predictions: partial results add up exactly.
class ClassificationEvaluator final : public EvalAccumulator {
 public:
  void add(const torch::Tensor& logits, const torch::Tensor& labels,
           const torch::Tensor& /*sample_ids*/) override {
    const torch::Tensor flat = logits.detach().to(torch::kFloat);
    loss_sum_ += torch::nn::functional::cross_entropy(
                     flat, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                     .item<double>();
    correct_ += flat.argmax(-1).eq(labels).sum().item<int64_t>();
    samples_ += labels.size(0);
  }
  torch::Tensor pack() const override {
    return torch::tensor({loss_sum_, static_cast<double>(correct_), static_cast<double>(samples_)},
                         torch::kDouble);
  }
  void merge(const torch::Tensor& packed) override {
    if (packed.dim() != 1 || packed.numel() != 3)
      throw CommError("classification evaluation: a partial result has " +
                  std::to_string(packed.numel()) + " values, expected 3");
    const torch::Tensor values = packed.to(torch::kDouble).contiguous();
    const double* v = values.data_ptr<double>();
    loss_sum_ += v[0];
    correct_ += static_cast<int64_t>(v[1]);
    samples_ += static_cast<int64_t>(v[2]);
  }
  EvalResult result() const override {
    EvalResult result;
    result.samples = samples_;
    if (samples_ == 0) return result;
    result.loss = loss_sum_ / static_cast<double>(samples_);
    result.metrics["accuracy"] = static_cast<double>(correct_) / static_cast<double>(samples_);
    return result;
  }

 private:
  double loss_sum_ = 0.0;
  int64_t correct_ = 0;
  int64_t samples_ = 0;
};

}  // namespace

torch::Tensor ClassificationTask::loss(const torch::Tensor& logits, const torch::Tensor& labels) const {
  return torch::nn::functional::cross_entropy(logits, labels);
}

std::unique_ptr<EvalAccumulator> ClassificationTask::make_evaluator() const {
  return std::make_unique<ClassificationEvaluator>();
}

std::unique_ptr<Task> make_task(const TrainConfig& config,
                                std::shared_ptr<const Dataset> eval_data) {
  // Every dataset but squad is classification.
  if (config.data.dataset == "squad") {
    auto squad = std::dynamic_pointer_cast<const SquadDataset>(eval_data);
    if (eval_data && !squad)
      throw ConfigError("data.dataset 'squad': the evaluation set is '" + eval_data->name() +
                        "', not SQuAD windows");
    return std::make_unique<SquadTask>(std::move(squad), config.data.max_answer_len);
  }
  return std::make_unique<ClassificationTask>();
}

}  // namespace pipet
