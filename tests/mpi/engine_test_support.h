// What the engine's multi-rank tests share: the world communicator of the
// test process and a temporary directory every rank agrees on.
#pragma once

#include "runtime/comm/mpi_communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/files.h"
#include "runtime/core/safetensors_torch.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/support/temp_dir.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace pipet::testing {

inline Communicator& world() {
  static std::unique_ptr<MpiCommunicator> comm = make_world_communicator(test_runtime());
  return *comm;
}

// Created by rank 0, its path broadcast; removed by rank 0 after a barrier,
// so no rank is still writing into it.
class SharedDir {
 public:
  SharedDir() {
    if (world().rank() == 0) own_ = std::make_unique<TempDir>();
    const std::string path = own_ ? own_->path() : std::string();
    torch::Tensor bytes = torch::zeros({256}, torch::kUInt8);
    std::memcpy(bytes.data_ptr(), path.data(), std::min<size_t>(path.size(), 255));
    world().broadcast(bytes);
    path_ = std::string(reinterpret_cast<const char*>(bytes.data_ptr()));
  }
  ~SharedDir() { world().barrier(); }
  SharedDir(const SharedDir&) = delete;
  SharedDir& operator=(const SharedDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::unique_ptr<TempDir> own_;
  std::string path_;
};

// The events of one kind ("train", "epoch", "transition", ...) in a
// metrics.jsonl file, in order.
inline std::vector<nlohmann::json> metrics_events(const std::string& metrics_file, const std::string& kind) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(read_file(metrics_file));
  for (std::string line; std::getline(lines, line);) {
    nlohmann::json event = nlohmann::json::parse(line);
    if (event.at("event") == kind) out.push_back(event);
  }
  return out;
}

// What the multi-rank engine tests start from: vit-tiny (4 blocks, 10
// sub-layers) without dropout on the learnable synthetic images, AdamW,
// one thread per rank, a 4-stage 1F1B pipeline with 4 micro-batches, no
// freezing; each test sets what it is about.
inline TrainConfig vit_tiny_engine_run(const std::string& out) {
  TrainConfig c;
  c.model.preset = "vit-tiny";
  c.model.hidden_dropout = 0.0;
  c.model.attention_dropout = 0.0;
  c.data.dataset = "synthetic-image";
  c.data.train_samples = 1024;
  c.data.eval_samples = 128;
  c.train.batch_size = 32;
  c.train.optimizer = "adamw";
  c.train.lr = 2e-3;
  c.train.log_every_steps = 4;
  c.eval.every_epochs = 1;
  c.runtime.threads = 1;
  c.output.dir = out;
  c.parallel.pipeline_stages = 4;
  c.parallel.micro_batches = 4;
  c.parallel.schedule = "1f1b";
  // A schedule that deadlocks (as an unpaired one does under NCCL's rules in
  // the nccl-rules run) fails within a minute naming the exchange, instead
  // of at CTest's limit.
  c.parallel.comm_timeout_s = 60.0;
  c.autopipe.frozen_cost = 0.0;
  return c;
}

// The layout-equivalence tests' run (CPU and GPU): vit-tiny with 2 blocks
// (6 sub-layers: enough for 4 stages), dropout 0.1, 5 SGD steps of 16
// samples with clipping active, no evaluation, one thread per rank.
inline TrainConfig tiny_run(const std::string& out, int64_t stages, int64_t micro, const std::string& schedule) {
  TrainConfig c;
  c.model.preset = "vit-tiny";
  c.model.num_layers = 2;  // 6 sub-layers: enough for 4 stages
  // Dropout on: counter-based masks draw alike on every layout.
  c.model.hidden_dropout = 0.1;
  c.model.attention_dropout = 0.1;
  c.data.dataset = "synthetic-image";
  c.data.train_samples = 128;
  c.data.eval_samples = 40;  // not a multiple of the replica count
  c.train.batch_size = 16;
  c.train.epochs = 1;
  c.train.max_steps = 5;
  c.train.log_every_steps = 1;
  // SGD: AdamW would turn the rounding noise of gradients that are zero in
  // exact arithmetic (attention key biases: softmax ignores a per-row shift)
  // into full-size steps whose sign depends on summation order.
  c.train.optimizer = "sgd";
  c.train.lr = 0.05;
  c.train.momentum = 0.9;
  c.train.grad_clip_norm = 0.5;  // clipping active: the global norm must span the stages
  c.eval.every_epochs = 0;
  c.runtime.threads = 1;
  c.parallel.comm_timeout_s = 60.0;  // as vit_tiny_engine_run: a deadlock fails in a minute
  c.output.dir = out;
  c.parallel.pipeline_stages = stages;
  c.parallel.micro_batches = micro;
  c.parallel.schedule = schedule;
  return c;
}

// Every tensor of every world rank's part of checkpoint `step` under `dir`
// (replicas agree, so the first copy of a name is kept).
inline std::map<std::string, torch::Tensor> checkpoint_tensors(const std::string& dir, int64_t step,
                                                               const std::string& file) {
  std::map<std::string, torch::Tensor> out;
  char name[64];
  std::snprintf(name, sizeof(name), "step-%010lld", static_cast<long long>(step));
  for (int rank = 0; rank < world().size(); ++rank) {
    char rank_dir[32];
    std::snprintf(rank_dir, sizeof(rank_dir), "rank-%05d", rank);
    for (auto& [key, tensor] : load_safetensors(dir + "/" + rank_dir + "/" + name + "/" + file))
      out.emplace(key, tensor.clone());
  }
  return out;
}

// Removes every rank's checkpoint of each step in `steps` under `dir` (and
// its manifest), so a resume with checkpoint.resume=auto starts from an
// earlier one. Collective: rank 0 removes between two barriers.
inline void remove_checkpoints(const std::string& dir, const std::vector<int64_t>& steps) {
  world().barrier();
  if (world().rank() == 0) {
    for (int64_t step : steps) {
      char name[32];
      std::snprintf(name, sizeof(name), "step-%010lld", static_cast<long long>(step));
      std::remove((dir + "/manifest-" + name + ".json").c_str());
      for (int rank = 0; rank < world().size(); ++rank) {
        char rank_dir[32];
        std::snprintf(rank_dir, sizeof(rank_dir), "/rank-%05d/", rank);
        remove_tree(dir + rank_dir + name);
      }
    }
  }
  world().barrier();
}

// The transition tests' run: 8 steps, checkpoints every 4 into
// `checkpoint_dir`, and with `freeze` a manual freeze of 2 blocks at step 4
// (no warm-up, no cap), so the checkpoint of step 4 is written after it.
inline void freeze_two_blocks_at_step_four(TrainConfig& c, const std::string& checkpoint_dir, bool freeze) {
  c.train.max_steps = 8;
  c.checkpoint.dir = checkpoint_dir;
  c.checkpoint.every_steps = 4;
  c.checkpoint.every_epochs = 0;
  c.freeze.policy = freeze ? "manual" : "none";
  c.freeze.manual = freeze ? std::vector<double>{2} : std::vector<double>{};
  c.freeze.every_steps = freeze ? 4 : 0;
  c.freeze.warmup_decisions = 0;
  c.freeze.max_fraction = 1.0;
}

}  // namespace pipet::testing
