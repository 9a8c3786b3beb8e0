#include "runtime/engine/squad_task.h"

#include "runtime/core/errors.h"
#include "runtime/core/tensor_names.h"
#include "runtime/data/squad.h"
#include "runtime/data/squad_metrics.h"

#include <cmath>
#include <limits>
#include <map>

namespace pipet {

namespace {

void check_span_inputs(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.dim() != 3 || logits.size(2) != 2)
    throw ModelError("the question-answering task needs start/end logits [batch, seq, 2] from "
                     "model.head 'question-answering', got " + shape_string(logits.sizes()));
  if (labels.dim() != 2 || labels.size(0) != logits.size(0) || labels.size(1) != 2)
    throw DataError("the question-answering task needs labels [batch, 2] (start, end) for logits " +
                    shape_string(logits.sizes()) + ", got " + shape_string(labels.sizes()));
}

// Per-row (CE(start) + CE(end)) / 2, [B].
torch::Tensor span_loss_rows(const torch::Tensor& logits, const torch::Tensor& labels) {
  namespace F = torch::nn::functional;
  const auto none = F::CrossEntropyFuncOptions().reduction(torch::kNone);
  const torch::Tensor start = F::cross_entropy(logits.select(2, 0), labels.select(1, 0), none);
  const torch::Tensor end = F::cross_entropy(logits.select(2, 1), labels.select(1, 1), none);
  return (start + end) / 2;
}

struct Candidate {
  double score = -std::numeric_limits<double>::infinity();  // -inf: no valid span
  int64_t window = -1;
  int64_t begin = 0;  // codepoints of the context
  int64_t end = 0;
};

// Higher score first; ties go to the lower window, then the earlier span.
bool better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.window != b.window) return a.window < b.window;
  return a.begin < b.begin;
}

constexpr int64_t kEntryValues = 5;  // example, score, window, begin, end

class SquadEvaluator final : public EvalAccumulator {
 public:
  SquadEvaluator(std::shared_ptr<const SquadDataset> data, int64_t max_answer_len)
      : data_(std::move(data)), max_answer_len_(max_answer_len) {}

