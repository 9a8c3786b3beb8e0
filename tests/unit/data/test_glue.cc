// GLUE TSV loading: columns by name, tokenised batches, splits, bad rows.
#include "runtime/data/glue.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

using testing::error_message;

constexpr const char* kVocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\ngood\nbad\nmovie\n!\nvery\n";

struct GlueFixture {
  testing::TempDir dir;
  DataConfig config;
  DataShape shape;
  GlueFixture() {
    testing::write_text(dir.file("vocab.txt"), kVocab);
    config.dataset = "glue";
    config.dir = dir.path();
    config.vocab_file = dir.file("vocab.txt");
    config.seq_len = 6;
    shape.vocab_size = 100;
    shape.max_seq_len = 512;
  }
};

TEST(Glue, LoadsSst2LayoutIntoPaddedBatches) {
  GlueFixture f;
  testing::write_text(f.dir.file("train.tsv"),
                      "sentence\tlabel\nGood movie!\t1\nbad movie \t0\r\nvery very very good movie\t2\n\n");
  testing::write_text(f.dir.file("dev.tsv"), "sentence\tlabel\nbad\t0\n");
  const DatasetSplits splits = load_glue(f.config, f.shape, 1);
  ASSERT_EQ(splits.train->size(), 3);
  ASSERT_TRUE(splits.eval);
  EXPECT_EQ(splits.eval->size(), 1);
  EXPECT_EQ(splits.train->num_classes(), 3);
  const Batch batch = splits.train->get_batch({2, 0}, 0);
  // "very very very good movie" truncated to 4 tokens inside [CLS] .. [SEP].
  EXPECT_TRUE(torch::equal(batch.input_ids,
                           torch::tensor({{2, 8, 8, 8, 4, 3}, {2, 4, 6, 7, 3, 0}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.attention_mask,
                           torch::tensor({{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 0}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.token_type_ids, torch::zeros({2, 6}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.labels, torch::tensor({2, 1}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.sample_ids, torch::tensor({2, 0}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(splits.train->labels({1, 2}), torch::tensor({0, 2}, torch::kInt64)));
  EXPECT_EQ(dynamic_cast<const GlueDataset&>(*splits.train).truncated(), 1);
  EXPECT_THROW(splits.train->get_batch({3}, 0), DataError);
}

TEST(Glue, PairsOverridesAndSeededSplit) {
  GlueFixture f;
  // Columns in another order, a pair column, explicit paths.
  testing::write_text(f.dir.file("pairs.tsv"),
                      "idx\tlabel\tq\tp\n0\t1\tgood\tbad movie\n1\t0\tvery\tgood\n2\t1\tbad\tbad\n"
                      "3\t0\tgood\tgood\n");
  f.config.dir.clear();
  f.config.train_path = f.dir.file("pairs.tsv");
  f.config.text_column = "q";
  f.config.text_pair_column = "p";
  f.config.seq_len = 6;
  DatasetSplits splits = load_glue(f.config, f.shape, 1);
  EXPECT_FALSE(splits.eval);
  EXPECT_EQ(splits.train->num_classes(), 2);
  const Batch batch = splits.train->get_batch({0, 1}, 0);
  EXPECT_TRUE(torch::equal(batch.input_ids,
                           torch::tensor({{2, 4, 3, 5, 6, 3}, {2, 8, 3, 4, 3, 0}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.token_type_ids,
                           torch::tensor({{0, 0, 0, 1, 1, 1}, {0, 0, 0, 1, 1, 0}}, torch::kInt64)));

  // A seeded hold-out: same seed, same split; the two parts partition the rows.
  f.config.eval_split = 0.5;
  const DatasetSplits a = load_glue(f.config, f.shape, 7);
  const DatasetSplits b = load_glue(f.config, f.shape, 7);
  ASSERT_TRUE(a.eval);
  EXPECT_EQ(a.train->size(), 2);
  EXPECT_EQ(a.eval->size(), 2);
  EXPECT_TRUE(torch::equal(a.eval->get_batch({0, 1}, 0).input_ids,
                           b.eval->get_batch({0, 1}, 0).input_ids));
}

TEST(Glue, BadFilesNameTheFileAndLine) {
  GlueFixture f;
  const std::string path = f.dir.file("train.tsv");
  GlueColumns columns;

  testing::write_text(path, "text\tlabel\nhello\t1\n");
  std::string msg = error_message<DataError>([&] { read_glue_tsv(path, columns); });
  EXPECT_NE(msg.find(path + ":1: the header has no column 'sentence' (data.text_column)"),
            std::string::npos) << msg;

  testing::write_text(path, "sentence\tlabel\ngood\t1\nbad\tnegative\n");
  msg = error_message<DataError>([&] { read_glue_tsv(path, columns); });
  EXPECT_NE(msg.find(path + ":3: label 'negative'"), std::string::npos) << msg;

  testing::write_text(path, "sentence\tlabel\ngood\t-1\n");
  msg = error_message<DataError>([&] { read_glue_tsv(path, columns); });
  EXPECT_NE(msg.find(path + ":2: label '-1'"), std::string::npos) << msg;

  testing::write_text(path, "sentence\tlabel\ngood\t1\nbad\t0\textra\n");
  msg = error_message<DataError>([&] { read_glue_tsv(path, columns); });
  EXPECT_NE(msg.find(path + ":3: the row has 3 tab-separated columns but the header has 2"),
            std::string::npos) << msg;

  testing::write_text(path, "sentence\tlabel\ngo\xFFod\t1\n");
  msg = error_message<DataError>([&] { load_glue(f.config, f.shape, 1); });
  EXPECT_NE(msg.find(path + ":2: invalid UTF-8 at byte offset 2"), std::string::npos) << msg;

  // An eval label the training set never saw.
  testing::write_text(path, "sentence\tlabel\ngood\t1\nbad\t0\n");
  testing::write_text(f.dir.file("dev.tsv"), "sentence\tlabel\ngood\t5\n");
  msg = error_message<DataError>([&] { load_glue(f.config, f.shape, 1); });
  EXPECT_NE(msg.find("dev.tsv:2: label 5 is not a class"), std::string::npos) << msg;

  // The model's embedding must hold every vocabulary id.
  f.shape.vocab_size = 5;
  msg = error_message<ConfigError>([&] { load_glue(f.config, f.shape, 1); });
  EXPECT_NE(msg.find("model.vocab_size=5"), std::string::npos) << msg;
}

}  // namespace
}  // namespace pipet
