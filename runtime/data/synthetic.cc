#include "runtime/data/synthetic.h"

#include "runtime/core/errors.h"
#include "runtime/core/random.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

namespace pipet {

namespace {

// Words that separate class-level streams from the per-sample ones.
constexpr uint64_t kPrototypeStream = 0x70726f746fULL;
constexpr uint64_t kSignalStream = 0x7369676e616cULL;

// Prototype geometry: a (kGrid+1)^2 lattice of control points, kCell pixels apart.
constexpr int64_t kCell = 8;
constexpr int64_t kGrid = SyntheticImageDataset::kImageSize / kCell;

}  // namespace

std::string split_name(Split split) { return split == Split::kTrain ? "train" : "eval"; }

// ---------------------------------------------------------------- images ----

SyntheticImageDataset::SyntheticImageDataset(int64_t num_classes, int64_t num_samples,
                                             uint64_t seed, Split split,
                                             ImageTransform transform)
    : ImageDataset("synthetic-image", split_name(split), std::move(transform)),
      num_classes_(num_classes),
      num_samples_(num_samples),
      seed_(seed),
      split_(split) {
  PIPET_CHECK(num_classes >= 1 && num_samples >= 0, "synthetic image dataset size");
  const ImageTransform& t = this->transform();
  PIPET_CHECK(t.channels == kChannels && t.height == kImageSize && t.width == kImageSize,
              "synthetic images are stored as 3x32x32");
  constexpr int64_t plane = kImageSize * kImageSize;
  prototypes_.resize(static_cast<size_t>(num_classes * kChannels * plane));
  for (int64_t c = 0; c < num_classes; ++c) {
    Rng rng(derive_key(seed, {static_cast<uint64_t>(StreamTag::kSyntheticImage),
                              kPrototypeStream, static_cast<uint64_t>(c)}));
    for (int64_t ch = 0; ch < kChannels; ++ch) {
      int64_t lattice[kGrid + 1][kGrid + 1];
      for (auto& row : lattice)
        for (auto& v : row) v = rng.uniform_int(16, 239);
      uint8_t* out = prototypes_.data() + (c * kChannels + ch) * plane;
      // Integer bilinear interpolation: identical on every platform.
      for (int64_t y = 0; y < kImageSize; ++y) {
        const int64_t gy = y / kCell, fy = y % kCell;
        for (int64_t x = 0; x < kImageSize; ++x) {
          const int64_t gx = x / kCell, fx = x % kCell;
          const int64_t sum = lattice[gy][gx] * (kCell - fy) * (kCell - fx) +
                              lattice[gy][gx + 1] * (kCell - fy) * fx +
                              lattice[gy + 1][gx] * fy * (kCell - fx) +
                              lattice[gy + 1][gx + 1] * fy * fx;
          constexpr int64_t denom = kCell * kCell;
          out[y * kImageSize + x] = static_cast<uint8_t>((sum + denom / 2) / denom);
        }
      }
    }
  }
}

torch::Tensor SyntheticImageDataset::prototype(int64_t label) const {
  PIPET_CHECK(label >= 0 && label < num_classes_, "label " + std::to_string(label));
  constexpr int64_t bytes = kChannels * kImageSize * kImageSize;
  torch::Tensor image = torch::empty({kChannels, kImageSize, kImageSize}, torch::kUInt8);
  std::memcpy(image.data_ptr<uint8_t>(), prototypes_.data() + label * bytes, bytes);
  return image;
}

const uint8_t* SyntheticImageDataset::pixels(int64_t index, uint8_t* scratch) const {
  constexpr int64_t bytes = kChannels * kImageSize * kImageSize;
  const uint8_t* proto = prototypes_.data() + label(index) * bytes;
  Rng rng(derive_key(seed_, {static_cast<uint64_t>(StreamTag::kSyntheticImage),
                             static_cast<uint64_t>(split_), static_cast<uint64_t>(index)}));
  // Eight noise bytes per draw; byte/2 - 64 is exactly uniform on [-64, 63].
  for (int64_t i = 0; i < bytes; i += 8) {
    uint64_t bits = rng.next_u64();
    for (int64_t k = 0; k < 8; ++k, bits >>= 8) {
      const int noise = static_cast<int>(bits & 0xFF) / 2 - 64;
      scratch[i + k] = static_cast<uint8_t>(std::clamp(proto[i + k] + noise, 0, 255));
    }
  }
  return scratch;
}

// ------------------------------------------------------------------ text ----

namespace {

int64_t signal_count(int64_t num_classes) {
  return num_classes * SyntheticTextDataset::kSignalsPerClass;
}

// Ids of BERT's uncased vocabulary: [CLS], [SEP], [MASK], first ordinary token.
constexpr int64_t kBertCls = 101;
constexpr int64_t kBertSep = 102;
constexpr int64_t kBertFirstAfterMask = 104;
constexpr int64_t kBertFirstWord = 1000;
// The tiny layout: [PAD]=0, [CLS]=1, [SEP]=2, filler from 3.
constexpr int64_t kTinyFirstFiller = 3;

}  // namespace

int64_t SyntheticTextDataset::minimum_vocab_size(int64_t num_classes) {
  return kTinyFirstFiller + kMinFiller + signal_count(num_classes);
}

SyntheticTextDataset::SyntheticTextDataset(int64_t num_classes, int64_t num_samples,
                                           int64_t seq_len, int64_t vocab_size, uint64_t seed,
                                           Split split)
    : num_classes_(num_classes),
      num_samples_(num_samples),
      seq_len_(seq_len),
      vocab_size_(vocab_size),
      seed_(seed),
      split_(split) {
  PIPET_CHECK(num_classes >= 1 && num_samples >= 0, "synthetic text dataset size");
  PIPET_CHECK(seq_len >= 3, "seq_len " + std::to_string(seq_len));
  PIPET_CHECK(vocab_size >= minimum_vocab_size(num_classes),
              "vocab_size " + std::to_string(vocab_size));
  const int64_t signals = signal_count(num_classes);
  const int64_t needed = kMinFiller + signals;
  if (vocab_size >= kBertFirstWord + needed) {
    cls_id_ = kBertCls, sep_id_ = kBertSep, filler_begin_ = kBertFirstWord;
  } else if (vocab_size >= kBertFirstAfterMask + needed) {
    cls_id_ = kBertCls, sep_id_ = kBertSep, filler_begin_ = kBertFirstAfterMask;
  } else {
    cls_id_ = 1, sep_id_ = 2, filler_begin_ = kTinyFirstFiller;
  }
  filler_end_ = vocab_size - signals;
  // Signal ids are the top of the vocabulary, dealt to classes in a seeded order.
  signals_.resize(static_cast<size_t>(signals));
  std::iota(signals_.begin(), signals_.end(), filler_end_);
  Rng rng(derive_key(seed, {static_cast<uint64_t>(StreamTag::kSyntheticText), kSignalStream}));
  for (int64_t i = signals - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(signals_[static_cast<size_t>(i)], signals_[static_cast<size_t>(j)]);
  }
}

std::vector<int64_t> SyntheticTextDataset::signal_tokens(int64_t label) const {
  PIPET_CHECK(label >= 0 && label < num_classes_, "label " + std::to_string(label));
  const auto first = signals_.begin() + label * kSignalsPerClass;
  return {first, first + kSignalsPerClass};
}

void SyntheticTextDataset::render(int64_t index, int64_t* ids, int64_t* mask,
                                  int64_t* types) const {
  Rng rng(derive_key(seed_, {static_cast<uint64_t>(StreamTag::kSyntheticText),
                             static_cast<uint64_t>(split_), static_cast<uint64_t>(index)}));
  const int64_t* own_signals = signals_.data() + label(index) * kSignalsPerClass;
  const int64_t length = rng.uniform_int(std::max<int64_t>(3, seq_len_ / 2), seq_len_);
  // A pair needs [CLS] a [SEP] b [SEP] at least.
  const bool pair = length >= 5 && rng.chance(1, 2);
  const int64_t content = length - (pair ? 3 : 2);
  const int64_t len_a = pair ? rng.uniform_int(1, content - 1) : content;
  const int64_t filler_count = filler_end_ - filler_begin_;

  auto content_token = [&]() {
    if (rng.chance(1, 5)) return own_signals[rng.below(kSignalsPerClass)];
    return filler_begin_ + static_cast<int64_t>(rng.below(static_cast<uint64_t>(filler_count)));
  };

  int64_t pos = 0;
  ids[pos++] = cls_id_;
  for (int64_t i = 0; i < len_a; ++i) ids[pos++] = content_token();
  ids[pos++] = sep_id_;
  const int64_t segment_b = pos;
  if (pair) {
    for (int64_t i = 0; i < content - len_a; ++i) ids[pos++] = content_token();
    ids[pos++] = sep_id_;
  }
  PIPET_CHECK(pos == length, "synthetic text layout");

  // Every sample carries its class: overwrite one content position with a signal.
  int64_t slot = 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(content)));
  if (slot > len_a) ++slot;  // skip the middle [SEP] of a pair
  ids[slot] = own_signals[rng.below(kSignalsPerClass)];

  for (int64_t i = 0; i < seq_len_; ++i) {
    if (i >= length) ids[i] = 0;
    mask[i] = i < length ? 1 : 0;
    types[i] = (pair && i >= segment_b && i < length) ? 1 : 0;
  }
}

