#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <string>

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/engine/optimizer.h"

namespace pipet {
namespace {

// Two identical parameter sets (ours, torch's) with the same gradients.
struct Twin {
  NamedTensors ours;
  std::vector<torch::Tensor> theirs;
};

Twin make_twin(std::vector<std::vector<int64_t>> shapes) {
  torch::manual_seed(7);
  Twin twin;
  int i = 0;
  for (const auto& shape : shapes) {
    torch::Tensor init = torch::randn(shape);
    twin.ours.emplace_back("p" + std::to_string(i++), init.clone().requires_grad_(true));
    twin.theirs.push_back(init.clone().requires_grad_(true));
  }
  return twin;
}

void set_grads(Twin& twin, int step) {
  torch::manual_seed(100 + step);
  for (size_t i = 0; i < twin.ours.size(); ++i) {
    torch::Tensor g = torch::randn(twin.theirs[i].sizes());
    twin.ours[i].second.mutable_grad() = g.clone();
    twin.theirs[i].mutable_grad() = g.clone();
  }
}

TEST(AdamW, MatchesTorchOptimAdamW) {
  Twin twin = make_twin({{4, 3}, {2, 5}});
  AdamW ours(twin.ours, 0.9, 0.98, 1e-6, 0.05);
  torch::optim::AdamW theirs(twin.theirs,
                             torch::optim::AdamWOptions(0.01).betas({0.9, 0.98}).eps(1e-6).weight_decay(0.05));
  for (int step = 0; step < 6; ++step) {
    set_grads(twin, step);
    ours.step(0.01);
    theirs.step();
  }
  for (size_t i = 0; i < twin.ours.size(); ++i) {
    EXPECT_TRUE(torch::allclose(twin.ours[i].second, twin.theirs[i], 1e-6, 1e-7)) << "parameter " << i;
  }
}

TEST(AdamW, BiasesAndNormsGetNoWeightDecay) {
  torch::Tensor bias = torch::ones({3}).requires_grad_(true);
  AdamW opt({{"bias", bias}}, 0.9, 0.999, 1e-8, 0.5);
  bias.mutable_grad() = torch::zeros({3});
  opt.step(0.1);
  EXPECT_TRUE(torch::equal(bias, torch::ones({3})));  // zero gradient, no decay: unchanged
}

TEST(SgdMomentum, MatchesTorchOptimSgdWithNesterov) {
  for (bool nesterov : {false, true}) {
    Twin twin = make_twin({{3, 3}, {6, 2}});
    SgdMomentum ours(twin.ours, 0.9, nesterov, 1e-3);
    torch::optim::SGD theirs(twin.theirs,
                             torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(nesterov).weight_decay(1e-3));
    for (int step = 0; step < 5; ++step) {
      set_grads(twin, step);
      ours.step(0.1);
      theirs.step();
    }
    for (size_t i = 0; i < twin.ours.size(); ++i) {
      EXPECT_TRUE(torch::allclose(twin.ours[i].second, twin.theirs[i], 1e-6, 1e-7))
          << "nesterov=" << nesterov << " parameter " << i;
    }
  }
}

TEST(Optimizer, StateRoundTripContinuesIdentically) {
  for (const char* kind : {"adamw", "sgd"}) {
    TrainLoopConfig config;
    config.optimizer = kind;
    Twin a = make_twin({{4, 4}});
    Twin b = make_twin({{4, 4}});
    auto first = make_optimizer(config, a.ours);
    set_grads(a, 0);
    first->step(0.01);
    // Copy state and weights into a fresh optimizer, then step both once more.
    std::map<std::string, torch::Tensor> saved;
    for (auto& [name, t] : first->state()) saved[name] = t.clone();
    {
      torch::NoGradGuard g;
      b.ours[0].second.copy_(a.ours[0].second);
    }
    auto second = make_optimizer(config, b.ours);
    second->load_state(saved, "test");
    set_grads(a, 1);
    set_grads(b, 1);
    first->step(0.01);
    second->step(0.01);
    EXPECT_TRUE(torch::equal(a.ours[0].second, b.ours[0].second)) << kind;
  }
}

TEST(Optimizer, LoadStateNamesMissingMisshapedAndUnexpectedSlots) {
  Twin twin = make_twin({{2, 2}});
  AdamW opt(twin.ours, 0.9, 0.999, 1e-8, 0.0);
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, t] : opt.state()) state[name] = t;

