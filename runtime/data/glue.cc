#include "runtime/data/glue.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/strings.h"
#include "runtime/core/random.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <numeric>

namespace pipet {

namespace {

constexpr uint64_t kGlueSplitStream = 0x676c756573706c74ULL;  // "gluesplt"

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t tab = line.find('\t', start);
    if (tab == std::string::npos) {
      out.push_back(line.substr(start));
      return out;
    }
    out.push_back(line.substr(start, tab - start));
    start = tab + 1;
  }
}

size_t column_index(const std::vector<std::string>& header, const std::string& name,
                    const char* key, const std::string& path) {
  const auto it = std::find(header.begin(), header.end(), name);
  if (it == header.end())
    throw DataError(path + ":1: the header has no column '" + name + "' (" + key +
                    "); its columns are: " + join(header, ", "));
  return static_cast<size_t>(it - header.begin());
}

}  // namespace

GlueTable read_glue_tsv(const std::string& path, const GlueColumns& columns) {
  std::string text;
  try {
    text = read_file(path, "GLUE TSV file");
  } catch (const IoError& e) {
    throw DataError(e.what());
  }
  GlueTable table;
  table.path = path;
  std::vector<std::string> header;
  size_t text_col = 0, pair_col = 0, label_col = 0;
  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t newline = text.find('\n', pos);
    if (newline == std::string::npos) newline = text.size();
    std::string line = text.substr(pos, newline - pos);
    pos = newline + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = path + ":" + std::to_string(line_number);
    if (line_number == 1) {
      header = split_tabs(line);
      text_col = column_index(header, columns.text, "data.text_column", path);
      if (!columns.text_pair.empty())
        pair_col = column_index(header, columns.text_pair, "data.text_pair_column", path);
      label_col = column_index(header, columns.label, "data.label_column", path);
      continue;
    }
    if (line.empty()) continue;  // blank lines (a trailing one, typically)
    const std::vector<std::string> fields = split_tabs(line);
    if (fields.size() != header.size())
      throw DataError(where + ": the row has " + std::to_string(fields.size()) +
                      " tab-separated columns but the header has " +
                      std::to_string(header.size()) + " (" + join(header, ", ") + ")");
    const std::string label_text = trim(fields[label_col]);
    int64_t label = -1;
    const char* first = label_text.data();
    const char* last = first + label_text.size();
    const auto [end, ec] = std::from_chars(first, last, label);
    if (label_text.empty() || ec != std::errc() || end != last || label < 0)
      throw DataError(where + ": label '" + label_text + "' in column '" + columns.label +
                      "' is not a non-negative integer (class index)");
    table.text.push_back(fields[text_col]);
    if (!columns.text_pair.empty()) table.text_pair.push_back(fields[pair_col]);
    table.labels.push_back(label);
    table.lines.push_back(line_number);
  }
  if (header.empty()) throw DataError(path + ": the file is empty; expected a header line");
  return table;
}

// ------------------------------------------------------------- dataset ----

GlueDataset::GlueDataset(const GlueTable& table, const WordPieceTokenizer& tokenizer,
                         int64_t seq_len, int64_t num_classes, std::string split)
    : seq_len_(seq_len),
      num_classes_(num_classes),
      split_(std::move(split)),
      pad_id_(tokenizer.pad_id()) {
  const bool pairs = !table.text_pair.empty();
  const size_t n = table.labels.size();
  offsets_.reserve(n + 1);
  offsets_.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    const std::string where = table.path + ":" + std::to_string(table.lines[i]);
    if (table.labels[i] >= num_classes)
      throw DataError(where + ": label " + std::to_string(table.labels[i]) +
                      " is not a class of the training set (labels 0.." +
                      std::to_string(num_classes - 1) + ")");
    const std::vector<int32_t> a = tokenizer.encode_ids(table.text[i], where);
    std::vector<int32_t> b;
    if (pairs) b = tokenizer.encode_ids(table.text_pair[i], where);
    const EncodedInput in = tokenizer.encode(a, pairs ? &b : nullptr, seq_len);
    if (static_cast<size_t>(in.length) < a.size() + b.size() + (pairs ? 3 : 2)) ++truncated_;
    int32_t segment_b = static_cast<int32_t>(in.length);
    for (int64_t k = 0; k < in.length; ++k) {
      ids_.push_back(static_cast<int32_t>(in.input_ids[static_cast<size_t>(k)]));
      if (in.token_type_ids[static_cast<size_t>(k)] == 1 && segment_b == in.length)
        segment_b = static_cast<int32_t>(k);
    }
    offsets_.push_back(static_cast<int64_t>(ids_.size()));
    segment_b_.push_back(segment_b);
    labels_.push_back(table.labels[i]);
  }
}