Batch SyntheticTextDataset::get_batch(const std::vector<int64_t>& indices,
                                      int64_t /*epoch*/) const {
  const auto batch_size = static_cast<int64_t>(indices.size());
  for (int64_t index : indices)
    if (index < 0 || index >= num_samples_)
      throw DataError("sample index " + std::to_string(index) + " is outside the " +
                      split_name(split_) + " split of dataset 'synthetic-text' (" +
                      std::to_string(num_samples_) + " samples)");
  Batch batch;
  batch.input_ids = torch::empty({batch_size, seq_len_}, torch::kInt64);
  batch.attention_mask = torch::empty({batch_size, seq_len_}, torch::kInt64);
  batch.token_type_ids = torch::empty({batch_size, seq_len_}, torch::kInt64);
  batch.labels = torch::empty({batch_size}, torch::kInt64);
  batch.sample_ids = torch::empty({batch_size}, torch::kInt64);
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* mask = batch.attention_mask.data_ptr<int64_t>();
  int64_t* types = batch.token_type_ids.data_ptr<int64_t>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  int64_t* sample_ids = batch.sample_ids.data_ptr<int64_t>();
  at::parallel_for(0, batch_size, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t index = indices[static_cast<size_t>(i)];
      render(index, ids + i * seq_len_, mask + i * seq_len_, types + i * seq_len_);
      labels[i] = label(index);
      sample_ids[i] = index;
    }
  });
  return batch;
}

}  // namespace pipet
