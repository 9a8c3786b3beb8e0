// SQuAD v1.1 extractive question answering from the official JSON files
// (data.dir holds train-v1.1.json and dev-v1.1.json; data.train_path /
// data.eval_path override them; data.eval_split holds out whole questions).
//
// Features follow Hugging Face's run_squad recipe: the question is cut to
// data.max_query_len tokens; the context is tokenised once with character
// offsets and cut into windows of seq_len - question - 3 tokens whose starts
// are data.doc_stride tokens apart; every window is one sample
// [CLS] question [SEP] context window [SEP] (token type 1 from the context
// on). The label of a window is its (start, end) token position of the first
// gold answer, or (0, 0) = [CLS] when the answer is not inside the window.
#pragma once

#include "runtime/data/dataset.h"
#include "runtime/data/wordpiece.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

struct SquadAnswer {
  std::string text;
  int64_t start = 0;  // codepoint offset into the context (answer_start)
};

struct SquadQuestion {
  std::string id;
  std::string question;
  std::vector<SquadAnswer> answers;
};

struct SquadParagraph {
  std::string context;
  std::vector<SquadQuestion> questions;
};

// Parses a SQuAD v1.1 JSON file. DataError naming the file and the JSON path
// ("data[3].paragraphs[0].qas[2].answers") for a missing or mistyped field,
// an empty answer list, invalid JSON (with line and column), and an answer
// whose text is not found in the context at answer_start (naming the
// question id).
std::vector<SquadParagraph> read_squad_json(const std::string& path);

struct SquadWindowSpec {
  int64_t seq_len = 384;
  int64_t doc_stride = 128;
  int64_t max_query_len = 64;
};

class SquadDataset final : public Dataset {
 public:
  // One example (question) and where its windows are.
  struct Example {
    std::string id;
    int32_t paragraph = 0;
    int64_t first_window = 0;
    int64_t num_windows = 0;
    std::vector<std::string> answers;  // gold texts
  };
  // One sample: a window of a paragraph's context tokens.
  struct Window {
    int32_t example = 0;
    int32_t doc_start = 0;   // first context token of the window
    int32_t doc_length = 0;  // context tokens in the window
    int32_t query_length = 0;
    int32_t start_label = 0;  // token positions in the sequence; 0 = not here
    int32_t end_label = 0;
    // Sequence position of the first context token.
    int32_t context_offset() const { return query_length + 2; }
  };

  SquadDataset(const std::vector<SquadParagraph>& paragraphs, const WordPieceTokenizer& tokenizer,
               const SquadWindowSpec& spec, std::string split, std::string source);

  std::string name() const override { return "squad"; }
  Modality modality() const override { return Modality::kText; }
  int64_t size() const override { return static_cast<int64_t>(windows_.size()); }
  // The span head scores every token twice (start, end): HF's num_labels 2.
  int64_t num_classes() const override { return 2; }
  // Labels are int64 [B,2] (start, end) token positions.
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override;
  // The start position; labels() gives both columns.
  int64_t label(int64_t index) const override;
  torch::Tensor labels(const std::vector<int64_t>& indices) const override;

  int64_t seq_len() const { return spec_.seq_len; }
  const SquadWindowSpec& spec() const { return spec_; }
  int64_t num_examples() const { return static_cast<int64_t>(examples_.size()); }
  const Example& example(int64_t index) const { return examples_.at(static_cast<size_t>(index)); }
  const Window& window(int64_t index) const { return windows_.at(static_cast<size_t>(index)); }
  // Whether context token `doc_token` has its most context (Hugging Face's
  // _check_is_max_context) in window `window_index` among its example's windows.
  bool is_max_context(int64_t window_index, int32_t doc_token) const;
  // Codepoint span [begin, end) in the context of context token `doc_token`.
  std::pair<int32_t, int32_t> token_chars(int64_t example_index, int32_t doc_token) const;
  // The context text of codepoints [begin, end) of the example's paragraph.
  std::string context_text(int64_t example_index, int32_t begin, int32_t end) const;

 private:
  struct Paragraph {
    std::u32string context;
    std::vector<Token> tokens;
  };

  SquadWindowSpec spec_;
  std::string split_;
  int32_t cls_id_;
  int32_t sep_id_;
  int32_t pad_id_;
  std::vector<Paragraph> paragraphs_;
  std::vector<Example> examples_;
  std::vector<int32_t> question_ids_;     // all questions' tokens back to back
  std::vector<int64_t> question_offset_;  // per example, into question_ids_
  std::vector<Window> windows_;
};

// data.dataset = "squad".
DatasetSplits load_squad(const DataConfig& config, const DataShape& shape, uint64_t seed);

}  // namespace pipet
