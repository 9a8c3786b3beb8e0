// End to end on real text formats: the `pipetransformer train` binary on a
// generated SST-2 TSV and a generated SQuAD v1.1 JSON with a tiny BERT, and
// the bad inputs each format must reject with a message naming the place.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <sstream>

#include "runtime/core/safetensors_torch.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

using testing::ProcessResult;
using testing::TempDir;

ProcessResult cli(std::vector<std::string> args) {
  args.insert(args.begin(), PIPET_CLI_PATH);
  testing::ProcessOptions options;
  options.extra_env.push_back("OMP_NUM_THREADS=1");
  return testing::run_process(args, options);
}

constexpr const char* kVocab =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\na\nmovie\nis\ngood\nbad\ngreat\nawful\nvery\nnot\n"
    "!\n.\n,\n?\nwhat\nwhere\nwho\ncity\ncapital\nof\nparis\nfrance\nberlin\ngermany\nriver\n"
    "flows\nthrough\nseine\nspree\nin\n##s\n";

void write_sst2(const TempDir& dir) {
  std::filesystem::create_directories(dir.file("sst2"));
  std::string train = "sentence\tlabel\n";
  const char* positive[] = {"a good movie", "a great movie !", "very good", "the movie is great"};
  const char* negative[] = {"a bad movie", "an awful movie .", "very bad", "the movie is not good"};
  for (int repeat = 0; repeat < 4; ++repeat)
    for (int i = 0; i < 4; ++i)
      train += std::string(positive[i]) + "\t1\n" + negative[i] + "\t0\n";
  testing::write_text(dir.file("sst2/train.tsv"), train);
  testing::write_text(dir.file("sst2/dev.tsv"), "sentence\tlabel\ngood movie\t1\nbad movie\t0\n"
                                                "very great\t1\nawful\t0\n");
}

std::string squad_json() {
  nlohmann::json paragraphs = nlohmann::json::array();
  const std::string context_a = "Paris is the capital of France. The Seine flows through Paris.";
  const std::string context_b = "Berlin is the capital of Germany. The Spree flows through Berlin.";
  for (const auto& [context, city, country, river] :
       {std::tuple{context_a, "Paris", "France", "Seine"},
        std::tuple{context_b, "Berlin", "Germany", "Spree"}}) {
    nlohmann::json qas = nlohmann::json::array();
    qas.push_back({{"id", std::string(city) + "-capital"},
                   {"question", "What is the capital of " + std::string(country) + "?"},
                   {"answers", {{{"text", city}, {"answer_start", 0}}}}});
    const size_t river_at = context.find(river);
    qas.push_back({{"id", std::string(city) + "-river"},
                   {"question", "What river flows through " + std::string(city) + "?"},
                   {"answers", {{{"text", river}, {"answer_start", river_at}},
                                {{"text", std::string("The ") + river}, {"answer_start", river_at - 4}}}}});
    paragraphs.push_back({{"context", context}, {"qas", qas}});
  }
  nlohmann::json doc = {{"version", "1.1"}, {"data", {{{"title", "cities"}, {"paragraphs", paragraphs}}}}};
  return doc.dump(1);
}

std::vector<std::string> tiny_bert(const TempDir& dir, const std::string& dataset) {
  return {"train",
          "--set", "model.preset=bert-tiny",
          "--set", "model.num_layers=1",
          "--set", "model.hidden_size=32",
          "--set", "model.num_heads=2",
          "--set", "model.intermediate_size=64",
          "--set", "model.vocab_size=64",
          "--set", "data.dataset=" + dataset,
          "--set", "data.vocab_file=" + dir.file("vocab.txt"),
          "--set", "train.batch_size=4",
          "--set", "train.epochs=2",
          "--set", "train.lr=0.001",
          "--set", "train.log_every_steps=1",
          "--set", "runtime.threads=1",
          "--output", dir.file("out")};
}

// The metrics lines of `event` on stdout.
std::vector<nlohmann::json> events(const std::string& out, const std::string& event) {
  std::vector<nlohmann::json> found;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("event=" + event + ";") == std::string::npos) continue;
    nlohmann::json fields;
    std::istringstream parts(line);
    for (std::string part; std::getline(parts, part, ';');) {
      const size_t eq = part.find('=');
      if (eq == std::string::npos) continue;
      const size_t begin = part.find_first_not_of(' ');
      fields[part.substr(begin, eq - begin)] = part.substr(eq + 1);
    }
    found.push_back(fields);
  }
  return found;
}

