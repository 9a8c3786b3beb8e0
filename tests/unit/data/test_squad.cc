// SQuAD v1.1: JSON parsing, windows, labels through character offsets, errors.
#include "runtime/data/squad.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

using testing::error_message;

// ids: [PAD]0 [UNK]1 [CLS]2 [SEP]3 what4 is5 the6 capital7 of8 france9
// paris10 city11 ?12 a13 .14 beautiful15
constexpr const char* kVocab =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\nwhat\nis\nthe\ncapital\nof\nfrance\nparis\ncity\n?\na\n.\nbeautiful\n";

// Context tokens: paris0 is1 the2 capital3 of4 france5 .6 paris7 is8 a9
// beautiful10 city11 .12
constexpr const char* kSquad = R"({"version": "1.1", "data": [{"title": "T", "paragraphs": [{
  "context": "Paris is the capital of France. Paris is a beautiful city.",
  "qas": [
    {"id": "q1", "question": "What is the capital of France?",
     "answers": [{"text": "France", "answer_start": 24}, {"text": "France.", "answer_start": 24}]},
    {"id": "q2", "question": "is it beautiful?",
     "answers": [{"text": "a beautiful city", "answer_start": 41}]}
  ]}]}]})";

TEST(Squad, WindowsLabelsAndOffsetsFollowTheRunSquadRecipe) {
  testing::TempDir dir;
  testing::write_text(dir.file("vocab.txt"), kVocab);
  testing::write_text(dir.file("train-v1.1.json"), kSquad);
  const std::vector<SquadParagraph> paragraphs = read_squad_json(dir.file("train-v1.1.json"));
  ASSERT_EQ(paragraphs.size(), 1u);
  ASSERT_EQ(paragraphs[0].questions.size(), 2u);
  EXPECT_EQ(paragraphs[0].questions[0].answers.size(), 2u);

  const WordPieceTokenizer tok = WordPieceTokenizer::from_file(dir.file("vocab.txt"), true);
  SquadWindowSpec spec;
  spec.seq_len = 12;
  spec.max_query_len = 4;  // "what is the capital" of 7 question tokens
  spec.doc_stride = 3;     // windows of 5 context tokens start at 0, 3, 6, 9
  const SquadDataset data(paragraphs, tok, spec, "train", "test");
  ASSERT_EQ(data.num_examples(), 2);
  ASSERT_EQ(data.size(), 8);
  EXPECT_EQ(data.example(0).num_windows, 4);
  EXPECT_EQ(data.example(1).first_window, 4);
  EXPECT_EQ(data.window(3).doc_start, 9);
  EXPECT_EQ(data.window(3).doc_length, 4);
  // "France" is context token 5: only window 1 (tokens 3..7) holds it, at
  // sequence position 5 - 3 + 6; the others point at [CLS].
  EXPECT_TRUE(torch::equal(data.labels({0, 1, 2, 3, 7}),
                           torch::tensor({{0, 0}, {8, 8}, {0, 0}, {0, 0}, {6, 8}}, torch::kInt64)));
  EXPECT_EQ(data.label(1), 8);

  const Batch batch = data.get_batch({1, 7}, 0);
  EXPECT_TRUE(torch::equal(batch.input_ids,
                           torch::tensor({{2, 4, 5, 6, 7, 3, 7, 8, 9, 14, 10, 3},
                                          {2, 5, 1, 15, 12, 3, 13, 15, 11, 14, 3, 0}},
                                         torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.token_type_ids,
                           torch::tensor({{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1},
                                          {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0}},
                                         torch::kInt64)));
  EXPECT_EQ(batch.attention_mask.sum().item<int64_t>(), 23);
  EXPECT_TRUE(torch::equal(batch.labels, torch::tensor({{8, 8}, {6, 8}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.sample_ids, torch::tensor({1, 7}, torch::kInt64)));

  // Offsets back into the context; max context as HF's _check_is_max_context.
  EXPECT_EQ(data.token_chars(0, 5), (std::pair<int32_t, int32_t>{24, 30}));
  EXPECT_EQ(data.context_text(0, 24, 30), "France");
  EXPECT_TRUE(data.is_max_context(6, 9));   // token 9: window 2 (left 3, right 1) beats window 3
  EXPECT_FALSE(data.is_max_context(7, 9));
  EXPECT_TRUE(data.is_max_context(7, 11));  // only window 3 holds token 11
  EXPECT_EQ(data.example(0).answers, (std::vector<std::string>{"France", "France."}));
}

TEST(Squad, LoaderAndBadFiles) {
  testing::TempDir dir;
  testing::write_text(dir.file("vocab.txt"), kVocab);
  testing::write_text(dir.file("train-v1.1.json"), kSquad);
  testing::write_text(dir.file("dev-v1.1.json"), kSquad);
  DataConfig config;
  config.dataset = "squad";
  config.dir = dir.path();
  config.vocab_file = dir.file("vocab.txt");
  config.seq_len = 12;
  config.max_query_len = 4;
  config.doc_stride = 3;
  DataShape shape;
  shape.vocab_size = 64;
  shape.max_seq_len = 64;
  const DatasetSplits splits = load_squad(config, shape, 3);
  EXPECT_EQ(splits.train->size(), 8);
  ASSERT_TRUE(splits.eval);
  EXPECT_EQ(splits.train->num_classes(), 2);

  config.doc_stride = 6;  // windows of at least 5 tokens would leave gaps
  std::string msg = error_message<ConfigError>([&] { load_squad(config, shape, 3); });
  EXPECT_NE(msg.find("data.doc_stride 6"), std::string::npos) << msg;

  const std::string path = dir.file("bad.json");
  testing::write_text(path, R"({"data": [{"paragraphs": [{"context": "Paris.", "qas": [
      {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]},
      {"id": "q2", "question": "What?"}]}]}]})");
  msg = error_message<DataError>([&] { read_squad_json(path); });
  EXPECT_NE(msg.find(path + ": data[0].paragraphs[0].qas[1].answers is missing"), std::string::npos)
      << msg;

  testing::write_text(path, R"({"data": [{"paragraphs": [{"context": "Paris.", "qas": [
      {"id": "q7", "question": "Where?", "answers": [{"text": "Lyon", "answer_start": 0}]}]}]}]})");
  msg = error_message<DataError>([&] { read_squad_json(path); });
  EXPECT_NE(msg.find("question 'q7' (data[0].paragraphs[0].qas[0].answers[0]): answer text 'Lyon' "
                     "does not match the context at answer_start 0 (the context there reads 'Pari')"),
            std::string::npos) << msg;

  testing::write_text(path, R"({"data": [{"paragraphs": [{"context": "Paris.", "qas": [
      {"id": "q8", "question": "Where?", "answers": [{"text": "Paris", "answer_start": "0"}]}]}]}]})");
  msg = error_message<DataError>([&] { read_squad_json(path); });
  EXPECT_NE(msg.find("answers[0].answer_start must be an integer, got string"), std::string::npos)
      << msg;

  testing::write_text(path, "{\"data\": [\n  {\"paragraphs\": ]}");
  msg = error_message<DataError>([&] { read_squad_json(path); });
  EXPECT_NE(msg.find(path + ":2:"), std::string::npos) << msg;

  testing::write_text(path, R"({"version": "1.1"})");
  msg = error_message<DataError>([&] { read_squad_json(path); });
  EXPECT_NE(msg.find(": data is missing"), std::string::npos) << msg;
}

}  // namespace
}  // namespace pipet
