// WordPiece tokenisation as Hugging Face's BertTokenizer does it, given the
// model's vocab.txt (one token per line, the line number is the id).
//
// Basic tokenisation: drop NUL, U+FFFD and control characters; whitespace
// (including U+2028/U+2029, which Python's str.split() splits on) separates
// words; CJK ideographs become words of their own; with `lowercase`, words
// are lower-cased (Python's str.lower(), final sigma included) and their
// accents stripped (NFD, then combining marks Mn removed); every punctuation
// character (ASCII symbols and Unicode P*) is its own word. Then each word is
// split greedily longest-match-first into vocabulary pieces, continuations
// prefixed "##"; a word longer than 100 characters or with no split is [UNK].
//
// Not reproduced: the NFC pass newer transformers versions run in cased mode
// (uncased mode decomposes anyway), canonical reordering of the 25 non-Mn
// characters with a combining class, and special tokens written literally in
// the text ("[SEP]" is tokenised as punctuation and letters).
//
// Offsets are in Unicode codepoints of the original text (Python string
// indices, the unit of SQuAD's answer_start): a token covers [begin, end).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pipet {

// Decodes UTF-8; DataError naming `source` and the byte offset of the first
// invalid sequence (overlong forms, surrogates and values past U+10FFFF are
// invalid too).
std::u32string decode_utf8(std::string_view text, const std::string& source);
// Encodes codepoints as UTF-8.
std::string encode_utf8(std::u32string_view text);

// Character classes and case mapping shared with SQuAD answer normalisation.
namespace unicode {
// " \t\n\r", Zs, and U+2028/U+2029.
bool is_whitespace(char32_t cp);
// Non-alphanumeric ASCII or Unicode P*.
bool is_punctuation(char32_t cp);
// Unicode C* (control, format, unassigned, private use, surrogate) except \t \n \r.
bool is_control(char32_t cp);
// Python's str.lower(), final sigma included.
std::u32string lower(std::u32string_view text);
}  // namespace unicode

struct Token {
  int32_t id = 0;
  int32_t begin = 0;  // first codepoint of the original text it came from
  int32_t end = 0;    // one past its last codepoint
};

// One model input: [CLS] a [SEP] or [CLS] a [SEP] b [SEP], padded.
struct EncodedInput {
  std::vector<int64_t> input_ids;       // seq_len ids, [PAD] after the tokens
  std::vector<int64_t> attention_mask;  // 1 for tokens, 0 for padding
  std::vector<int64_t> token_type_ids;  // 1 for b and its [SEP], else 0
  int64_t length = 0;                   // tokens before the padding
};

class WordPieceTokenizer {
 public:
  static constexpr int64_t kMaxCharsPerWord = 100;

  // Reads vocab.txt. DataError naming the file: unreadable, empty, invalid
  // UTF-8, an empty line, a duplicate token (with both line numbers), or a
  // missing special token ([CLS], [SEP], [PAD], [UNK]).
  static WordPieceTokenizer from_file(const std::string& vocab_path, bool lowercase);

  // `tokens` in id order; `source` names them in errors. Same checks.
  WordPieceTokenizer(std::vector<std::string> tokens, bool lowercase, std::string source);

  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  bool lowercase() const { return lowercase_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  // The id of `token`, if it is in the vocabulary.
  std::optional<int32_t> find(const std::string& token) const;
  const std::string& token(int32_t id) const { return tokens_.at(static_cast<size_t>(id)); }

  // Pieces of already-decoded text, with offsets into it.
  std::vector<Token> tokenize(std::u32string_view text) const;
  // Pieces of UTF-8 text; `source` names it in a decoding error.
  std::vector<Token> tokenize(std::string_view utf8, const std::string& source) const;
  std::vector<int32_t> encode_ids(std::string_view utf8, const std::string& source) const;

  // [CLS] a [SEP] (b [SEP]) truncated to `seq_len` as Hugging Face's
  // longest_first does (a token is dropped from the end of the longer part,
  // from b when they tie), then padded. Requires seq_len >= 3, or 4 for a
  // pair; a part may be truncated to nothing.
  EncodedInput encode(const std::vector<int32_t>& a, const std::vector<int32_t>* b,
                      int64_t seq_len) const;

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  bool lowercase_;
  int32_t cls_id_ = -1;
  int32_t sep_id_ = -1;
  int32_t pad_id_ = -1;
  int32_t unk_id_ = -1;
};

// Longest-first truncation of a pair to at most `budget` tokens in total
// (Hugging Face's rule); exposed for SQuAD and tests.
void truncate_longest_first(size_t& len_a, size_t& len_b, size_t budget);

}  // namespace pipet
