#include "runtime/data/wordpiece.h"

#include "runtime/core/errors.h"
#include "runtime/core/files.h"

#include <algorithm>
#include <utility>

namespace pipet {

namespace {

struct CodepointRange {
  uint32_t first;
  uint32_t last;
};
// Codepoints first, first+stride, ... <= last lower-case to cp + delta.
struct LowerRun {
  uint32_t first;
  uint32_t last;
  int32_t delta;
  uint32_t stride;
};
// Every codepoint in [first, last] loses its accents to `target`.
struct StripRun {
  uint32_t first;
  uint32_t last;
  uint32_t target;
};
struct MultiMapping {
  uint32_t cp;
  uint32_t count;
  uint32_t out[3];
};

#include "runtime/data/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodepointRange (&table)[N], char32_t cp) {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), static_cast<uint32_t>(cp),
                                    [](uint32_t v, const CodepointRange& r) { return v < r.first; });
  return it != std::begin(table) && cp <= (it - 1)->last;
}

template <size_t N>
const MultiMapping* find_multi(const MultiMapping (&table)[N], char32_t cp) {
  const auto* it = std::lower_bound(std::begin(table), std::end(table), static_cast<uint32_t>(cp),
                                    [](const MultiMapping& m, uint32_t v) { return m.cp < v; });
  return it != std::end(table) && it->cp == cp ? it : nullptr;
}

bool is_control(char32_t cp) { return in_ranges(kControlRanges, cp); }
bool is_whitespace(char32_t cp) { return in_ranges(kWhitespaceRanges, cp); }
bool is_punctuation(char32_t cp) { return in_ranges(kPunctuationRanges, cp); }
bool is_nonspacing_mark(char32_t cp) { return in_ranges(kNonspacingMarkRanges, cp); }
bool is_cased(char32_t cp) { return in_ranges(kCasedRanges, cp); }
bool is_case_ignorable(char32_t cp) { return in_ranges(kCaseIgnorableRanges, cp); }

// The CJK blocks Hugging Face's _is_chinese_char lists.
bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

constexpr char32_t kCapitalSigma = 0x3A3;
constexpr char32_t kFinalSigma = 0x3C2;

// Appends the lower case of cp (single-codepoint or multi mapping).
void append_lower(char32_t cp, std::u32string& out) {
  if (const MultiMapping* m = find_multi(kLowerMulti, cp)) {
    for (uint32_t i = 0; i < m->count; ++i) out.push_back(m->out[i]);
    return;
  }
  const auto* it = std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns),
                                    static_cast<uint32_t>(cp),
                                    [](uint32_t v, const LowerRun& r) { return v < r.first; });
  if (it != std::begin(kLowerRuns)) {
    const LowerRun& run = *(it - 1);
    if (cp <= run.last && (cp - run.first) % run.stride == 0) {
      out.push_back(static_cast<char32_t>(static_cast<int64_t>(cp) + run.delta));
      return;
    }
  }
  out.push_back(cp);
}

// Appends NFD(cp) without its nonspacing marks (Hugging Face _run_strip_accents).
void append_stripped(char32_t cp, std::u32string& out) {
  if (is_nonspacing_mark(cp)) return;
  constexpr char32_t kHangulFirst = 0xAC00, kHangulLast = 0xD7A3;
  if (cp >= kHangulFirst && cp <= kHangulLast) {  // algorithmic (Unicode 3.12)
    const char32_t index = cp - kHangulFirst;
    out.push_back(0x1100 + index / (21 * 28));
    out.push_back(0x1161 + (index % (21 * 28)) / 28);
    if (index % 28 != 0) out.push_back(0x11A7 + index % 28);
    return;
  }
  if (const MultiMapping* m = find_multi(kStripMulti, cp)) {
    for (uint32_t i = 0; i < m->count; ++i) out.push_back(m->out[i]);
    return;
  }
  const auto* it = std::upper_bound(std::begin(kStripRuns), std::end(kStripRuns),
                                    static_cast<uint32_t>(cp),
                                    [](uint32_t v, const StripRun& r) { return v < r.first; });
  if (it != std::begin(kStripRuns) && cp <= (it - 1)->last) {
    out.push_back((it - 1)->target);
    return;
  }
  out.push_back(cp);
}

// Python's Final_Sigma condition (str.lower() of the whole word): skipping
// case-ignorable characters, a cased letter before and none after.
bool is_final_sigma(const std::u32string& word, size_t at) {
  bool cased_before = false;
  for (size_t i = at; i-- > 0;) {
    if (is_case_ignorable(word[i])) continue;
    cased_before = is_cased(word[i]);
    break;
  }
  if (!cased_before) return false;
  for (size_t i = at + 1; i < word.size(); ++i) {
    if (is_case_ignorable(word[i])) continue;
    return !is_cased(word[i]);
  }
  return true;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

namespace unicode {
bool is_whitespace(char32_t cp) { return pipet::is_whitespace(cp); }
bool is_punctuation(char32_t cp) { return pipet::is_punctuation(cp); }
bool is_control(char32_t cp) { return pipet::is_control(cp); }
std::u32string lower(std::u32string_view text) {
  const std::u32string word(text);
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < word.size(); ++i) {
    if (word[i] == kCapitalSigma && is_final_sigma(word, i)) {
      out.push_back(kFinalSigma);
    } else {
      append_lower(word[i], out);
    }
  }
  return out;
}
}  // namespace unicode