std::vector<int32_t> GlueDataset::tokens(int64_t index) const {
  const auto i = static_cast<size_t>(index);
  return {ids_.begin() + offsets_.at(i), ids_.begin() + offsets_.at(i + 1)};
}

Batch GlueDataset::get_batch(const std::vector<int64_t>& indices, int64_t /*epoch*/) const {
  const auto batch_size = static_cast<int64_t>(indices.size());
  for (int64_t index : indices)
    if (index < 0 || index >= size())
      throw DataError("sample index " + std::to_string(index) + " is outside the " + split_ +
                      " split of dataset 'glue' (" + std::to_string(size()) + " samples)");
  Batch batch;
  batch.input_ids = torch::full({batch_size, seq_len_}, static_cast<int64_t>(pad_id_), torch::kInt64);
  batch.attention_mask = torch::zeros({batch_size, seq_len_}, torch::kInt64);
  batch.token_type_ids = torch::zeros({batch_size, seq_len_}, torch::kInt64);
  batch.labels = torch::empty({batch_size}, torch::kInt64);
  batch.sample_ids = torch::empty({batch_size}, torch::kInt64);
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* mask = batch.attention_mask.data_ptr<int64_t>();
  int64_t* types = batch.token_type_ids.data_ptr<int64_t>();
  for (int64_t row = 0; row < batch_size; ++row) {
    const auto index = static_cast<size_t>(indices[static_cast<size_t>(row)]);
    const int64_t begin = offsets_[index];
    const int64_t length = offsets_[index + 1] - begin;
    for (int64_t k = 0; k < length; ++k) {
      ids[row * seq_len_ + k] = ids_[static_cast<size_t>(begin + k)];
      mask[row * seq_len_ + k] = 1;
      types[row * seq_len_ + k] = k >= segment_b_[index] ? 1 : 0;
    }
    batch.labels.data_ptr<int64_t>()[row] = labels_[index];
    batch.sample_ids.data_ptr<int64_t>()[row] = static_cast<int64_t>(index);
  }
  return batch;
}

// -------------------------------------------------------------- shared ----

WordPieceTokenizer load_text_tokenizer(const DataConfig& config, const DataShape& shape) {
  if (shape.vocab_size < 1)
    throw ConfigError("data.dataset '" + config.dataset +
                      "' is a text dataset, but the model takes no tokens: pick a BERT "
                      "model.preset");
  if (config.vocab_file.empty())
    throw ConfigError("data.dataset '" + config.dataset +
                      "' needs data.vocab_file: the WordPiece vocab.txt of the model");
  if (shape.max_seq_len > 0 && config.seq_len > shape.max_seq_len)
    throw ConfigError("data.seq_len=" + std::to_string(config.seq_len) +
                      " exceeds the model's maximum sequence length " +
                      std::to_string(shape.max_seq_len) +
                      " (model.max_position_embeddings): lower data.seq_len");
  WordPieceTokenizer tokenizer = WordPieceTokenizer::from_file(config.vocab_file, config.lowercase);
  if (tokenizer.vocab_size() > shape.vocab_size)
    throw ConfigError("data.vocab_file " + config.vocab_file + " has " +
                      std::to_string(tokenizer.vocab_size()) +
                      " tokens but the model's embedding has model.vocab_size=" +
                      std::to_string(shape.vocab_size) +
                      " rows: set model.vocab_size to at least the vocabulary size");
  return tokenizer;
}