  void add(const torch::Tensor& logits_in, const torch::Tensor& labels,
           const torch::Tensor& sample_ids) override {
    const torch::Tensor logits = logits_in.detach().to(torch::kFloat).cpu().contiguous();
    check_span_inputs(logits, labels);
    loss_sum_ += span_loss_rows(logits, labels.cpu()).sum().item<double>();
    windows_ += logits.size(0);
    const torch::Tensor ids = sample_ids.to(torch::kInt64).cpu().contiguous();
    const int64_t k = std::min<int64_t>(SquadTask::kNBest, logits.size(1));
    const torch::Tensor top_indices = std::get<1>(logits.topk(k, /*dim=*/1));  // [B,k,2]
    const auto indices = top_indices.accessor<int64_t, 3>();
    const auto raw = logits.accessor<float, 3>();
    for (int64_t row = 0; row < logits.size(0); ++row) {
      const int64_t window_index = ids.data_ptr<int64_t>()[row];
      if (window_index < 0 || window_index >= data_->size())
        throw DataError("evaluation sample " + std::to_string(window_index) +
                        " is not a window of the SQuAD evaluation set (" +
                        std::to_string(data_->size()) + " windows)");
      const SquadDataset::Window& w = data_->window(window_index);
      const int64_t first = w.context_offset();
      const int64_t last = first + w.doc_length - 1;
      Candidate best;
      best.window = window_index;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t start = indices[row][i][0];
        if (start < first || start > last) continue;
        const auto doc_start = static_cast<int32_t>(w.doc_start + start - first);
        if (!data_->is_max_context(window_index, doc_start)) continue;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t end = indices[row][j][1];
          if (end < start || end > last || end - start + 1 > max_answer_len_) continue;
          Candidate c;
          c.score = static_cast<double>(raw[row][start][0]) + static_cast<double>(raw[row][end][1]);
          c.window = window_index;
          const auto doc_end = static_cast<int32_t>(w.doc_start + end - first);
          c.begin = data_->token_chars(w.example, doc_start).first;
          c.end = data_->token_chars(w.example, doc_end).second;
          if (better(c, best)) best = c;
        }
      }
      offer(w.example, best);
    }
  }

  torch::Tensor pack() const override {
    std::vector<double> out = {loss_sum_, static_cast<double>(windows_),
                               static_cast<double>(best_.size())};
    for (const auto& [example, c] : best_) {
      out.insert(out.end(), {static_cast<double>(example), c.score, static_cast<double>(c.window),
                             static_cast<double>(c.begin), static_cast<double>(c.end)});
    }
    return torch::tensor(out, torch::kDouble);
  }

  void merge(const torch::Tensor& packed) override {
    const torch::Tensor values = packed.to(torch::kDouble).contiguous().cpu();
    const int64_t n = values.numel();
    const double* v = values.data_ptr<double>();
    if (packed.dim() != 1 || n < 3 || n != 3 + kEntryValues * static_cast<int64_t>(v[2]))
      throw CommError("question-answering evaluation: a partial result has " + std::to_string(n) +
                      " values, which is not 3 + 5 per example");
    loss_sum_ += v[0];
    windows_ += static_cast<int64_t>(v[1]);
    for (int64_t i = 3; i < n; i += kEntryValues) {
      const auto example = static_cast<int64_t>(v[i]);
      if (example < 0 || example >= data_->num_examples())
        throw CommError("question-answering evaluation: a partial result names example " +
                        std::to_string(example) + " of " + std::to_string(data_->num_examples()));
      Candidate c;
      c.score = v[i + 1];
      c.window = static_cast<int64_t>(v[i + 2]);
      c.begin = static_cast<int64_t>(v[i + 3]);
      c.end = static_cast<int64_t>(v[i + 4]);
      offer(example, c);
    }
  }

  EvalResult result() const override {
    EvalResult result;
    result.samples = static_cast<int64_t>(best_.size());
    if (windows_ == 0) return result;
    result.loss = loss_sum_ / static_cast<double>(windows_);
    double exact = 0.0, f1 = 0.0;
    for (const auto& [example, c] : best_) {
      const std::string prediction =
          std::isfinite(c.score)
              ? data_->context_text(example, static_cast<int32_t>(c.begin), static_cast<int32_t>(c.end))
              : std::string();
      const auto& golds = data_->example(example).answers;
      exact += squad_max_exact_match(prediction, golds);
      f1 += squad_max_f1(prediction, golds);
    }
    const auto count = static_cast<double>(best_.size());
    result.metrics["exact_match"] = count > 0 ? 100.0 * exact / count : 0.0;
    result.metrics["f1"] = count > 0 ? 100.0 * f1 / count : 0.0;
    return result;
  }

 private:
  void offer(int64_t example, const Candidate& c) {
    const auto it = best_.find(example);
    if (it == best_.end()) {
      best_.emplace(example, c);
    } else if (better(c, it->second)) {
      it->second = c;
    }
  }

  std::shared_ptr<const SquadDataset> data_;
  int64_t max_answer_len_;
  double loss_sum_ = 0.0;
  int64_t windows_ = 0;
  std::map<int64_t, Candidate> best_;  // by example index
};

}  // namespace

SquadTask::SquadTask(std::shared_ptr<const SquadDataset> eval_data, int64_t max_answer_len)
    : eval_data_(std::move(eval_data)), max_answer_len_(max_answer_len) {
  if (max_answer_len_ < 1)
    throw ConfigError("data.max_answer_len must be >= 1, got " + std::to_string(max_answer_len_));
}

torch::Tensor SquadTask::loss(const torch::Tensor& logits, const torch::Tensor& labels) const {
  check_span_inputs(logits, labels);
  return span_loss_rows(logits, labels).mean();
}

std::unique_ptr<EvalAccumulator> SquadTask::make_evaluator() const {
  if (!eval_data_)
    throw ConfigError("question-answering evaluation needs a SQuAD evaluation set: give "
                      "dev-v1.1.json in data.dir, data.eval_path or data.eval_split");
  return std::make_unique<SquadEvaluator>(eval_data_, max_answer_len_);
}

}  // namespace pipet
