#include "runtime/data/squad.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/data/glue.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace pipet {

namespace {

using nlohmann::json;

constexpr uint64_t kSquadSplitStream = 0x7371756164737074ULL;  // "squadspt"

// Typed access to one JSON node; errors name the file and the JSON path.
class Node {
 public:
  Node(const json& value, std::string path, const std::string& file)
      : value_(value), path_(std::move(path)), file_(file) {}

  Node field(const char* name, json::value_t type, const char* expected) const {
    if (!value_.is_object()) fail(path_, "must be an object, got " + std::string(value_.type_name()));
    const std::string child = path_.empty() ? name : path_ + "." + name;
    const auto it = value_.find(name);
    if (it == value_.end()) fail(child, "is missing");
    const bool ok = type == json::value_t::number_integer ? it->is_number_integer()
                                                          : it->type() == type;
    if (!ok) fail(child, std::string("must be ") + expected + ", got " + it->type_name());
    return Node(*it, child, file_);
  }
  Node at(size_t i) const { return Node(value_[i], path_ + "[" + std::to_string(i) + "]", file_); }
  size_t size() const { return value_.size(); }
  std::string str() const { return value_.get<std::string>(); }
  int64_t integer() const { return value_.get<int64_t>(); }
  const std::string& path() const { return path_; }

  [[noreturn]] void fail(const std::string& path, const std::string& problem) const {
    throw DataError(file_ + ": " + path + " " + problem);
  }

 private:
  const json& value_;
  std::string path_;
  const std::string& file_;
};

std::pair<size_t, size_t> line_column(const std::string& text, size_t byte) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

std::string shorten(const std::string& text) {
  constexpr size_t kMax = 60;
  return text.size() <= kMax ? text : text.substr(0, kMax) + "...";
}

}  // namespace

std::vector<SquadParagraph> read_squad_json(const std::string& path) {
  std::string text;
  try {
    text = read_file(path, "SQuAD JSON file");
  } catch (const IoError& e) {
    throw DataError(e.what());
  }
  json document;
  try {
    document = json::parse(text);
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_column(text, e.byte > 0 ? e.byte - 1 : 0);
    throw DataError(path + ":" + std::to_string(line) + ":" + std::to_string(column) +
                    ": invalid JSON (" + e.what() + ")");
  }
  const Node root(document, "", path);
  const Node data = root.field("data", json::value_t::array, "an array of articles");
  std::vector<SquadParagraph> out;
  for (size_t a = 0; a < data.size(); ++a) {
    const Node paragraphs = data.at(a).field("paragraphs", json::value_t::array, "an array");
    for (size_t p = 0; p < paragraphs.size(); ++p) {
      const Node para = paragraphs.at(p);
      SquadParagraph paragraph;
      paragraph.context = para.field("context", json::value_t::string, "a string").str();
      const std::u32string context = decode_utf8(paragraph.context, path + ": " + para.path() + ".context");
      const Node qas = para.field("qas", json::value_t::array, "an array");
      for (size_t q = 0; q < qas.size(); ++q) {
        const Node qa = qas.at(q);
        SquadQuestion question;
        question.id = qa.field("id", json::value_t::string, "a string").str();
        question.question = qa.field("question", json::value_t::string, "a string").str();
        const Node answers = qa.field("answers", json::value_t::array, "an array");
        if (answers.size() == 0)
          answers.fail(answers.path(), "is empty (question '" + question.id +
                                           "'); SQuAD v1.1 questions have at least one answer");
        for (size_t k = 0; k < answers.size(); ++k) {
          const Node answer = answers.at(k);
          SquadAnswer gold;
          gold.text = answer.field("text", json::value_t::string, "a string").str();
          gold.start =
              answer.field("answer_start", json::value_t::number_integer, "an integer").integer();
          const std::u32string expected =
              decode_utf8(gold.text, path + ": " + answer.path() + ".text");
          const auto length = static_cast<int64_t>(expected.size());
          const auto context_size = static_cast<int64_t>(context.size());
          const bool inside = gold.start >= 0 && gold.start + length <= context_size;
          if (!inside || context.compare(static_cast<size_t>(gold.start),
                                         static_cast<size_t>(length), expected) != 0) {
            std::string found = "beyond the end of the context";
            if (gold.start >= 0 && gold.start < context_size)
              found = "'" + shorten(encode_utf8(context.substr(
                                static_cast<size_t>(gold.start), static_cast<size_t>(length)))) + "'";
            throw DataError(path + ": question '" + question.id + "' (" + answer.path() +
                            "): answer text '" + shorten(gold.text) +
                            "' does not match the context at answer_start " +
                            std::to_string(gold.start) + " (the context there reads " + found +
                            ")");
          }
          question.answers.push_back(std::move(gold));
        }
        paragraph.questions.push_back(std::move(question));
      }
      out.push_back(std::move(paragraph));
    }
  }
  return out;
}

