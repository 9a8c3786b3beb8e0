// WordPiece tokenizer: expected ids were checked by hand and against a
// transcription of transformers' BertTokenizer (basic + wordpiece) run with
// /usr/bin/python3 on the same vocabulary.
#include "runtime/data/wordpiece.h"

#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

using testing::error_message;

std::vector<std::string> test_vocab() {
  return {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "!",  ",",
          ".",     "un",    "##aff", "##able", "cafe",  "naive", "the",   "##s", "中",
          "国",    "a",     "##b",   "'",     "don",   "t",     "οδος",  "i",   "##stanbul",
          "jalapeno", "¿",  "que",   "?",     "«",     "»",     "—",     "##ing", "test",
          "é",     "##o"};
}

std::vector<int32_t> ids(const WordPieceTokenizer& tok, const std::string& text) {
  return tok.encode_ids(text, "test");
}

TEST(WordPiece, MatchesHuggingFaceBasicAndWordPieceRules) {
  const WordPieceTokenizer tok(test_vocab(), /*lowercase=*/true, "test vocab");
  EXPECT_EQ(tok.cls_id(), 2);
  EXPECT_EQ(tok.sep_id(), 3);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 1);
  // Accents, case and punctuation.
  EXPECT_EQ(ids(tok, "Héllo, World!"), (std::vector<int32_t>{5, 8, 6, 7}));
  EXPECT_EQ(ids(tok, "Café naïve"), (std::vector<int32_t>{13, 14}));
  EXPECT_EQ(ids(tok, "JALAPEÑO"), (std::vector<int32_t>{27}));
  EXPECT_EQ(ids(tok, "¿Qué?"), (std::vector<int32_t>{28, 29, 30}));
  EXPECT_EQ(ids(tok, "«hello»—world"), (std::vector<int32_t>{31, 5, 32, 33, 6}));
  EXPECT_EQ(ids(tok, "don't"), (std::vector<int32_t>{22, 21, 23}));
  // İ lower-cases to i + combining dot, whose mark is stripped.
  EXPECT_EQ(ids(tok, "İstanbul"), (std::vector<int32_t>{25, 26}));
  // Final sigma: ΟΔΟΣ -> οδος (with σ it would be [UNK]).
  EXPECT_EQ(ids(tok, "ΟΔΟΣ"), (std::vector<int32_t>{24}));
  // Greedy longest match with continuations.
  EXPECT_EQ(ids(tok, "unaffable"), (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(ids(tok, "testing tests"), (std::vector<int32_t>{35, 34, 35, 16}));
  // Unknown: no split, or a piece that cannot continue ("é" stripped to "e").
  EXPECT_EQ(ids(tok, "unknownword"), (std::vector<int32_t>{1}));
  EXPECT_EQ(ids(tok, "ÉO"), (std::vector<int32_t>{1}));
  // 100 characters still split; 101 is [UNK].
  const std::vector<int32_t> hundred = ids(tok, "a" + std::string(99, 'b'));
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_EQ(hundred.front(), 19);
  EXPECT_EQ(hundred.back(), 20);
  EXPECT_EQ(ids(tok, "a" + std::string(100, 'b')), (std::vector<int32_t>{1}));
  // CJK ideographs are words of their own.
  EXPECT_EQ(ids(tok, "中国hello"), (std::vector<int32_t>{17, 18, 5}));
  // NUL, U+FFFD and format characters vanish without splitting the word;
  // ideographic space and line separator split.
  EXPECT_EQ(ids(tok, std::string("hel\0lo wor\u200bld", 16)), (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(ids(tok, "hello\xEF\xBF\xBDworld"), (std::vector<int32_t>{1}));
  EXPECT_EQ(ids(tok, "  \t hello\u3000world\u2028the\n"), (std::vector<int32_t>{5, 6, 15}));
  EXPECT_TRUE(ids(tok, " \t\n").empty());
  // Cased: no lower-casing, no accent stripping.
  const WordPieceTokenizer cased(test_vocab(), /*lowercase=*/false, "test vocab");
  EXPECT_EQ(ids(cased, "Héllo hello é"), (std::vector<int32_t>{1, 5, 36}));
}

TEST(WordPiece, OffsetsPointIntoTheOriginalCodepoints) {
  const WordPieceTokenizer tok(test_vocab(), true, "test vocab");
  // "Héllo, World!" : é is one codepoint (two UTF-8 bytes).
  const std::vector<Token> t = tok.tokenize("Héllo, World!", "test");
  ASSERT_EQ(t.size(), 4u);
  const std::vector<std::pair<int32_t, int32_t>> expected = {{0, 5}, {5, 6}, {7, 12}, {12, 13}};
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].begin, expected[i].first) << i;
    EXPECT_EQ(t[i].end, expected[i].second) << i;
  }
  // Continuation pieces cover their own characters; İ (1 codepoint) maps to i.
  const std::vector<Token> ist = tok.tokenize(" İstanbul", "test");
  ASSERT_EQ(ist.size(), 2u);
  EXPECT_EQ(ist[0].begin, 1);
  EXPECT_EQ(ist[0].end, 2);
  EXPECT_EQ(ist[1].begin, 2);
  EXPECT_EQ(ist[1].end, 9);
  // An unknown word covers the whole word.
  const std::vector<Token> unk = tok.tokenize("x unknownword", "test");
  ASSERT_EQ(unk.size(), 2u);
  EXPECT_EQ(unk[1].id, 1);
  EXPECT_EQ(unk[1].begin, 2);
  EXPECT_EQ(unk[1].end, 13);
}