std::vector<bool> seeded_holdout(int64_t n, double fraction, uint64_t seed, uint64_t stream) {
  std::vector<bool> held(static_cast<size_t>(n), false);
  if (fraction <= 0 || n < 2) return held;
  auto count = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  count = std::clamp<int64_t>(count, 1, n - 1);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(derive_key(seed, {stream}));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  for (int64_t i = 0; i < count; ++i) held[static_cast<size_t>(order[static_cast<size_t>(i)])] = true;
  return held;
}

std::string text_data_file(const DataConfig& config, const std::string& override_path,
                           const std::string& name) {
  if (!override_path.empty()) return override_path;
  return (std::filesystem::path(config.dir) / name).string();
}

// ---------------------------------------------------------------- load ----

DatasetSplits load_glue(const DataConfig& config, const DataShape& shape, uint64_t seed) {
  const WordPieceTokenizer tokenizer = load_text_tokenizer(config, shape);
  GlueColumns columns;
  columns.text = config.text_column;
  columns.text_pair = config.text_pair_column;
  columns.label = config.label_column;
  const int64_t specials = columns.text_pair.empty() ? 2 : 3;
  if (config.seq_len < specials + 1)
    throw ConfigError("data.seq_len " + std::to_string(config.seq_len) + " is too short: " +
                      (specials == 3 ? "[CLS] a [SEP] b [SEP]" : "[CLS] text [SEP]") +
                      " needs at least " + std::to_string(specials + 1));

  const std::string train_path = text_data_file(config, config.train_path, "train.tsv");
  GlueTable train = read_glue_tsv(train_path, columns);
  if (train.labels.empty()) throw DataError(train_path + ": no rows after the header");

  std::string eval_source;
  GlueTable eval;
  if (config.eval_split > 0) {
    const std::vector<bool> held =
        seeded_holdout(static_cast<int64_t>(train.labels.size()), config.eval_split, seed,
                       kGlueSplitStream);
    GlueTable kept;
    kept.path = eval.path = train.path;
    for (size_t i = 0; i < held.size(); ++i) {
      GlueTable& to = held[i] ? eval : kept;
      to.text.push_back(train.text[i]);
      if (!train.text_pair.empty()) to.text_pair.push_back(train.text_pair[i]);
      to.labels.push_back(train.labels[i]);
      to.lines.push_back(train.lines[i]);
    }
    train = std::move(kept);
    eval_source = fmt::format("a seeded {} hold-out of {}", config.eval_split, train_path);
  } else {
    std::string eval_path = config.eval_path;
    if (eval_path.empty() && !config.dir.empty() && path_exists(text_data_file(config, "", "dev.tsv")))
      eval_path = text_data_file(config, "", "dev.tsv");
    if (!eval_path.empty()) {
      eval = read_glue_tsv(eval_path, columns);
      eval_source = eval_path;
    }
  }

  const int64_t num_classes = *std::max_element(train.labels.begin(), train.labels.end()) + 1;
  DatasetSplits splits;
  auto train_set = std::make_shared<GlueDataset>(train, tokenizer, config.seq_len, num_classes, "train");
  splits.train = train_set;
  int64_t truncated = train_set->truncated();
  if (!eval_source.empty()) {
    auto eval_set = std::make_shared<GlueDataset>(eval, tokenizer, config.seq_len, num_classes, "eval");
    truncated += eval_set->truncated();
    splits.eval = eval_set;
  }
  spdlog::info("[data] glue: {} train samples from {}, {} eval samples{}{}, {} classes, "
               "vocabulary {} ({} tokens), seq_len {}, {} samples truncated",
               splits.train->size(), train_path, splits.eval ? splits.eval->size() : 0,
               eval_source.empty() ? "" : " from ", eval_source, num_classes, config.vocab_file,
               tokenizer.vocab_size(), config.seq_len, truncated);
  return splits;
}

}  // namespace pipet