  auto missing = state;
  missing.erase("p0/exp_avg_sq");
  try {
    opt.load_state(missing, "opt.safetensors");
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("p0/exp_avg_sq"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("opt.safetensors"), std::string::npos) << e.what();
  }

  auto misshaped = state;
  misshaped["p0/exp_avg"] = torch::zeros({3});
  try {
    opt.load_state(misshaped, "opt.safetensors");
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("shape [3]"), std::string::npos) << e.what();
  }

  auto extra = state;
  extra["ghost/exp_avg"] = torch::zeros({1});
  try {
    opt.load_state(extra, "opt.safetensors");
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("ghost/exp_avg"), std::string::npos) << e.what();
  }
}

TEST(GradientClipping, SquaredNormsPerGradientThenScaleToMaxNorm) {
  torch::Tensor a = torch::tensor({3.0f, 4.0f});
  torch::Tensor b = torch::tensor({{12.0f}});
  const torch::Tensor squares = squared_gradient_norms({a, b});
  ASSERT_EQ(squares.scalar_type(), torch::kDouble);
  ASSERT_EQ(squares.numel(), 2);
  EXPECT_DOUBLE_EQ(squares[0].item<double>(), 25.0);
  EXPECT_DOUBLE_EQ(squares[1].item<double>(), 144.0);
  clip_gradients({a, b}, 13.0, 1.0);
  EXPECT_NEAR(torch::cat({a, b.reshape({-1})}).norm().item<double>(), 1.0, 1e-5);
}

TEST(GradientClipping, UnderTheBoundNonFiniteOrOffLeavesGradientsUntouched) {
  torch::Tensor g = torch::tensor({0.3f, 0.4f});
  clip_gradients({g}, 0.5, 1.0);                                        // under the bound
  clip_gradients({g}, std::numeric_limits<double>::quiet_NaN(), 1.0);  // the caller decides
  clip_gradients({g}, 0.5, 0.0);                                        // clipping off
  EXPECT_TRUE(torch::equal(g, torch::tensor({0.3f, 0.4f})));
  EXPECT_EQ(squared_gradient_norms({}).numel(), 0);
}

TEST(Optimizer, ZeroGradReleasesGradientsAndAnUntouchedParameterDoesNotAdvance) {
  torch::Tensor w = torch::ones({2, 2}).requires_grad_(true);
  torch::Tensor unused = torch::ones({2}).requires_grad_(true);
  AdamW opt({{"w", w}, {"unused", unused}}, 0.9, 0.999, 1e-8, 0.1);
  w.sum().backward();
  unused.mutable_grad() = torch::ones({2});
  opt.step(0.1);
  opt.zero_grad();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_FALSE(unused.grad().defined());
  // The next backward writes a fresh gradient (not zeros plus one).
  w.sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), torch::ones({2, 2})));
  const torch::Tensor unused_before = unused.detach().clone();
  opt.step(0.1);
  EXPECT_TRUE(torch::equal(unused, unused_before)) << "no gradient: no update, no decay";
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, t] : opt.state()) state[name] = t;
  EXPECT_EQ(state.at("w/step").item<int64_t>(), 2);
  EXPECT_EQ(state.at("unused/step").item<int64_t>(), 1);
}

TEST(MakeOptimizer, RejectsUnknownName) {
  TrainLoopConfig config;
  config.optimizer = "lamb";
  EXPECT_THROW(make_optimizer(config, {}), ConfigError);
}

}  // namespace
}  // namespace pipet