// ------------------------------------------------------------- dataset ----

SquadDataset::SquadDataset(const std::vector<SquadParagraph>& paragraphs,
                           const WordPieceTokenizer& tokenizer, const SquadWindowSpec& spec,
                           std::string split, std::string source)
    : spec_(spec),
      split_(std::move(split)),
      cls_id_(tokenizer.cls_id()),
      sep_id_(tokenizer.sep_id()),
      pad_id_(tokenizer.pad_id()) {
  const int64_t max_doc_min = spec.seq_len - spec.max_query_len - 3;
  PIPET_CHECK(max_doc_min >= 1 && spec.doc_stride >= 1 && spec.doc_stride <= max_doc_min,
              "squad window spec (checked by load_squad)");
  question_offset_.push_back(0);
  for (const SquadParagraph& para : paragraphs) {
    Paragraph stored;
    stored.context = decode_utf8(para.context, source);
    stored.tokens = tokenizer.tokenize(std::u32string_view(stored.context));
    const auto paragraph_index = static_cast<int32_t>(paragraphs_.size());
    const auto num_tokens = static_cast<int64_t>(stored.tokens.size());
    for (const SquadQuestion& q : para.questions) {
      Example example;
      example.id = q.id;
      example.paragraph = paragraph_index;
      for (const SquadAnswer& a : q.answers) example.answers.push_back(a.text);
      std::vector<int32_t> query = tokenizer.encode_ids(q.question, source + ": question '" + q.id + "'");
      if (static_cast<int64_t>(query.size()) > spec.max_query_len)
        query.resize(static_cast<size_t>(spec.max_query_len));
      question_ids_.insert(question_ids_.end(), query.begin(), query.end());
      question_offset_.push_back(static_cast<int64_t>(question_ids_.size()));

      // The first answer's token span (HF trains on the first answer).
      const std::u32string answer = decode_utf8(q.answers.front().text, source);
      const int64_t char_begin = q.answers.front().start;
      const int64_t char_end = char_begin + static_cast<int64_t>(answer.size());
      int64_t tok_start = -1, tok_end = -1;
      for (int64_t t = 0; t < num_tokens; ++t) {
        const Token& token = stored.tokens[static_cast<size_t>(t)];
        if (token.end > char_begin && token.begin < char_end) {
          if (tok_start < 0) tok_start = t;
          tok_end = t;
        }
      }

      const auto query_length = static_cast<int32_t>(query.size());
      const int64_t max_doc = spec.seq_len - query_length - 3;
      example.first_window = static_cast<int64_t>(windows_.size());
      for (int64_t start = 0;; start += spec.doc_stride) {
        Window w;
        w.example = static_cast<int32_t>(examples_.size());
        w.doc_start = static_cast<int32_t>(start);
        w.doc_length = static_cast<int32_t>(std::min(num_tokens - start, max_doc));
        w.query_length = query_length;
        if (tok_start >= start && tok_end >= 0 && tok_end < start + w.doc_length) {
          w.start_label = static_cast<int32_t>(tok_start - start + w.context_offset());
          w.end_label = static_cast<int32_t>(tok_end - start + w.context_offset());
        }
        windows_.push_back(w);
        if (start + w.doc_length >= num_tokens) break;
      }
      example.num_windows = static_cast<int64_t>(windows_.size()) - example.first_window;
      examples_.push_back(std::move(example));
    }
    paragraphs_.push_back(std::move(stored));
  }
}

