// What the engine's multi-rank tests share: the world communicator of the
// test process and a temporary directory every rank agrees on.
#pragma once

#include "runtime/comm/mpi_communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/files.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/support/temp_dir.h"

#include <nlohmann/json.hpp>

#include <algorithm>
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
  c.autopipe.frozen_cost = 0.0;
  return c;
}

}  // namespace pipet::testing