TEST(WordPiece, EncodesPairsWithLongestFirstTruncationAndPadding) {
  const WordPieceTokenizer tok(test_vocab(), true, "test vocab");
  const std::vector<int32_t> a = {5, 6, 7, 8, 9};
  const std::vector<int32_t> b = {10, 11};
  // Room for 5 content tokens: a loses two from its end.
  EncodedInput in = tok.encode(a, &b, 8);
  EXPECT_EQ(in.input_ids, (std::vector<int64_t>{2, 5, 6, 7, 3, 10, 11, 3}));
  EXPECT_EQ(in.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(in.attention_mask, std::vector<int64_t>(8, 1));
  EXPECT_EQ(in.length, 8);
  // Equal lengths: b is cut first, then alternately.
  size_t la = 3, lb = 3;
  truncate_longest_first(la, lb, 3);
  EXPECT_EQ(la, 2u);
  EXPECT_EQ(lb, 1u);
  // Padding after the tokens.
  in = tok.encode(b, nullptr, 6);
  EXPECT_EQ(in.input_ids, (std::vector<int64_t>{2, 10, 11, 3, 0, 0}));
  EXPECT_EQ(in.attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(in.token_type_ids, std::vector<int64_t>(6, 0));
  EXPECT_EQ(in.length, 4);
  // Single text truncated to seq_len - 2.
  in = tok.encode(a, nullptr, 4);
  EXPECT_EQ(in.input_ids, (std::vector<int64_t>{2, 5, 6, 3}));
  EXPECT_NE(error_message<ConfigError>([&] { tok.encode(a, &b, 3); }).find("data.seq_len 3"),
            std::string::npos);
}

TEST(WordPiece, BadVocabulariesAndTextAreDataErrors) {
  testing::TempDir dir;
  const std::string good = dir.file("vocab.txt");
  testing::write_text(good, "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n");
  const WordPieceTokenizer tok = WordPieceTokenizer::from_file(good, true);
  EXPECT_EQ(tok.vocab_size(), 5);
  EXPECT_EQ(tok.find("hello"), 4);

  const std::string no_sep = dir.file("no_sep.txt");
  testing::write_text(no_sep, "[PAD]\n[UNK]\n[CLS]\nhello\n");
  std::string msg = error_message<DataError>([&] { WordPieceTokenizer::from_file(no_sep, true); });
  EXPECT_NE(msg.find(no_sep), std::string::npos) << msg;
  EXPECT_NE(msg.find("[SEP]"), std::string::npos) << msg;

  const std::string dup = dir.file("dup.txt");
  testing::write_text(dup, "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n");
  msg = error_message<DataError>([&] { WordPieceTokenizer::from_file(dup, true); });
  EXPECT_NE(msg.find("'hello' appears twice, on lines 5 and 6"), std::string::npos) << msg;

  const std::string empty = dir.file("empty.txt");
  testing::write_text(empty, "");
  msg = error_message<DataError>([&] { WordPieceTokenizer::from_file(empty, true); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;

  const std::string blank = dir.file("blank.txt");
  testing::write_text(blank, "[PAD]\n\n[UNK]\n");
  msg = error_message<DataError>([&] { WordPieceTokenizer::from_file(blank, true); });
  EXPECT_NE(msg.find(blank + ":2"), std::string::npos) << msg;

  msg = error_message<DataError>([&] { WordPieceTokenizer::from_file(dir.file("missing.txt"), true); });
  EXPECT_NE(msg.find("missing.txt"), std::string::npos) << msg;

  // Invalid UTF-8: a stray continuation byte, a cut-short character, an overlong form.
  msg = error_message<DataError>([&] { decode_utf8("ab\x80", "row 7"); });
  EXPECT_NE(msg.find("row 7: invalid UTF-8 at byte offset 2"), std::string::npos) << msg;
  msg = error_message<DataError>([&] { decode_utf8("h\xC3", "t"); });
  EXPECT_NE(msg.find("byte offset 1"), std::string::npos) << msg;
  msg = error_message<DataError>([&] { decode_utf8("\xC0\xAF", "t"); });
  EXPECT_NE(msg.find("overlong"), std::string::npos) << msg;
  msg = error_message<DataError>([&] { decode_utf8("\xED\xA0\x80", "t"); });
  EXPECT_NE(msg.find("surrogate"), std::string::npos) << msg;
  EXPECT_EQ(decode_utf8("h\xC3\xA9\xF0\x9F\x98\x80", "t"), std::u32string(U"h\u00e9\U0001F600"));
  EXPECT_EQ(encode_utf8(U"h\u00e9\U0001F600"), "h\xC3\xA9\xF0\x9F\x98\x80");
}

}  // namespace
}  // namespace pipet