int64_t SquadDataset::label(int64_t index) const {
  return window(index).start_label;
}

torch::Tensor SquadDataset::labels(const std::vector<int64_t>& indices) const {
  torch::Tensor out = torch::empty({static_cast<int64_t>(indices.size()), 2}, torch::kInt64);
  int64_t* data = out.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) {
    const int64_t index = indices[i];
    if (index < 0 || index >= size())
      throw DataError("sample index " + std::to_string(index) + " is outside the " + split_ +
                      " split of dataset 'squad' (" + std::to_string(size()) + " windows)");
    data[2 * i] = windows_[static_cast<size_t>(index)].start_label;
    data[2 * i + 1] = windows_[static_cast<size_t>(index)].end_label;
  }
  return out;
}

Batch SquadDataset::get_batch(const std::vector<int64_t>& indices, int64_t /*epoch*/) const {
  const auto batch_size = static_cast<int64_t>(indices.size());
  const int64_t seq = spec_.seq_len;
  Batch batch;
  batch.labels = labels(indices);  // validates the indices
  batch.input_ids = torch::full({batch_size, seq}, static_cast<int64_t>(pad_id_), torch::kInt64);
  batch.attention_mask = torch::zeros({batch_size, seq}, torch::kInt64);
  batch.token_type_ids = torch::zeros({batch_size, seq}, torch::kInt64);
  batch.sample_ids = torch::tensor(indices, torch::kInt64);
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* mask = batch.attention_mask.data_ptr<int64_t>();
  int64_t* types = batch.token_type_ids.data_ptr<int64_t>();
  for (int64_t row = 0; row < batch_size; ++row) {
    const Window& w = windows_[static_cast<size_t>(indices[static_cast<size_t>(row)])];
    const Paragraph& para = paragraphs_[static_cast<size_t>(examples_[static_cast<size_t>(w.example)].paragraph)];
    int64_t* out = ids + row * seq;
    int64_t pos = 0;
    out[pos++] = cls_id_;
    const int64_t q_begin = question_offset_[static_cast<size_t>(w.example)];
    for (int32_t k = 0; k < w.query_length; ++k) out[pos++] = question_ids_[static_cast<size_t>(q_begin + k)];
    out[pos++] = sep_id_;
    const int64_t context_from = pos;
    for (int32_t k = 0; k < w.doc_length; ++k)
      out[pos++] = para.tokens[static_cast<size_t>(w.doc_start + k)].id;
    out[pos++] = sep_id_;
    for (int64_t k = 0; k < pos; ++k) mask[row * seq + k] = 1;
    for (int64_t k = context_from; k < pos; ++k) types[row * seq + k] = 1;
  }
  return batch;
}

bool SquadDataset::is_max_context(int64_t window_index, int32_t doc_token) const {
  const Window& target = window(window_index);
  const Example& ex = examples_[static_cast<size_t>(target.example)];
  double best_score = -1.0;
  int64_t best = -1;
  for (int64_t i = ex.first_window; i < ex.first_window + ex.num_windows; ++i) {
    const Window& w = windows_[static_cast<size_t>(i)];
    const int32_t last = w.doc_start + w.doc_length - 1;
    if (doc_token < w.doc_start || doc_token > last) continue;
    const int32_t left = doc_token - w.doc_start;
    const int32_t right = last - doc_token;
    const double score = std::min(left, right) + 0.01 * w.doc_length;
    if (best < 0 || score > best_score) {
      best_score = score;
      best = i;
    }
  }
  return best == window_index;
}

std::pair<int32_t, int32_t> SquadDataset::token_chars(int64_t example_index, int32_t doc_token) const {
  const Paragraph& para = paragraphs_[static_cast<size_t>(example(example_index).paragraph)];
  const Token& t = para.tokens.at(static_cast<size_t>(doc_token));
  return {t.begin, t.end};
}

