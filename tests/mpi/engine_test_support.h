// What the engine's multi-rank tests share: the world communicator of the
// test process and a temporary directory every rank agrees on.
#pragma once

#include "runtime/comm/mpi_communicator.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/support/temp_dir.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

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

}  // namespace pipet::testing
