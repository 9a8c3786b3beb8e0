// Counter-based dropout: a sample's mask depends on (seed, epoch, site,
// sample) only, never on its row, its micro-batch or the thread; the rate
// and scale are torch's; the tensor-op form (other devices) is
// bit-identical to the CPU loop; a model trained under a scope draws so.
#include "runtime/model/counter_dropout.h"

#include "runtime/core/errors.h"
#include "runtime/model/model.h"
#include "tests/unit/model/model_test_util.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

DropoutKey key_of(std::vector<int64_t> ids, int64_t epoch = 0, uint64_t seed = 7) {
  return DropoutKey{seed, epoch, torch::tensor(ids, torch::kInt64)};
}

TEST(CounterDropout, ASamplesMaskIsTheSameInAnyRowAndAnyBatch) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat);
  const torch::Tensor whole = counter_dropout_mask(key_of({5, 9, 2, 40}), 3, 0.25, {4, 6, 8}, options);
  const torch::Tensor reordered = counter_dropout_mask(key_of({40, 2}), 3, 0.25, {2, 6, 8}, options);
  EXPECT_TRUE(torch::equal(reordered[0], whole[3]));
  EXPECT_TRUE(torch::equal(reordered[1], whole[2]));
  // Batched attention's [B*heads, S, S]: each sample's heads stay together.
  const torch::Tensor heads = counter_dropout_mask(key_of({5, 9, 2, 40}), 3, 0.25, {8, 3, 8}, options);
  EXPECT_TRUE(torch::equal(heads.view({4, 48}), whole.view({4, 48})));
}

TEST(CounterDropout, KeysSeparateEpochsSitesSeedsAndSamples) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat);
  const torch::Tensor base = counter_dropout_mask(key_of({1}), 3, 0.5, {1, 4096}, options);
  for (const torch::Tensor& other : {counter_dropout_mask(key_of({1}, 1), 3, 0.5, {1, 4096}, options),
                                     counter_dropout_mask(key_of({1}), 4, 0.5, {1, 4096}, options),
                                     counter_dropout_mask(key_of({1}, 0, 8), 3, 0.5, {1, 4096}, options),
                                     counter_dropout_mask(key_of({2}), 3, 0.5, {1, 4096}, options)}) {
    const double agree = base.eq(other).to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(agree, 0.5, 0.05) << "independent masks agree on half their elements";
  }
  EXPECT_NE(dropout_site(1, 0, 0), dropout_site(1, 0, 1));
  EXPECT_NE(dropout_site(1, 0, 0), dropout_site(2, 0, 0));
  EXPECT_NE(dropout_site(1, 0, 0), dropout_site(1, 1, 0));
}

TEST(CounterDropout, RateAndScaleAreTorchs) {
  for (const double p : {0.1, 0.5, 0.9}) {
    const torch::Tensor mask =
        counter_dropout_mask(key_of({0, 1, 2, 3}), 1, p, {4, 50000}, torch::TensorOptions().dtype(torch::kFloat));
    const double dropped = mask.eq(0).to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(dropped, p, 0.005) << p;
    EXPECT_FLOAT_EQ(mask.max().item<float>(), static_cast<float>(1.0 / (1.0 - p)));
    // Dropout keeps the expectation.
    EXPECT_NEAR(mask.to(torch::kDouble).mean().item<double>(), 1.0, 0.02) << p;
  }
}

TEST(CounterDropout, TensorOpsGiveTheLoopsBitsInEveryDtype) {
  for (const auto dtype : {torch::kFloat, torch::kBFloat16, torch::kDouble}) {
    const auto options = torch::TensorOptions().dtype(dtype);
    const DropoutKey key = key_of({3, 1000003, 17}, 2, 0xFFFFFFFFFFFFFFFFULL);
    const torch::Tensor loop = counter_dropout_mask(key, 77, 0.3, {3, 5, 31}, options);
    const torch::Tensor ops = counter_dropout_mask_by_tensor_ops(key, 77, 0.3, {3, 5, 31}, options);
    EXPECT_EQ(ops.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(loop, ops)) << dtype;
  }
}

TEST(CounterDropout, AShapeThatDoesNotSplitIntoTheSamplesIsAModelError) {
  EXPECT_THROW(counter_dropout_mask(key_of({1, 2, 3}), 0, 0.1, {4, 8}, torch::TensorOptions()), ModelError);
}

TEST(CounterDropout, ScopesNestAndDropoutFollowsThem) {
  const torch::Tensor x = torch::ones({2, 64});
  EXPECT_EQ(current_dropout_key(), nullptr);
  EXPECT_TRUE(dropout_at(x, 0.5, /*training=*/false, 0).equal(x));
  const DropoutKey outer = key_of({10, 11});
  const DropoutKey inner = key_of({12, 13});
  {
    DropoutScope a(outer);
    const torch::Tensor first = dropout_at(x, 0.5, true, 0);
    {
      DropoutScope b(inner);
      EXPECT_EQ(current_dropout_key(), &inner);
    }
    EXPECT_EQ(current_dropout_key(), &outer);
    EXPECT_TRUE(dropout_at(x, 0.5, true, 0).equal(first)) << "a key draws the same mask every time";
    EXPECT_TRUE(first.equal(counter_dropout_mask(outer, 0, 0.5, {2, 64}, x.options())));
  }
  EXPECT_EQ(current_dropout_key(), nullptr);
}

// A BERT's training forward under a scope: the same rows give the same
// output whether they come alone or inside a larger batch.
TEST(CounterDropout, AModelsTrainingForwardOfASampleIsIndependentOfItsBatch) {
  torch::manual_seed(0);
  TransformerModel model(testing::tiny_bert_spec(2));
  ASSERT_GT(model.spec().hidden_dropout, 0.0);
  model.train();
  const Activations inputs = testing::bert_inputs(model.spec(), 4, 7);
  const auto run = [&](int64_t first, int64_t rows, std::vector<int64_t> samples) {
    Activations a{inputs.hidden.narrow(0, first, rows), inputs.attention_mask.narrow(0, first, rows),
                  inputs.token_type_ids.narrow(0, first, rows)};
    const DropoutKey key = key_of(std::move(samples));
    DropoutScope scope(key);
    return model.forward_range(a, 0, model.num_sublayers()).hidden;
  };
  torch::NoGradGuard no_grad;
  const torch::Tensor all = run(0, 4, {100, 101, 102, 103});
  const torch::Tensor two = run(2, 2, {102, 103});
  EXPECT_TRUE(torch::allclose(two, all.narrow(0, 2, 2), 1e-5, 1e-6));
  const torch::Tensor renamed = run(2, 2, {7, 8});
  EXPECT_FALSE(torch::allclose(renamed, all.narrow(0, 2, 2), 1e-5, 1e-6)) << "the masks follow the samples";
}

}  // namespace
}  // namespace pipet
