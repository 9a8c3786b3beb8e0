// The training engine on a GPU (runtime.device=cuda), under mpirun -np 4 with
// the ranks sharing the machine's GPU(s): fp32 on the GPU trains the same
// model as on the CPU; every pipeline layout on one GPU (host-staged MPI
// groups) trains the same model; a live transition moves state without
// changing it; bf16 autocast learns; the fused AdamW kernel matches the
// per-parameter loop. Skipped without a CUDA device or a CUDA LibTorch.
#include "tests/mpi/engine_test_support.h"

#include "pipet/build_config.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/group_factory.h"
#include "runtime/core/config.h"
#include "runtime/core/files.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/trainer.h"
#include "runtime/model/model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::SharedDir;
using pipet::testing::metrics_events;
using pipet::testing::world;

// Skips (on every rank alike: the GPU count is the same everywhere) unless a
// CUDA device can run tensors. TF32 off and cuDNN deterministic: the
// comparisons below are about the engine, not about reduced-precision GEMMs.
#define SKIP_WITHOUT_GPU()                                                                  \
  do {                                                                                      \
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device is visible";              \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "this LibTorch has no CUDA support"; \
    at::globalContext().setAllowTF32CuBLAS(false);                                          \
    at::globalContext().setAllowTF32CuDNN(false);                                           \
    at::globalContext().setDeterministicCuDNN(true);                                        \
    at::globalContext().setBenchmarkCuDNN(false);                                           \
  } while (0)

TrainConfig tiny_run(const std::string& out, const std::string& device, int64_t stages,
                     const std::string& schedule) {
  TrainConfig c = pipet::testing::tiny_run(out, stages, /*micro=*/2, schedule);
  c.runtime.device = device;
  return c;
}

struct RunRecord {
  std::vector<double> losses;
  std::map<std::string, torch::Tensor> weights;  // on the CPU
  double eval_accuracy = 0;
  double eval_loss = 0;
};


RunRecord run(Communicator& group, const TrainConfig& config, const RunLimits& limits = {}) {
  Trainer trainer(config, &group);
  const TrainResult result = trainer.run(limits);
  RunRecord record;
  if (group.rank() != 0) return record;
  for (const auto& event : metrics_events(config.output.dir + "/metrics.jsonl", "train"))
    record.losses.push_back(event.at("train_loss").get<double>());
  for (const auto& [name, tensor] : trainer.model().hf_parameters())
    record.weights[name] = tensor.detach().to(torch::kCPU).clone();
  if (result.eval) {
    record.eval_accuracy = result.eval->metric("accuracy");
    record.eval_loss = result.eval->loss;
  }
  return record;
}

void expect_close(const RunRecord& reference, const RunRecord& other, double tolerance,
                  const std::string& what) {
  ASSERT_EQ(other.losses.size(), reference.losses.size()) << what;
  for (size_t i = 0; i < reference.losses.size(); ++i)
    EXPECT_NEAR(other.losses[i], reference.losses[i], tolerance * std::abs(reference.losses[i]))
        << what << " step " << i + 1;
  ASSERT_EQ(other.weights.size(), reference.weights.size()) << what;
  std::vector<torch::Tensor> mine, theirs;
  for (const auto& [name, tensor] : reference.weights) {
    mine.push_back(other.weights.at(name).reshape({-1}));
    theirs.push_back(tensor.reshape({-1}));
  }
  const torch::Tensor a = torch::cat(mine), b = torch::cat(theirs);
  EXPECT_LE(((a - b).norm() / b.norm()).item<double>(), tolerance) << what;
}

TEST(GpuTraining, Fp32OnTheGpuTrainsTheSameModelAsOnTheCpu) {
  SKIP_WITHOUT_GPU();
  SharedDir dir;
  std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
  if (solo) {
    const RunRecord cpu = run(*solo, tiny_run(dir.path() + "/cpu", "cpu", 1, "gpipe"));
    const RunRecord gpu = run(*solo, tiny_run(dir.path() + "/gpu", "cuda", 1, "gpipe"));
    ASSERT_EQ(cpu.losses.size(), 5u);
    expect_close(cpu, gpu, 1e-4, "cuda vs cpu, 1x1");
  }
  world().barrier();
}

TEST(GpuTraining, EveryLayoutOnOneGpuTrainsTheSameModel) {
  SKIP_WITHOUT_GPU();
  ASSERT_EQ(world().size(), 4) << "run this binary with mpirun -np 4";
  SharedDir dir;
  RunRecord reference;
  {
    std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
    if (solo) reference = run(*solo, tiny_run(dir.path() + "/1x1", "cuda", 1, "gpipe"));
  }
  world().barrier();
  for (const std::string schedule : {"gpipe", "1f1b"}) {
    for (const int64_t stages : {4, 2, 1}) {
      const std::string name = std::to_string(stages) + "x" + std::to_string(4 / stages) + "-" + schedule;
      const RunRecord record = run(world(), tiny_run(dir.path() + "/" + name, "cuda", stages, schedule));
      if (world().rank() == 0) expect_close(reference, record, 1e-5, name);
    }
  }
}

TEST(GpuTraining, ATransitionOnTheGpuMovesStateWithoutChangingIt) {
  SKIP_WITHOUT_GPU();
  ASSERT_EQ(world().size(), 4) << "run this binary with mpirun -np 4";
  SharedDir dir;
  // The same 4 steps twice; in one a manual freeze at step 4 compresses the
  // 4-stage pipeline, and the checkpoint of step 4 is written after it.
  auto config = [&](const std::string& name, bool freeze) {
    TrainConfig c = tiny_run(dir.path() + "/" + name, "cuda", 4, "1f1b");
    c.model.num_layers = 4;
    c.train.optimizer = "adamw";
    c.train.lr = 2e-3;
    c.parallel.micro_batches = 4;
    pipet::testing::freeze_two_blocks_at_step_four(c, dir.path() + "/" + name + "-checkpoints", freeze);
    c.autopipe.frozen_cost = 0.0;
    return c;
  };
  const TrainConfig moved = config("moved", true);
  const TrainConfig still = config("still", false);
  run(world(), moved, RunLimits{4});
  run(world(), still, RunLimits{4});
  if (world().rank() != 0) return;
  const auto transitions = metrics_events(moved.output.dir + "/metrics.jsonl", "transition");
  ASSERT_EQ(transitions.size(), 1u);
  EXPECT_LT(transitions[0].at("stages").get<int>(), 4);
  for (const std::string file : {"model.safetensors", "optimizer.safetensors"}) {
    const auto before = pipet::testing::checkpoint_tensors(still.checkpoint.dir, 4, file);
    const auto after = pipet::testing::checkpoint_tensors(moved.checkpoint.dir, 4, file);
    ASSERT_FALSE(after.empty()) << file;
    for (const auto& [name, tensor] : after) {
      ASSERT_TRUE(before.count(name)) << file << ": " << name;
      EXPECT_TRUE(torch::equal(tensor, before.at(name))) << file << ": " << name << " changed in the transition";
    }
  }
}

// Frozen sub-layers off stage 0 on the GPU (freeze only, no cache): after
// step 2 block 0 freezes, stages 0 and 1 of 4 are frozen through and run
// forwards only; then the same freeze with AutoCache on, where the prefix
// moves to stage 0 and is served one micro-batch at a time. Both train the
// model the single-GPU run trains (the cache to BLAS rounding).
TEST(GpuTraining, FrozenStagesAndTheCachedPrefixTrainTheSameModel) {
  SKIP_WITHOUT_GPU();
  ASSERT_EQ(world().size(), 4) << "run this binary with mpirun -np 4";
  SharedDir dir;
  auto config = [&](const std::string& name, int64_t stages, const std::string& cache) {
    TrainConfig c = tiny_run(dir.path() + "/" + name, "cuda", stages, "1f1b");
    c.freeze.policy = "manual";
    c.freeze.manual = {1};
    c.freeze.every_steps = 2;
    c.autopipe.enabled = false;
    c.autocache.mode = cache;
    c.autocache.shm_mb = 16;
    c.data.augment = false;  // one view per sample: cached and computed inputs agree
    return c;
  };
  RunRecord reference;
  {
    std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
    if (solo) reference = run(*solo, config("frozen-1x1", 1, "off"));
  }
  world().barrier();
  const RunRecord frozen = run(world(), config("frozen-4x1", 4, "off"));
  const RunRecord cached = run(world(), config("cached-4x1", 4, "on"));
  if (world().rank() == 0) {
    ASSERT_EQ(reference.losses.size(), 5u);
    expect_close(reference, frozen, 1e-5, "4x1 with stages frozen through");
    expect_close(reference, cached, 1e-4, "4x1 with the cached prefix");
  }
}

TEST(GpuTraining, Bf16AutocastLearnsAsWellAsFp32) {
  SKIP_WITHOUT_GPU();
  SharedDir dir;
  std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
  if (solo) {
    auto learn = [&](const std::string& precision) {
      TrainConfig c = tiny_run(dir.path() + "/" + precision, "cuda", 1, "gpipe");
      c.model.num_layers = 4;
      c.data.train_samples = 1024;
      c.data.eval_samples = 256;
      c.train.batch_size = 32;
      c.train.epochs = 4;
      c.train.max_steps = 0;
      c.train.optimizer = "adamw";
      c.train.lr = 2e-3;
      c.train.log_every_steps = 8;
      c.eval.every_epochs = 4;
      c.runtime.precision = precision;
      return run(*solo, c);
    };
    const RunRecord fp32 = learn("fp32");
    const RunRecord bf16 = learn("bf16");
    EXPECT_GT(fp32.eval_accuracy, 0.6) << "the fp32 reference does not learn: the comparison is vacuous";
    EXPECT_GT(bf16.eval_accuracy, fp32.eval_accuracy - 0.05);
    EXPECT_LT(bf16.losses.back(), 0.5 * bf16.losses.front()) << "bf16 training loss did not fall";
  }
  world().barrier();
}

TEST(GpuTraining, FusedAdamWMatchesThePerParameterLoop) {
  SKIP_WITHOUT_GPU();
  if (world().rank() != 0) return;
  torch::manual_seed(7);
  NamedTensors cpu_params, gpu_params;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{64, 32}, {32}, {3, 5, 7}, {1}}) {
    torch::Tensor p = torch::randn(shape);
    cpu_params.emplace_back("p" + std::to_string(cpu_params.size()), p.clone().requires_grad_(true));
    gpu_params.emplace_back("p" + std::to_string(gpu_params.size()), p.clone().cuda().requires_grad_(true));
  }
  AdamW cpu(cpu_params, 0.9, 0.999, 1e-8, 0.01);
  AdamW gpu(gpu_params, 0.9, 0.999, 1e-8, 0.01);
  for (int step = 0; step < 6; ++step) {
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      // Parameter 1 has no gradient at step 2: its state must not advance.
      if (i == 1 && step == 2) {
        cpu_params[i].second.mutable_grad() = torch::Tensor();
        gpu_params[i].second.mutable_grad() = torch::Tensor();
        continue;
      }
      const torch::Tensor g = torch::randn(cpu_params[i].second.sizes());
      cpu_params[i].second.mutable_grad() = g.clone();
      gpu_params[i].second.mutable_grad() = g.cuda();
    }
    cpu.step(1e-2);
    gpu.step(1e-2);
  }
  for (size_t i = 0; i < cpu_params.size(); ++i)
    EXPECT_TRUE(torch::allclose(gpu_params[i].second.detach().cpu(), cpu_params[i].second.detach(), 1e-5, 1e-6))
        << cpu_params[i].first;
  const NamedTensors cpu_state = cpu.state(), gpu_state = gpu.state();
  ASSERT_EQ(cpu_state.size(), gpu_state.size());
  for (size_t i = 0; i < cpu_state.size(); ++i)
    EXPECT_TRUE(torch::allclose(gpu_state[i].second.cpu().to(torch::kDouble),
                                cpu_state[i].second.to(torch::kDouble), 1e-5, 1e-7))
        << cpu_state[i].first;
}

}  // namespace
}  // namespace pipet