TEST(TextDatasets, Sst2TrainsEvaluatesAndExportsASequenceClassifier) {
  TempDir dir;
  testing::write_text(dir.file("vocab.txt"), kVocab);
  write_sst2(dir);
  auto args = tiny_bert(dir, "glue");
  args.insert(args.end(), {"--set", "data.dir=" + dir.file("sst2"), "--set", "data.seq_len=16"});
  const ProcessResult r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto train = events(r.out, "train");
  EXPECT_EQ(train.size(), 16u);  // 32 rows / batch 4, two epochs
  const auto eval = events(r.out, "eval");
  ASSERT_FALSE(eval.empty()) << r.out;
  EXPECT_EQ(eval.back()["eval_samples"], "4");
  const double accuracy = std::stod(eval.back()["eval_accuracy"].get<std::string>());
  EXPECT_GE(accuracy, 0.0);
  EXPECT_LE(accuracy, 1.0);

  const auto config = nlohmann::json::parse(testing::read_text(dir.file("out/config.json")));
  EXPECT_EQ(config["architectures"][0], "BertForSequenceClassification");
  EXPECT_EQ(config["id2label"].size(), 2u);
  const auto weights = load_safetensors(dir.file("out/model.safetensors"));
  EXPECT_EQ(weights.at("classifier.weight").sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(weights.count("bert.pooler.dense.weight"), 1u);
  EXPECT_EQ(weights.count("qa_outputs.weight"), 0u);
}

TEST(TextDatasets, SquadTrainsEvaluatesAndExportsAQuestionAnsweringModel) {
  TempDir dir;
  testing::write_text(dir.file("vocab.txt"), kVocab);
  std::filesystem::create_directories(dir.file("squad"));
  testing::write_text(dir.file("squad/train-v1.1.json"), squad_json());
  testing::write_text(dir.file("squad/dev-v1.1.json"), squad_json());
  auto args = tiny_bert(dir, "squad");
  // Contexts of 13-14 tokens in windows of 24 - 8 - 3 = 13: some need two.
  args.insert(args.end(), {"--set", "data.dir=" + dir.file("squad"), "--set", "data.seq_len=24",
                           "--set", "data.max_query_len=8", "--set", "data.doc_stride=6",
                           "--set", "model.head=question-answering", "--set", "train.batch_size=2",
                           "--set", "eval.early_stop_metric=eval_f1"});
  const ProcessResult r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(events(r.out, "train").empty());
  const auto eval = events(r.out, "eval");
  ASSERT_FALSE(eval.empty()) << r.out;
  EXPECT_EQ(eval.back()["eval_samples"], "4");  // questions, not windows
  const double em = std::stod(eval.back()["eval_exact_match"].get<std::string>());
  const double f1 = std::stod(eval.back()["eval_f1"].get<std::string>());
  EXPECT_GE(em, 0.0);
  EXPECT_GE(f1, em);
  EXPECT_LE(f1, 100.0);

  const auto config = nlohmann::json::parse(testing::read_text(dir.file("out/config.json")));
  EXPECT_EQ(config["architectures"][0], "BertForQuestionAnswering");
  const auto weights = load_safetensors(dir.file("out/model.safetensors"));
  EXPECT_EQ(weights.at("qa_outputs.weight").sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(weights.at("qa_outputs.bias").sizes(), (std::vector<int64_t>{2}));
  EXPECT_EQ(weights.count("bert.pooler.dense.weight"), 0u);
  EXPECT_EQ(weights.count("classifier.weight"), 0u);
}

TEST(TextDatasets, BadInputsFailWithTheirPlace) {
  TempDir dir;
  testing::write_text(dir.file("vocab.txt"), kVocab);
  testing::write_text(dir.file("no_sep.txt"), "[PAD]\n[UNK]\n[CLS]\ngood\n");
  struct Case {
    std::string name;
    std::string file;
    std::string contents;
    std::vector<std::string> extra;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"missing column", "train.tsv", "text\tlabel\ngood\t1\n", {"--set", "data.dataset=glue"},
       "train.tsv:1: the header has no column 'sentence' (data.text_column)"},
      {"non-integer label", "train.tsv", "sentence\tlabel\ngood\t1\nbad\tneg\n",
       {"--set", "data.dataset=glue"}, "train.tsv:3: label 'neg'"},
      {"vocab without [SEP]", "train.tsv", "sentence\tlabel\ngood\t1\n",
       {"--set", "data.dataset=glue", "--set", "data.vocab_file=" + dir.file("no_sep.txt")},
       "no_sep.txt: the vocabulary has no [SEP] token"},
      {"squad missing field", "train-v1.1.json",
       R"({"data": [{"paragraphs": [{"context": "Paris.", "qas": [{"id": "q1", "answers": []}]}]}]})",
       {"--set", "data.dataset=squad", "--set", "model.head=question-answering"},
       "data[0].paragraphs[0].qas[0].question is missing"},
      {"squad mismatched answer", "train-v1.1.json",
       R"({"data": [{"paragraphs": [{"context": "Paris is big.", "qas": [{"id": "q-9",
           "question": "Where?", "answers": [{"text": "Berlin", "answer_start": 0}]}]}]}]})",
       {"--set", "data.dataset=squad", "--set", "model.head=question-answering"},
       "question 'q-9' (data[0].paragraphs[0].qas[0].answers[0]): answer text 'Berlin' does not "
       "match the context at answer_start 0"},
  };
  for (const Case& c : cases) {
    TempDir data;
    testing::write_text(data.file(c.file), c.contents);
    auto args = tiny_bert(dir, "glue");
    args.insert(args.end(), {"--set", "data.dir=" + data.path(), "--set", "data.seq_len=16",
                             "--set", "data.max_query_len=8", "--set", "data.doc_stride=4"});
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    const ProcessResult r = cli(args);
    EXPECT_EQ(r.exit_code, 3) << c.name << "\n" << r.err;  // DataError
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.name << "\n" << r.err;
  }
  // squad without the span head is a configuration error that says what to set.
  auto args = tiny_bert(dir, "squad");
  args.insert(args.end(), {"--set", "data.dir=" + dir.path(), "--set", "data.seq_len=16",
                           "--set", "data.max_query_len=8"});
  const ProcessResult r = cli(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("model.head"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pipet
