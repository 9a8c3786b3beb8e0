// The official SQuAD v1.1 evaluation definitions (evaluate-v1.1.py):
// answers are normalised (lower case, ASCII punctuation removed, the
// articles a/an/the removed as whole words, whitespace collapsed), then
// exact match and bag-of-tokens F1 are taken, each maximised over the gold
// answers. Scores here are fractions in [0, 1]; callers scale to percent.
#pragma once

#include <string>
#include <vector>

namespace pipet {

// normalize_answer() of the official script. Invalid UTF-8 is DataError.
std::string normalize_squad_answer(const std::string& text);
// 1 when the normalised texts are equal, else 0.
double squad_exact_match(const std::string& prediction, const std::string& gold);
// Token-level F1 of the normalised texts (0 when they share no token).
double squad_f1(const std::string& prediction, const std::string& gold);
// Maxima over the gold answers (0 when there are none).
double squad_max_exact_match(const std::string& prediction, const std::vector<std::string>& golds);
double squad_max_f1(const std::string& prediction, const std::vector<std::string>& golds);

}  // namespace pipet