std::string SquadDataset::context_text(int64_t example_index, int32_t begin, int32_t end) const {
  const Paragraph& para = paragraphs_[static_cast<size_t>(example(example_index).paragraph)];
  const auto size = static_cast<int32_t>(para.context.size());
  begin = std::clamp(begin, 0, size);
  end = std::clamp(end, begin, size);
  return encode_utf8(std::u32string_view(para.context).substr(static_cast<size_t>(begin),
                                                               static_cast<size_t>(end - begin)));
}

// ---------------------------------------------------------------- load ----

DatasetSplits load_squad(const DataConfig& config, const DataShape& shape, uint64_t seed) {
  const WordPieceTokenizer tokenizer = load_text_tokenizer(config, shape);
  SquadWindowSpec spec;
  spec.seq_len = config.seq_len;
  spec.doc_stride = config.doc_stride;
  spec.max_query_len = config.max_query_len;
  const int64_t room = config.seq_len - config.max_query_len - 3;
  if (room < 1)
    throw ConfigError("data.max_query_len " + std::to_string(config.max_query_len) +
                      " leaves no room for context in data.seq_len " +
                      std::to_string(config.seq_len) +
                      " ([CLS] question [SEP] context [SEP]); lower it or raise data.seq_len");
  if (config.doc_stride > room)
    throw ConfigError("data.doc_stride " + std::to_string(config.doc_stride) +
                      " is longer than the shortest context window (" + std::to_string(room) +
                      " tokens = data.seq_len - data.max_query_len - 3), so context tokens would "
                      "fall between windows; lower data.doc_stride");

  const std::string train_path = text_data_file(config, config.train_path, "train-v1.1.json");
  std::vector<SquadParagraph> train = read_squad_json(train_path);
  std::vector<SquadParagraph> eval;
  std::string eval_source;
  if (config.eval_split > 0) {
    int64_t questions = 0;
    for (const auto& p : train) questions += static_cast<int64_t>(p.questions.size());
    const std::vector<bool> held = seeded_holdout(questions, config.eval_split, seed, kSquadSplitStream);
    std::vector<SquadParagraph> kept;
    size_t q_index = 0;
    for (const auto& p : train) {
      SquadParagraph to_train{p.context, {}}, to_eval{p.context, {}};
      for (const auto& q : p.questions) (held[q_index++] ? to_eval : to_train).questions.push_back(q);
      if (!to_train.questions.empty()) kept.push_back(std::move(to_train));
      if (!to_eval.questions.empty()) eval.push_back(std::move(to_eval));
    }
    train = std::move(kept);
    eval_source = fmt::format("a seeded {} hold-out of {}", config.eval_split, train_path);
  } else {
    std::string eval_path = config.eval_path;
    if (eval_path.empty() && !config.dir.empty() &&
        path_exists(text_data_file(config, "", "dev-v1.1.json")))
      eval_path = text_data_file(config, "", "dev-v1.1.json");
    if (!eval_path.empty()) {
      eval = read_squad_json(eval_path);
      eval_source = eval_path;
    }
  }

  DatasetSplits splits;
  auto train_set = std::make_shared<SquadDataset>(train, tokenizer, spec, "train", train_path);
  if (train_set->num_examples() == 0) throw DataError(train_path + ": no questions");
  splits.train = train_set;
  if (!eval_source.empty())
    splits.eval = std::make_shared<SquadDataset>(eval, tokenizer, spec, "eval", eval_source);
  const auto* eval_set = dynamic_cast<const SquadDataset*>(splits.eval.get());
  spdlog::info("[data] squad: {} train questions in {} windows from {}; {} eval questions in {} "
               "windows{}{}; seq_len {}, doc_stride {}, max_query_len {}, vocabulary {} ({} tokens)",
               train_set->num_examples(), train_set->size(), train_path,
               eval_set ? eval_set->num_examples() : 0, eval_set ? eval_set->size() : 0,
               eval_source.empty() ? "" : " from ", eval_source, spec.seq_len, spec.doc_stride,
               spec.max_query_len, config.vocab_file, tokenizer.vocab_size());
  return splits;
}

}  // namespace pipet
