// A task says what the head's output means: the loss to train on and the
// metrics to evaluate. Classification (ViT, BERT sequence classification)
// and span prediction (SQuAD) are tasks; the trainer and the pipeline's last
// stage only talk to this interface.
#pragma once

#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

struct TrainConfig;
class Dataset;

struct EvalResult {
  int64_t samples = 0;  // evaluated samples (SQuAD: examples, not windows)
  double loss = 0.0;    // mean loss per evaluated batch row
  // Metrics by their logged name without the "eval_" prefix: "accuracy";
  // "exact_match" and "f1" for SQuAD.
  std::map<std::string, double> metrics;

  // The metric `name` ("loss" or a key of `metrics`); throws ConfigError
  // listing the available names when it is missing.
  double metric(const std::string& name) const;
};

// Collects evaluation results batch by batch. Replicas each evaluate a shard
// and exchange pack()ed partial results, so the final figures cover the whole
// evaluation set, not one rank's shard.
class EvalAccumulator {
 public:
  virtual ~EvalAccumulator() = default;
  // One evaluated batch: the head output, the batch's labels and sample_ids.
  virtual void add(const torch::Tensor& logits, const torch::Tensor& labels,
                   const torch::Tensor& sample_ids) = 0;
  // Everything add() collected, as a 1-D float64 CPU tensor (any length).
  virtual torch::Tensor pack() const = 0;
  // Folds another accumulator's pack() into this one. Merging is
  // order-independent for the figures result() reports.
  virtual void merge(const torch::Tensor& packed) = 0;
  virtual EvalResult result() const = 0;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  // Mean loss over the rows of `logits` (what backward runs on).
  virtual torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) const = 0;
  virtual std::unique_ptr<EvalAccumulator> make_evaluator() const = 0;
  // Names early stopping may watch ("loss", "accuracy", ...), and whether
  // higher is better for each.
  virtual std::vector<std::string> metric_names() const = 0;
  virtual bool higher_is_better(const std::string& metric) const;
};

// Multi-class classification: cross-entropy; accuracy.
class ClassificationTask final : public Task {
 public:
  std::string name() const override { return "classification"; }
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) const override;
  std::unique_ptr<EvalAccumulator> make_evaluator() const override;
  std::vector<std::string> metric_names() const override { return {"loss", "accuracy"}; }
};

// The task of the configured dataset. `eval_data` may be null.
std::unique_ptr<Task> make_task(const TrainConfig& config,
                                std::shared_ptr<const Dataset> eval_data);

}  // namespace pipet
