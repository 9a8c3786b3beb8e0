// Extractive question answering (SQuAD v1.1) on BertForQuestionAnswering's
// start/end logits [B,S,2].
//
// Loss: (cross-entropy of the start position + of the end position) / 2 over
// the sequence (padding positions carry the head's -10000 logit, so they take
// no probability mass); labels are int64 [B,2] token positions.
//
// Evaluation, per window: the 20 best start and 20 best end logits form the
// candidate spans; a span must lie in the window's context part, have
// start <= end and at most data.max_answer_len tokens, and start where its
// token has its most context (Hugging Face's run_squad rule); its score is
// start_logit + end_logit. An example's prediction is its best span over all
// its windows, read from the context through the tokenizer's character
// offsets, and scored with the official exact-match and F1 (max over the
// gold answers). Metrics are percentages, as the official script prints
// them: eval_exact_match, eval_f1. Partial results carry each example's best
// candidate with its score as a double, so replicas that evaluated different
// windows merge exactly (the higher score wins; ties go to the lower window).
#pragma once

#include "runtime/engine/task.h"

#include <memory>

namespace pipet {

class SquadDataset;

class SquadTask final : public Task {
 public:
  // `eval_data` may be null (no evaluation set); make_evaluator then throws.
  SquadTask(std::shared_ptr<const SquadDataset> eval_data, int64_t max_answer_len);

  std::string name() const override { return "question-answering"; }
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) const override;
  std::unique_ptr<EvalAccumulator> make_evaluator() const override;
  std::vector<std::string> metric_names() const override { return {"loss", "exact_match", "f1"}; }

  static constexpr int64_t kNBest = 20;

 private:
  std::shared_ptr<const SquadDataset> eval_data_;
  int64_t max_answer_len_;
};

}  // namespace pipet