std::u32string decode_utf8(std::string_view text, const std::string& source) {
  std::u32string out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char lead = bytes[i];
    if (lead < 0x80) {
      out.push_back(lead);
      ++i;
      continue;
    }
    size_t extra = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((lead & 0xE0) == 0xC0) {
      extra = 1, cp = lead & 0x1F, min = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      extra = 2, cp = lead & 0x0F, min = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      extra = 3, cp = lead & 0x07, min = 0x10000;
    } else {
      static const char* hex = "0123456789ABCDEF";
      throw DataError(source + ": invalid UTF-8 at byte offset " + std::to_string(i) + " (byte 0x" +
                      std::string{hex[lead >> 4], hex[lead & 15]} +
                      " cannot start a character)");
    }
    if (i + extra >= n) {
      throw DataError(source + ": invalid UTF-8 at byte offset " + std::to_string(i) +
                      " (the text ends inside a " + std::to_string(extra + 1) +
                      "-byte character)");
    }
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char b = bytes[i + k];
      if ((b & 0xC0) != 0x80)
        throw DataError(source + ": invalid UTF-8 at byte offset " + std::to_string(i) +
                        " (a " + std::to_string(extra + 1) +
                        "-byte character is cut short at byte offset " + std::to_string(i + k) +
                        ")");
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      throw DataError(source + ": invalid UTF-8 at byte offset " + std::to_string(i) +
                      (cp < min ? " (overlong encoding)"
                                : cp > 0x10FFFF ? " (beyond U+10FFFF)" : " (a UTF-16 surrogate)"));
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) append_utf8(cp, out);
  return out;
}

// ------------------------------------------------------------ vocabulary ----

WordPieceTokenizer WordPieceTokenizer::from_file(const std::string& vocab_path, bool lowercase) {
  std::string text;
  try {
    text = read_file(vocab_path, "WordPiece vocabulary (data.vocab_file)");
  } catch (const IoError& e) {
    throw DataError(e.what());
  }
  std::vector<std::string> tokens;
  size_t line = 1;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t newline = text.find('\n', pos);
    const bool last = newline == std::string::npos;
    if (last) newline = text.size();
    std::string token = text.substr(pos, newline - pos);
    if (!token.empty() && token.back() == '\r') token.pop_back();  // CRLF files
    if (token.empty())
      throw DataError(vocab_path + ":" + std::to_string(line) +
                      ": empty line in the vocabulary (every line is one token)");
    decode_utf8(token, vocab_path + ":" + std::to_string(line));
    tokens.push_back(std::move(token));
    pos = newline + 1;
    ++line;
  }
  return WordPieceTokenizer(std::move(tokens), lowercase, vocab_path);
}

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> tokens, bool lowercase,
                                       std::string source)
    : tokens_(std::move(tokens)), lowercase_(lowercase) {
  if (tokens_.empty()) throw DataError(source + ": the vocabulary is empty");
  if (tokens_.size() > static_cast<size_t>(INT32_MAX))
    throw DataError(source + ": the vocabulary has more than 2^31 tokens");
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto [it, inserted] = ids_.emplace(tokens_[i], static_cast<int32_t>(i));
    if (!inserted)
      throw DataError(source + ": token '" + tokens_[i] + "' appears twice, on lines " +
                      std::to_string(it->second + 1) + " and " + std::to_string(i + 1));
  }
  const auto special = [&](const char* name) {
    const auto found = find(name);
    if (!found)
      throw DataError(source + ": the vocabulary has no " + name +
                      " token; BERT inputs need [CLS], [SEP], [PAD] and [UNK] (is this a BERT "
                      "vocab.txt?)");
    return *found;
  };
  cls_id_ = special("[CLS]");
  sep_id_ = special("[SEP]");
  pad_id_ = special("[PAD]");
  unk_id_ = special("[UNK]");
}

