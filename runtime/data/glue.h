// GLUE sequence classification from its TSV files (SST-2 layout: data.dir
// holds train.tsv and dev.tsv, a header line names the columns, rows are
// tab-separated without quoting). Texts are tokenised once at load with the
// model's WordPiece vocabulary and stored as truncated id sequences, so a
// batch only copies ids and pads.
#pragma once

#include "runtime/data/dataset.h"
#include "runtime/data/wordpiece.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

struct GlueColumns {
  std::string text = "sentence";
  std::string text_pair;  // empty = single-text task
  std::string label = "label";
};

// The rows of one TSV file as text.
struct GlueTable {
  std::string path;
  std::vector<std::string> text;
  std::vector<std::string> text_pair;  // empty unless columns.text_pair is set
  std::vector<int64_t> labels;
  std::vector<int64_t> lines;  // 1-based line number of each row, for errors
};

// Reads a GLUE TSV. DataError naming path:line for: a missing file, no
// header, a column named in `columns` that the header lacks (the config key
// and the header's columns are listed), a row with a different column count
// than the header, a label that is not a non-negative integer.
GlueTable read_glue_tsv(const std::string& path, const GlueColumns& columns);

class GlueDataset final : public Dataset {
 public:
  // Tokenises `table`; `split` is "train" or "eval" (for names and errors).
  GlueDataset(const GlueTable& table, const WordPieceTokenizer& tokenizer, int64_t seq_len,
              int64_t num_classes, std::string split);

  std::string name() const override { return "glue"; }
  Modality modality() const override { return Modality::kText; }
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t num_classes() const override { return num_classes_; }
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override;
  int64_t label(int64_t index) const override { return labels_.at(static_cast<size_t>(index)); }

  int64_t seq_len() const { return seq_len_; }
  // Samples that did not fit data.seq_len and were truncated.
  int64_t truncated() const { return truncated_; }
  // The sample's tokens before padding ([CLS] ... [SEP]).
  std::vector<int32_t> tokens(int64_t index) const;

 private:
  int64_t seq_len_;
  int64_t num_classes_;
  std::string split_;
  int32_t pad_id_;
  std::vector<int32_t> ids_;         // all samples' tokens, back to back
  std::vector<int64_t> offsets_;     // sample i is ids_[offsets_[i], offsets_[i+1])
  std::vector<int32_t> segment_b_;   // position where token type 1 starts (= length if none)
  std::vector<int64_t> labels_;
  int64_t truncated_ = 0;
};

// Shared by the text datasets (glue, squad).
// The tokenizer of data.vocab_file / data.lowercase. ConfigError when the
// model cannot take its ids (vocabulary larger than model.vocab_size) or
// data.seq_len exceeds the model's positions; DataError for the file.
WordPieceTokenizer load_text_tokenizer(const DataConfig& config, const DataShape& shape);
// A seeded hold-out of round(fraction * n) of n items (at least 1 when
// fraction > 0, never all): true marks an evaluation item.
std::vector<bool> seeded_holdout(int64_t n, double fraction, uint64_t seed, uint64_t stream);
// The standard file `name` under data.dir, or `override_path` when set.
std::string text_data_file(const DataConfig& config, const std::string& override_path,
                           const std::string& name);

// data.dataset = "glue": train from data.train_path or data.dir/train.tsv;
// eval from data.eval_path, a seeded data.eval_split hold-out, or
// data.dir/dev.tsv when it exists. num_classes = 1 + the largest train label.
DatasetSplits load_glue(const DataConfig& config, const DataShape& shape, uint64_t seed);

}  // namespace pipet
