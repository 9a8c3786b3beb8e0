// SQuAD metrics (official definitions), the span loss, best-span selection
// over windows, and exact merging of partial evaluations.
#include "runtime/engine/squad_task.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/squad.h"
#include "runtime/data/squad_metrics.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

TEST(SquadMetrics, OfficialNormalisationExactMatchAndF1) {
  EXPECT_EQ(normalize_squad_answer("The  Cat's, HAT!"), "cats hat");
  EXPECT_EQ(normalize_squad_answer("an apple and a pear, the end"), "apple and pear end");
  EXPECT_EQ(normalize_squad_answer("theory anthem"), "theory anthem");  // not whole words
  EXPECT_EQ(normalize_squad_answer("  Élan\tvital "), "élan vital");     // accents kept
  EXPECT_EQ(squad_exact_match("the Eiffel Tower", "Eiffel tower."), 1.0);
  EXPECT_EQ(squad_exact_match("Eiffel", "Eiffel Tower"), 0.0);
  // pred {eiffel}, gold {eiffel, tower}: P = 1, R = 1/2, F1 = 2/3.
  EXPECT_NEAR(squad_f1("Eiffel", "the Eiffel Tower"), 2.0 / 3.0, 1e-12);
  // Repeated tokens count once per occurrence: pred {x b b}, gold {b c}: same 1, P 1/3, R 1/2.
  EXPECT_NEAR(squad_f1("x b b", "b c"), 0.4, 1e-12);
  EXPECT_EQ(squad_f1("", ""), 0.0);  // v1.1 script: no common token, 0
  EXPECT_EQ(squad_max_f1("paris", {"london", "Paris!"}), 1.0);
  EXPECT_EQ(squad_max_exact_match("paris", {}), 0.0);
}

// Context tokens: paris0 is1 the2 capital3 of4 france5 .6 paris7 is8 a9
// beautiful10 city11 .12; windows of 5 tokens at 0, 3, 6, 9 (query 4 tokens),
// so context positions are 6..10 of a 12-token sequence.
std::shared_ptr<SquadDataset> dataset() {
  const WordPieceTokenizer tok({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "what", "is", "the",
                               "capital", "of", "france", "paris", "city", "?", "a", ".",
                               "beautiful"},
                              true, "test vocab");
  SquadParagraph p;
  p.context = "Paris is the capital of France. Paris is a beautiful city.";
  p.questions.push_back({"q1", "What is the capital of France?", {{"France", 24}, {"France.", 24}}});
  p.questions.push_back({"q2", "is it beautiful?", {{"a beautiful city", 41}}});
  SquadWindowSpec spec;
  spec.seq_len = 12;
  spec.max_query_len = 4;
  spec.doc_stride = 3;
  return std::make_shared<SquadDataset>(std::vector<SquadParagraph>{p}, tok, spec, "eval", "test");
}

// Logits [8 windows, 12, 2] that favour chosen spans.
torch::Tensor logits_for_windows() {
  torch::Tensor logits = torch::zeros({8, 12, 2});
  // Example 0 (windows 0..3). Window 1 holds "France" (token 5) at position 8.
  logits[1][8][0] = 5.0;
  logits[1][8][1] = 5.0;
  // A higher score on the question part of window 0 is not an answer.
  logits[0][2][0] = 20.0;
  logits[0][2][1] = 20.0;
  // A high-scoring span with end before start is rejected.
  logits[2][9][0] = 9.0;
  logits[2][7][1] = 9.0;
  // Example 1 (windows 4..7): "beautiful city" in window 7 = tokens 10..11
  // at positions 7..8. Token 10 has its most context in window 7
  // (min(1, 2) = 1 against min(4, 0) = 0 in window 6).
  logits[7][7][0] = 4.0;
  logits[7][8][1] = 4.0;
  // Window 6: token 9 ("a", position 9) with a lower score.
  logits[6][9][0] = 3.0;
  logits[6][10][1] = 3.0;
  return logits;
}