std::optional<int32_t> WordPieceTokenizer::find(const std::string& token) const {
  const auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

// ---------------------------------------------------------- tokenisation ----

std::vector<Token> WordPieceTokenizer::tokenize(std::u32string_view text) const {
  std::vector<Token> out;
  // One basic-tokenizer word: its processed codepoints and, for each, the
  // index of the original codepoint it came from.
  std::u32string raw;             // cleaned codepoints of the whitespace word
  std::vector<int32_t> raw_src;
  std::u32string word;            // after lower-casing and accent stripping
  std::vector<int32_t> word_src;
  std::u32string lowered;
  std::string utf8;               // one piece candidate, "##" + text
  std::vector<size_t> byte_at;    // UTF-8 offset of each codepoint of a run

  // Greedy longest-match-first over word[first, last).
  const auto emit_pieces = [&](size_t first, size_t last) {
    if (first == last) return;
    const auto begin = word_src[first];
    const auto end = word_src[last - 1] + 1;
    if (static_cast<int64_t>(last - first) > kMaxCharsPerWord) {
      out.push_back(Token{unk_id_, begin, end});
      return;
    }
    std::string run;
    byte_at.clear();
    for (size_t i = first; i < last; ++i) {
      byte_at.push_back(run.size());
      append_utf8(word[i], run);
    }
    byte_at.push_back(run.size());
    const size_t mark = out.size();
    size_t start = 0;
    const size_t count = last - first;
    while (start < count) {
      size_t stop = count;
      std::optional<int32_t> piece;
      while (start < stop) {
        utf8.assign(start > 0 ? "##" : "");
        utf8.append(run, byte_at[start], byte_at[stop] - byte_at[start]);
        piece = find(utf8);
        if (piece) break;
        --stop;
      }
      if (!piece) {  // no split: the whole word is unknown
        out.resize(mark);
        out.push_back(Token{unk_id_, begin, end});
        return;
      }
      out.push_back(Token{*piece, word_src[first + start], word_src[first + stop - 1] + 1});
      start = stop;
    }
  };

  const auto finish_word = [&]() {
    if (raw.empty()) return;
    word.clear();
    word_src.clear();
    for (size_t i = 0; i < raw.size(); ++i) {
      if (!lowercase_) {
        word.push_back(raw[i]);
        word_src.push_back(raw_src[i]);
        continue;
      }
      lowered.clear();
      if (raw[i] == kCapitalSigma && is_final_sigma(raw, i)) {
        lowered.push_back(kFinalSigma);
      } else {
        append_lower(raw[i], lowered);
      }
      for (char32_t cp : lowered) {
        append_stripped(cp, word);
        word_src.resize(word.size(), raw_src[i]);
      }
    }
    // Punctuation splits the word; each punctuation mark is a piece source.
    size_t run_start = 0;
    for (size_t i = 0; i < word.size(); ++i) {
      if (is_whitespace(word[i])) {  // cannot come from a table, but stay safe
        emit_pieces(run_start, i);
        run_start = i + 1;
      } else if (is_punctuation(word[i])) {
        emit_pieces(run_start, i);
        emit_pieces(i, i + 1);
        run_start = i + 1;
      }
    }
    emit_pieces(run_start, word.size());
    raw.clear();
    raw_src.clear();
  };

  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t cp = text[i];
    const auto index = static_cast<int32_t>(i);
    if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
    if (is_whitespace(cp)) {
      finish_word();
    } else if (is_cjk(cp)) {
      finish_word();
      raw.push_back(cp);
      raw_src.push_back(index);
      finish_word();
    } else {
      raw.push_back(cp);
      raw_src.push_back(index);
    }
  }
  finish_word();
  return out;
}

std::vector<Token> WordPieceTokenizer::tokenize(std::string_view utf8,
                                                const std::string& source) const {
  const std::u32string text = decode_utf8(utf8, source);
  return tokenize(std::u32string_view(text));
}

std::vector<int32_t> WordPieceTokenizer::encode_ids(std::string_view utf8,
                                                    const std::string& source) const {
  std::vector<int32_t> ids;
  for (const Token& t : tokenize(utf8, source)) ids.push_back(t.id);
  return ids;
}

void truncate_longest_first(size_t& len_a, size_t& len_b, size_t budget) {
  while (len_a + len_b > budget) {
    if (len_a > len_b) {
      --len_a;
    } else {
      --len_b;
    }
  }
}

EncodedInput WordPieceTokenizer::encode(const std::vector<int32_t>& a,
                                        const std::vector<int32_t>* b, int64_t seq_len) const {
  const int64_t specials = b ? 3 : 2;
  if (seq_len < specials + 1)
    throw ConfigError("data.seq_len " + std::to_string(seq_len) + " is too short for " +
                      (b ? "[CLS] a [SEP] b [SEP]" : "[CLS] text [SEP]"));
  size_t len_a = a.size();
  size_t len_b = b ? b->size() : 0;
  truncate_longest_first(len_a, len_b, static_cast<size_t>(seq_len - specials));
  EncodedInput in;
  in.input_ids.assign(static_cast<size_t>(seq_len), pad_id_);
  in.attention_mask.assign(static_cast<size_t>(seq_len), 0);
  in.token_type_ids.assign(static_cast<size_t>(seq_len), 0);
  size_t pos = 0;
  in.input_ids[pos++] = cls_id_;
  for (size_t i = 0; i < len_a; ++i) in.input_ids[pos++] = a[i];
  in.input_ids[pos++] = sep_id_;
  if (b) {
    const size_t segment_b = pos;
    for (size_t i = 0; i < len_b; ++i) in.input_ids[pos++] = (*b)[i];
    in.input_ids[pos++] = sep_id_;
    for (size_t i = segment_b; i < pos; ++i) in.token_type_ids[i] = 1;
  }
  for (size_t i = 0; i < pos; ++i) in.attention_mask[i] = 1;
  in.length = static_cast<int64_t>(pos);
  return in;
}

}  // namespace pipet
