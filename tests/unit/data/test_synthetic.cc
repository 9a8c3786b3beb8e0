#include "runtime/data/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace pipet {
namespace {

ImageTransform image_transform(bool augment, uint64_t seed) {
  ImageTransform t;
  t.augment = augment;
  t.crop_padding = augment ? 4 : 0;
  t.hflip = augment;
  t.mean = {0.5, 0.5, 0.5};
  t.std = {0.5, 0.5, 0.5};
  t.seed = seed;
  return t;
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

TEST(SyntheticImage, SamplesAreDeterministicFunctionsOfSeedSplitAndIndex) {
  SyntheticImageDataset a(10, 100, 5, Split::kTrain, image_transform(false, 5));
  SyntheticImageDataset b(10, 100, 5, Split::kTrain, image_transform(false, 5));
  SyntheticImageDataset other_seed(10, 100, 6, Split::kTrain, image_transform(false, 6));
  SyntheticImageDataset eval(10, 100, 5, Split::kEval, image_transform(false, 5));
  EXPECT_TRUE(torch::equal(a.raw_image(17), b.raw_image(17)));
  EXPECT_FALSE(torch::equal(a.raw_image(17), other_seed.raw_image(17)));
  EXPECT_FALSE(torch::equal(a.raw_image(17), eval.raw_image(17)));
  EXPECT_FALSE(torch::equal(a.raw_image(17), a.raw_image(27)));  // same class, other noise
  // The splits share the class prototypes.
  EXPECT_TRUE(torch::equal(a.prototype(3), eval.prototype(3)));
  EXPECT_FALSE(torch::equal(a.prototype(3), a.prototype(4)));
}

TEST(SyntheticImage, SampleIsPrototypePlusBoundedNoiseAndLabelsAreBalanced) {
  SyntheticImageDataset data(7, 70, 11, Split::kTrain, image_transform(false, 11));
  const Batch batch = data.get_batch(range(0, 70), 0);
  EXPECT_EQ(batch.pixel_values.sizes(), (std::vector<int64_t>{70, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(batch.labels, torch::arange(70, torch::kInt64) % 7));
  EXPECT_TRUE(torch::equal(torch::bincount(batch.labels), torch::full({7}, 10, torch::kInt64)));
  for (int64_t i : {0, 13, 69}) {
    const torch::Tensor diff =
        data.raw_image(i).to(torch::kInt32) - data.prototype(i % 7).to(torch::kInt32);
    EXPECT_LE(diff.max().item<int32_t>(), 63);
    EXPECT_GE(diff.min().item<int32_t>(), -64);
    // Noise is spread over the whole range, not a constant offset.
    EXPECT_GT(diff.to(torch::kFloat32).std().item<float>(), 25.0f);
  }
}

TEST(SyntheticImage, PrototypesAreSmooth) {
  SyntheticImageDataset data(3, 3, 2, Split::kTrain, image_transform(false, 2));
  const torch::Tensor p = data.prototype(1).to(torch::kInt32);
  // Neighbouring pixels of an 8-pixel lattice cell differ by at most (239-16)/8 + rounding.
  const torch::Tensor dx = (p.slice(2, 1) - p.slice(2, 0, 31)).abs();
  EXPECT_LE(dx.max().item<int32_t>(), 29);
  EXPECT_GT(p.to(torch::kFloat32).std().item<float>(), 10.0f);  // but not flat
}

TEST(SyntheticImage, LinearClassifierLearnsItWithAugmentation) {
  torch::manual_seed(0);
  SyntheticImageDataset train(10, 1000, 3, Split::kTrain, image_transform(true, 3));
  SyntheticImageDataset eval(10, 300, 3, Split::kEval, image_transform(false, 3));
  torch::nn::Linear model(3 * 32 * 32, 10);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-3));
  for (int64_t step = 0; step < 200; ++step) {
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < 50; ++i) indices.push_back((step * 50 + i * 7) % 1000);
    const Batch batch = train.get_batch(indices, step / 20);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        model(batch.pixel_values.flatten(1)), batch.labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  const Batch batch = eval.get_batch(range(0, 300), 0);
  const double accuracy =
      model(batch.pixel_values.flatten(1)).argmax(1).eq(batch.labels).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(accuracy, 0.9);
}

TEST(SyntheticText, LayoutOfEverySample) {
  SyntheticTextDataset data(4, 200, 24, 600, 8, Split::kTrain);
  EXPECT_EQ(data.cls_id(), 101);
  EXPECT_EQ(data.sep_id(), 102);
  EXPECT_EQ(data.filler_begin(), 104);
  EXPECT_EQ(data.filler_end(), 600 - 16);
  const Batch batch = data.get_batch(range(0, 200), 0);
  ASSERT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{200, 24}));
  ASSERT_EQ(batch.attention_mask.sizes(), batch.input_ids.sizes());
  ASSERT_EQ(batch.token_type_ids.sizes(), batch.input_ids.sizes());
  EXPECT_EQ(batch.input_ids.scalar_type(), torch::kInt64);
  EXPECT_FALSE(batch.pixel_values.defined());
  int pairs = 0;
  std::set<int64_t> lengths;
  for (int64_t i = 0; i < 200; ++i) {
    const auto ids = batch.input_ids[i];
    const auto mask = batch.attention_mask[i];
    const auto types = batch.token_type_ids[i];
    const int64_t length = mask.sum().item<int64_t>();
    lengths.insert(length);
    ASSERT_GE(length, 12);
    ASSERT_LE(length, 24);
    // Mask is a prefix of ones; padding is id 0 and type 0.
    EXPECT_TRUE(torch::equal(mask.slice(0, 0, length), torch::ones({length}, torch::kInt64)));
    EXPECT_EQ(mask.slice(0, length).sum().item<int64_t>(), 0);
    EXPECT_EQ(ids.slice(0, length).abs().sum().item<int64_t>(), 0);
    EXPECT_EQ(types.slice(0, length).sum().item<int64_t>(), 0);
    EXPECT_EQ(ids[0].item<int64_t>(), 101);
    EXPECT_EQ(ids[length - 1].item<int64_t>(), 102);
    EXPECT_LT(ids.max().item<int64_t>(), 600);

    const std::vector<int64_t> own = data.signal_tokens(i % 4);
    int own_signals = 0;
    int seps = 0;
    int64_t first_type_one = -1;
    for (int64_t p = 1; p < length; ++p) {
      const int64_t id = ids[p].item<int64_t>();
      if (id == 102) { ++seps; continue; }
      ASSERT_GE(id, 104);
      if (id >= data.filler_end()) {
        ASSERT_NE(std::find(own.begin(), own.end(), id), own.end()) << "foreign signal token";
      }
      own_signals += id >= data.filler_end();
      if (types[p].item<int64_t>() == 1 && first_type_one < 0) first_type_one = p;
    }
    EXPECT_GE(own_signals, 1);
    if (seps == 2) {
      ++pairs;
      // Segment B starts right after the first [SEP] and runs to the end.
      ASSERT_GT(first_type_one, 1);
      EXPECT_EQ(ids[first_type_one - 1].item<int64_t>(), 102);
      EXPECT_EQ(types.sum().item<int64_t>(), length - first_type_one);
    } else {
      EXPECT_EQ(seps, 1);
      EXPECT_EQ(types.sum().item<int64_t>(), 0);
    }
  }
  EXPECT_GT(pairs, 60);
  EXPECT_LT(pairs, 140);
  EXPECT_GT(lengths.size(), 8u);
  EXPECT_TRUE(torch::equal(batch.labels, torch::arange(200, torch::kInt64) % 4));
}