TEST(SquadTask, PicksTheBestValidSpanAndScoresIt) {
  auto data = dataset();
  SquadTask task(data, /*max_answer_len=*/30);
  const torch::Tensor logits = logits_for_windows();
  std::vector<int64_t> all(8);
  for (int64_t i = 0; i < 8; ++i) all[static_cast<size_t>(i)] = i;
  const torch::Tensor labels = data->labels(all);
  auto evaluator = task.make_evaluator();
  evaluator->add(logits, labels, torch::tensor(all, torch::kInt64));
  const EvalResult result = evaluator->result();
  EXPECT_EQ(result.samples, 2);
  // q1 predicts "France" (exact); q2 predicts "beautiful city" against
  // "a beautiful city": normalised equal ("a" is an article).
  EXPECT_DOUBLE_EQ(result.metrics.at("exact_match"), 100.0);
  EXPECT_DOUBLE_EQ(result.metrics.at("f1"), 100.0);
  EXPECT_NEAR(result.loss, task.loss(logits, labels).item<double>(), 1e-5);

  // max_answer_len 1 forbids the two-token span; q2 falls back to the
  // one-token spans, the best being "beautiful" (window 7: 4 + 0 beats 3 + 0).
  SquadTask short_task(data, 1);
  auto short_eval = short_task.make_evaluator();
  short_eval->add(logits, labels, torch::tensor(all, torch::kInt64));
  const EvalResult short_result = short_eval->result();
  EXPECT_DOUBLE_EQ(short_result.metrics.at("exact_match"), 50.0);
  // q2: pred {beautiful}, gold {beautiful, city}: F1 2/3.
  EXPECT_NEAR(short_result.metrics.at("f1"), 100.0 * (1.0 + 2.0 / 3.0) / 2.0, 1e-9);
}

TEST(SquadTask, LossMergeAndErrors) {
  auto data = dataset();
  SquadTask task(data, 30);
  // Loss = (CE(start) + CE(end)) / 2, computed by hand for one row.
  torch::Tensor logits = torch::zeros({1, 4, 2});
  logits[0][1][0] = 2.0;
  logits[0][3][1] = 1.0;
  const torch::Tensor labels = torch::tensor({{1, 2}}, torch::kInt64);
  const double start = -(2.0 - std::log(std::exp(2.0) + 3.0));
  const double end = -(0.0 - std::log(std::exp(1.0) + 3.0));
  EXPECT_NEAR(task.loss(logits, labels).item<double>(), (start + end) / 2, 1e-6);
  EXPECT_NE(testing::error_message<ModelError>([&] {
              task.loss(torch::zeros({1, 2}), torch::zeros({1}, torch::kInt64));
            }).find("model.head 'question-answering'"),
            std::string::npos);

  // Two replicas with different windows merge to the single-evaluator result.
  const torch::Tensor all_logits = logits_for_windows();
  auto whole = task.make_evaluator();
  auto left = task.make_evaluator();
  auto right = task.make_evaluator();
  std::vector<int64_t> all = {0, 1, 2, 3, 4, 5, 6, 7};
  whole->add(all_logits, data->labels(all), torch::tensor(all, torch::kInt64));
  const std::vector<int64_t> even = {0, 2, 4, 6}, odd = {1, 3, 5, 7};
  const auto rows = [&](const std::vector<int64_t>& idx) {
    return all_logits.index_select(0, torch::tensor(idx, torch::kInt64));
  };
  left->add(rows(even), data->labels(even), torch::tensor(even, torch::kInt64));
  right->add(rows(odd), data->labels(odd), torch::tensor(odd, torch::kInt64));
  // Before merging, the left replica predicts q2 from window 6 ("a beautiful").
  EXPECT_LT(left->result().metrics.at("f1"), 100.0);
  left->merge(right->pack());
  const EvalResult merged = left->result();
  const EvalResult single = whole->result();
  EXPECT_EQ(merged.samples, single.samples);
  EXPECT_DOUBLE_EQ(merged.metrics.at("exact_match"), single.metrics.at("exact_match"));
  EXPECT_DOUBLE_EQ(merged.metrics.at("f1"), single.metrics.at("f1"));
  EXPECT_NEAR(merged.loss, single.loss, 1e-6);
  EXPECT_THROW(left->merge(torch::tensor({1.0, 2.0, 1.0}, torch::kDouble)), CommError);

  // No evaluation set: training works, evaluating says what is missing.
  SquadTask no_eval(nullptr, 30);
  EXPECT_NE(testing::error_message<ConfigError>([&] { no_eval.make_evaluator(); })
                .find("dev-v1.1.json"),
            std::string::npos);
}

}  // namespace
}  // namespace pipet
