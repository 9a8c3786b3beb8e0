// Synthetic datasets that need no files and are learnable, for smoke tests,
// benchmarks and demos. Every sample is a pure function of (seed, split,
// index): nothing is stored per sample, and the same seed gives the same data
// on every machine. Labels are balanced: sample i has class i % num_classes.
#pragma once

#include "runtime/data/dataset.h"
#include "runtime/data/image_dataset.h"

#include <cstdint>
#include <string>
#include <vector>

namespace pipet {

// Train and eval draw their samples from different streams of the same seed;
// class prototypes (images) and signal tokens (text) are shared.
enum class Split : uint64_t { kTrain = 0, kEval = 1 };
std::string split_name(Split split);

// "synthetic-image": 32x32 RGB images. Each class has a smooth random
// prototype (a 5x5 grid of random colours per channel, bilinearly
// interpolated); a sample is its class prototype plus uniform per-pixel noise
// in [-64, 63], clamped to [0, 255].
class SyntheticImageDataset final : public ImageDataset {
 public:
  static constexpr int64_t kImageSize = 32;
  static constexpr int64_t kChannels = 3;

  // `transform` must describe 3 x 32 x 32 stored images.
  SyntheticImageDataset(int64_t num_classes, int64_t num_samples, uint64_t seed, Split split,
                        ImageTransform transform);

  int64_t size() const override { return num_samples_; }
  int64_t num_classes() const override { return num_classes_; }
  int64_t label(int64_t index) const override { return index % num_classes_; }

  // The noise-free prototype of `label` as uint8 [3,32,32].
  torch::Tensor prototype(int64_t label) const;

 protected:
  const uint8_t* pixels(int64_t index, uint8_t* scratch) const override;

 private:
  int64_t num_classes_;
  int64_t num_samples_;
  uint64_t seed_;
  Split split_;
  std::vector<uint8_t> prototypes_;  // [num_classes][3][32][32]
};

// "synthetic-text": token sequences for sequence classification.
//
// A sample is [CLS] tokens... [SEP], or for about half of the samples that
// have room a pair [CLS] A... [SEP] B... [SEP] whose B part and final [SEP]
// have token_type_ids 1. Its length is uniform in [max(3, seq_len/2),
// seq_len]; the rest is padding (id 0, attention mask 0, token type 0).
// Content tokens are filler, except that each position is, with probability
// 1/5, one of the sample's class signal tokens (at least one per sample).
//
// Vocabulary layout (ids < vocab_size): [PAD]=0; [CLS]/[SEP] = 101/102 as in
// BERT's uncased vocabulary when the vocabulary has room for it, else 1/2.
// The top num_classes*4 ids are signal tokens (4 per class, assigned to
// classes by a seeded permutation); filler ids lie between the special ids
// and the signal ids (from 1000 in a BERT-sized vocabulary, past [MASK]=103
// in one of a few hundred ids, from 3 in a tiny one).
class SyntheticTextDataset final : public Dataset {
 public:
  static constexpr int64_t kSignalsPerClass = 4;
  static constexpr int64_t kMinFiller = 16;

  // The smallest vocabulary that fits `num_classes` classes.
  static int64_t minimum_vocab_size(int64_t num_classes);

  // Requires vocab_size >= minimum_vocab_size(num_classes) and seq_len >= 3
  // (checked by make_datasets with the config keys).
  SyntheticTextDataset(int64_t num_classes, int64_t num_samples, int64_t seq_len,
                       int64_t vocab_size, uint64_t seed, Split split);

  std::string name() const override { return "synthetic-text"; }
  Modality modality() const override { return Modality::kText; }
  int64_t size() const override { return num_samples_; }
  int64_t num_classes() const override { return num_classes_; }
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override;

  int64_t label(int64_t index) const override { return index % num_classes_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t vocab_size() const { return vocab_size_; }
  int64_t pad_id() const { return 0; }
  int64_t cls_id() const { return cls_id_; }
  int64_t sep_id() const { return sep_id_; }
  // Filler ids are [filler_begin(), filler_end()).
  int64_t filler_begin() const { return filler_begin_; }
  int64_t filler_end() const { return filler_end_; }
  // The signal ids of class `label`.
  std::vector<int64_t> signal_tokens(int64_t label) const;

 private:
  // Writes one sample's seq_len ids, mask and token types.
  void render(int64_t index, int64_t* ids, int64_t* mask, int64_t* types) const;

  int64_t num_classes_;
  int64_t num_samples_;
  int64_t seq_len_;
  int64_t vocab_size_;
  uint64_t seed_;
  Split split_;
  int64_t cls_id_;
  int64_t sep_id_;
  int64_t filler_begin_;
  int64_t filler_end_;
  std::vector<int64_t> signals_;  // [num_classes][kSignalsPerClass]
};

}  // namespace pipet