TEST(SyntheticText, VocabularyLayoutFollowsTheVocabularySize) {
  SyntheticTextDataset bert(2, 4, 8, 30522, 1, Split::kTrain);
  EXPECT_EQ(bert.cls_id(), 101);
  EXPECT_EQ(bert.sep_id(), 102);
  EXPECT_EQ(bert.filler_begin(), 1000);
  EXPECT_EQ(bert.filler_end(), 30522 - 8);
  const int64_t tiny_vocab = SyntheticTextDataset::minimum_vocab_size(3);
  EXPECT_EQ(tiny_vocab, 3 + 16 + 12);
  SyntheticTextDataset tiny(3, 30, 6, tiny_vocab, 1, Split::kTrain);
  EXPECT_EQ(tiny.cls_id(), 1);
  EXPECT_EQ(tiny.sep_id(), 2);
  EXPECT_EQ(tiny.filler_begin(), 3);
  const Batch batch = tiny.get_batch(range(0, 30), 0);
  EXPECT_LT(batch.input_ids.max().item<int64_t>(), tiny_vocab);
  EXPECT_TRUE(torch::equal(batch.input_ids.select(1, 0), torch::ones({30}, torch::kInt64)));
  // Signal tokens: distinct, in the top ids, four per class.
  std::set<int64_t> all;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t id : tiny.signal_tokens(c)) all.insert(id);
  EXPECT_EQ(all.size(), 12u);
  EXPECT_EQ(*all.begin(), tiny_vocab - 12);
}

TEST(SyntheticText, DeterministicAndSplitsDiffer) {
  SyntheticTextDataset a(5, 50, 32, 1000, 4, Split::kTrain);
  SyntheticTextDataset b(5, 50, 32, 1000, 4, Split::kTrain);
  SyntheticTextDataset eval(5, 50, 32, 1000, 4, Split::kEval);
  const Batch x = a.get_batch({3, 1, 4}, 0);
  const Batch y = b.get_batch({4, 3}, 9);
  EXPECT_TRUE(torch::equal(x.input_ids[0], y.input_ids[1]));
  EXPECT_TRUE(torch::equal(x.token_type_ids[2], y.token_type_ids[0]));
  EXPECT_FALSE(torch::equal(x.input_ids, eval.get_batch({3, 1, 4}, 0).input_ids));
  EXPECT_EQ(a.signal_tokens(2), eval.signal_tokens(2));
}

TEST(SyntheticText, BagOfWordsClassifierLearnsIt) {
  torch::manual_seed(0);
  constexpr int64_t vocab = 1000;
  SyntheticTextDataset train(8, 800, 32, vocab, 12, Split::kTrain);
  SyntheticTextDataset eval(8, 200, 32, vocab, 12, Split::kEval);
  auto bag = [&](const Batch& batch) {
    torch::Tensor counts = torch::zeros({batch.size(), vocab});
    counts.scatter_add_(1, batch.input_ids, batch.attention_mask.to(torch::kFloat32));
    return counts;
  };
  torch::nn::Linear model(vocab, 8);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
  for (int64_t step = 0; step < 150; ++step) {
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < 64; ++i) indices.push_back((step * 64 + i * 13) % 800);
    const Batch batch = train.get_batch(indices, 0);
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(model(bag(batch)), batch.labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  const Batch batch = eval.get_batch(range(0, 200), 0);
  const double accuracy =
      model(bag(batch)).argmax(1).eq(batch.labels).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(accuracy, 0.9);
}

}  // namespace
}  // namespace pipet
