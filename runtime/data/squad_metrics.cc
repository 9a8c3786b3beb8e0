#include "runtime/data/squad_metrics.h"

#include "runtime/data/wordpiece.h"

#include <algorithm>
#include <map>

namespace pipet {

namespace {

// Python's str.split() whitespace.
bool is_python_space(char32_t cp) {
  return unicode::is_whitespace(cp) || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1F) ||
         cp == 0x85;
}

// Approximates Python's \w (str.isalnum() or '_'): not space, punctuation,
// control, and not an ASCII symbol.
bool is_word_char(char32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') ||
                        (cp >= 'A' && cp <= 'Z') || cp == '_';
  return !is_python_space(cp) && !unicode::is_punctuation(cp) && !unicode::is_control(cp);
}

bool is_ascii_punctuation(char32_t cp) {  // string.punctuation
  return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
         (cp >= 123 && cp <= 126);
}

std::vector<std::string> normalized_tokens(const std::string& text) {
  const std::string normalized = normalize_squad_answer(text);
  std::vector<std::string> tokens;
  size_t start = 0;
  while (start < normalized.size()) {
    size_t space = normalized.find(' ', start);
    if (space == std::string::npos) space = normalized.size();
    if (space > start) tokens.push_back(normalized.substr(start, space - start));
    start = space + 1;
  }
  return tokens;
}

}  // namespace

std::string normalize_squad_answer(const std::string& text) {
  const std::u32string lowered = unicode::lower(decode_utf8(text, "SQuAD answer"));
  std::u32string no_punct;
  for (char32_t cp : lowered)
    if (!is_ascii_punctuation(cp)) no_punct.push_back(cp);
  // re.sub(r"\b(a|an|the)\b", " ", text)
  std::u32string no_articles;
  const size_t n = no_punct.size();
  for (size_t i = 0; i < n;) {
    const bool boundary_before = i == 0 || !is_word_char(no_punct[i - 1]);
    bool matched = false;
    if (boundary_before) {
      for (const std::u32string article : {U"the", U"an", U"a"}) {
        const size_t end = i + article.size();
        if (end <= n && no_punct.compare(i, article.size(), article) == 0 &&
            (end == n || !is_word_char(no_punct[end]))) {
          no_articles.push_back(U' ');
          i = end;
          matched = true;
          break;
        }
      }
    }
    if (!matched) no_articles.push_back(no_punct[i++]);
  }
  // " ".join(text.split())
  std::u32string out;
  bool pending_space = false;
  for (char32_t cp : no_articles) {
    if (is_python_space(cp)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(U' ');
    pending_space = false;
    out.push_back(cp);
  }
  return encode_utf8(out);
}

double squad_exact_match(const std::string& prediction, const std::string& gold) {
  return normalize_squad_answer(prediction) == normalize_squad_answer(gold) ? 1.0 : 0.0;
}

double squad_f1(const std::string& prediction, const std::string& gold) {
  const std::vector<std::string> pred = normalized_tokens(prediction);
  const std::vector<std::string> truth = normalized_tokens(gold);
  std::map<std::string, int> counts;
  for (const auto& t : truth) ++counts[t];
  int same = 0;
  for (const auto& t : pred) {
    auto it = counts.find(t);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / static_cast<double>(pred.size());
  const double recall = static_cast<double>(same) / static_cast<double>(truth.size());
  return 2 * precision * recall / (precision + recall);
}

double squad_max_exact_match(const std::string& prediction, const std::vector<std::string>& golds) {
  double best = 0.0;
  for (const auto& gold : golds) best = std::max(best, squad_exact_match(prediction, gold));
  return best;
}

double squad_max_f1(const std::string& prediction, const std::vector<std::string>& golds) {
  double best = 0.0;
  for (const auto& gold : golds) best = std::max(best, squad_f1(prediction, gold));
  return best;
}

}  // namespace pipet
