// CUDA tensors over the communicators under mpirun -np 2: the MPI backend
// with host staging, the per-group backend choice, and NCCL (one GPU per rank,
// and single-member groups that run even when the ranks share one GPU), all
// against hand-computed values. Skipped without a CUDA device or without a
// CUDA LibTorch (the compile-only build).
#include "pipet/build_config.h"
#include "runtime/comm/group_factory.h"
#include "runtime/comm/host_staged_communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/errors.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/support/expect_error.h"
#if PIPET_WITH_NCCL
#include "runtime/comm/nccl_communicator.h"
#endif

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pipet {
namespace {

using pipet::testing::error_message;
using std::chrono::milliseconds;

class GpuCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = make_world_communicator(test_runtime());
    world_->set_default_timeout(milliseconds(20000));
    devices_ = cuda_device_count();
    if (devices_ == 0) GTEST_SKIP() << "no CUDA device is visible to this process";
    if (!torch::cuda::is_available())
      GTEST_SKIP() << "this LibTorch has no CUDA support (a compile-only build)";
    device_ = test_runtime().local_rank() % devices_;
  }

  torch::Device cuda() const { return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_)); }

  // A duplicate of world that a factory or wrapper may own.
  std::unique_ptr<Communicator> world_copy(const std::string& name) {
    return world_->subgroup(0, world_->rank(), name);
  }

  // True when every rank has its own GPU (all ranks on this node: one mpirun).
  bool one_gpu_per_rank() const {
    return test_runtime().local_size() == world_->size() && devices_ >= world_->size();
  }

  // Rank-dependent values that stay exact in every dtype.
  torch::Tensor rank_values(int rank, int64_t n, at::ScalarType type) const {
    return (torch::arange(n, torch::kLong) % 7 + rank).to(type).to(cuda());
  }

  // Every operation on CUDA tensors (and one CPU tensor) over `comm`.
  void check_all_ops(Communicator& comm) {
    const int rank = comm.rank();
    const int size = comm.size();
    SCOPED_TRACE("group '" + comm.name() + "'");
    for (at::ScalarType type : {torch::kFloat, torch::kDouble, torch::kLong, torch::kBFloat16,
                                torch::kHalf, torch::kInt, torch::kByte, torch::kShort}) {
      for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{1} << 16}) {
        torch::Tensor t = rank_values(rank, n, type);
        comm.all_reduce(t);
        torch::Tensor expected =
            (torch::arange(n, torch::kLong) % 7 * size + size * (size - 1) / 2).to(type);
        EXPECT_TRUE(t.is_cuda());
        EXPECT_EQ(t.scalar_type(), type);
        EXPECT_TRUE(torch::equal(t.cpu(), expected)) << c10::toString(type) << " x " << n;
      }
    }
    for (at::ScalarType type : {torch::kFloat, torch::kBFloat16}) {
      torch::Tensor avg = torch::full({5}, rank + 1, torch::TensorOptions(type).device(cuda()));
      comm.all_reduce(avg, {ReduceOp::kAvg});
      EXPECT_TRUE(torch::allclose(avg.cpu().to(torch::kDouble),
                                  torch::full({5}, (size + 1) / 2.0, torch::kDouble)))
          << c10::toString(type) << " avg " << avg.cpu();
    }
    // Element 0 is largest on the last rank, element 1 on rank 0.
    torch::Tensor max = torch::tensor({rank, -rank}, torch::kLong).to(cuda());
    torch::Tensor min = max.clone();
    comm.all_reduce(max, {ReduceOp::kMax});
    comm.all_reduce(min, {ReduceOp::kMin});
    EXPECT_TRUE(torch::equal(max.cpu(), torch::tensor({size - 1, 0}, torch::kLong))) << max.cpu();
    EXPECT_TRUE(torch::equal(min.cpu(), torch::tensor({0, 1 - size}, torch::kLong))) << min.cpu();
    // Booleans: sum and max are "any", min is "all". Only rank 0 holds true at 0.
    torch::Tensor any = torch::tensor({rank == 0, false, true}).to(cuda());
    torch::Tensor all = any.clone();
    comm.all_reduce(any, {ReduceOp::kSum});
    comm.all_reduce(all, {ReduceOp::kMin});
    EXPECT_TRUE(torch::equal(any.cpu(), torch::tensor({true, false, true}))) << any.cpu();
    EXPECT_TRUE(torch::equal(all.cpu(), torch::tensor({size == 1, false, true}))) << all.cpu();
    // Non-contiguous in place: the transposed view gets the sum.
    torch::Tensor base = rank_values(rank, 12, torch::kFloat).view({3, 4});
    torch::Tensor view = base.t();
    comm.all_reduce(view);
    torch::Tensor sum_expected =
        (torch::arange(12, torch::kLong) % 7 * size + size * (size - 1) / 2).to(torch::kFloat).view({3, 4});
    EXPECT_TRUE(torch::equal(base.cpu(), sum_expected)) << base.cpu();

    // Broadcast from the last rank into a non-contiguous view.
    torch::Tensor target = torch::full({4, 2}, rank * 10.0, torch::TensorOptions(torch::kDouble).device(cuda()));
    torch::Tensor target_view = target.t();
    comm.broadcast(target_view, {size - 1});
    EXPECT_TRUE(torch::equal(target.cpu(), torch::full({4, 2}, (size - 1) * 10.0, torch::kDouble)))
        << target.cpu();

    // All-gather: output[r] holds rank r's input.
    torch::Tensor gathered =
        comm.all_gather(torch::full({2, 3}, rank, torch::TensorOptions(torch::kInt).device(cuda())));
    ASSERT_TRUE(gathered.is_cuda());
    ASSERT_EQ(gathered.sizes(), (std::vector<int64_t>{size, 2, 3}));
    for (int r = 0; r < size; ++r)
      EXPECT_TRUE(torch::equal(gathered[r].cpu(), torch::full({2, 3}, r, torch::kInt))) << "slot " << r;

    if (size >= 2) {
      // Pairs (0,1), (2,3)...: the lower rank sends first, so NCCL's in-order
      // point to point never has both sides sending at once.
      const int peer = rank % 2 == 0 ? rank + 1 : rank - 1;
      if (peer < size) {
        torch::Tensor outgoing = torch::arange(6, torch::kFloat).add(100 * rank).to(cuda());
        torch::Tensor incoming_base = torch::zeros({2, 3}, torch::TensorOptions(torch::kFloat).device(cuda()));
        torch::Tensor incoming = incoming_base.t();  // non-contiguous receive
        if (rank < peer) {
          comm.send(outgoing, peer, 3);
          comm.recv(incoming, peer, 4);
        } else {
          comm.recv(incoming, peer, 3);
          comm.send(outgoing, peer, 4);
        }
        torch::Tensor expected_in = torch::arange(6, torch::kFloat).add(100 * peer).view({3, 2});
        EXPECT_TRUE(torch::equal(incoming.cpu(), expected_in)) << incoming.cpu();
      }
    }
    comm.barrier();

    // CPU tensors still work on the same group.
    torch::Tensor host = torch::full({3}, rank + 1, torch::kLong);
    comm.all_reduce(host);
    EXPECT_TRUE(torch::equal(host, torch::full({3}, size * (size + 1) / 2, torch::kLong))) << host;
  }

  std::unique_ptr<MpiCommunicator> world_;
  int devices_ = 0;
  int device_ = 0;
};

TEST_F(GpuCommTest, HostStagedMpiMatchesHandComputedValues) {
  HostStagedCommunicator staged(world_copy("staged"));
  EXPECT_EQ(staged.default_timeout(), milliseconds(20000));
  check_all_ops(staged);
  // Async form: the result is on the device once wait() returns.
  torch::Tensor t = torch::ones({256}, torch::TensorOptions(torch::kFloat).device(cuda()));
  auto work = staged.all_reduce_async(t);
  work->wait(milliseconds(20000));
  EXPECT_TRUE(work->completed());
  EXPECT_TRUE(torch::equal(t.cpu(), torch::full({256}, static_cast<float>(staged.size()))));
  // Subgroups stay staged: single-member groups leave values unchanged.
  std::unique_ptr<Communicator> solo = staged.subgroup(staged.rank(), 0, "staged-solo");
  ASSERT_NE(dynamic_cast<HostStagedCommunicator*>(solo.get()), nullptr);
  torch::Tensor mine = torch::full({4}, staged.rank() + 5.0, torch::TensorOptions(torch::kFloat).device(cuda()));
  solo->all_reduce(mine);
  EXPECT_TRUE(torch::equal(mine.cpu(), torch::full({4}, staged.rank() + 5.0, torch::kFloat)));
}

TEST_F(GpuCommTest, BackendFollowsDeviceOwnership) {
  GroupBackendOptions options;
  options.device = device_;
  std::unique_ptr<Communicator> chosen = make_group_communicator(world_copy("auto"), options);
  const bool expect_nccl = PIPET_WITH_NCCL && one_gpu_per_rank();
  bool is_nccl = false;
#if PIPET_WITH_NCCL
  is_nccl = dynamic_cast<NcclCommunicator*>(chosen.get()) != nullptr;
#endif
  EXPECT_EQ(is_nccl, expect_nccl);
  EXPECT_EQ(dynamic_cast<HostStagedCommunicator*>(chosen.get()) != nullptr, !expect_nccl);
  torch::Tensor t = torch::full({8}, world_->rank() + 1.0, torch::TensorOptions(torch::kFloat).device(cuda()));
  chosen->all_reduce(t);
  const int size = world_->size();
  EXPECT_TRUE(torch::equal(t.cpu(), torch::full({8}, size * (size + 1) / 2.0, torch::kFloat)));

  options.backend = CommBackend::kMpi;
  std::unique_ptr<Communicator> forced = make_group_communicator(world_copy("mpi"), options);
  EXPECT_NE(dynamic_cast<HostStagedCommunicator*>(forced.get()), nullptr);

  if (!expect_nccl) {
    options.backend = CommBackend::kNccl;
    const std::string message = error_message<CommError>(
        [&] { make_group_communicator(world_copy("nccl-refused"), options); });
    EXPECT_NE(message.find("NCCL was asked for but cannot be used"), std::string::npos) << message;
  }

  // ProcessGroups with the factory: one pipeline of every rank, single-member
  // stage groups; a CUDA all-reduce over the pipeline sums every rank.
  ProcessGroups groups(*world_, size, group_factory(GroupBackendOptions{device_, CommBackend::kAuto}));
  torch::Tensor over_pipeline = torch::full({3}, 2.0, torch::TensorOptions(torch::kDouble).device(cuda()));
  groups.pipeline().all_reduce(over_pipeline);
  EXPECT_TRUE(torch::equal(over_pipeline.cpu(), torch::full({3}, 2.0 * size, torch::kDouble)));
  torch::Tensor over_stage = torch::full({3}, 7.0, torch::TensorOptions(torch::kDouble).device(cuda()));
  groups.stage_dp().all_reduce(over_stage);
  EXPECT_TRUE(torch::equal(over_stage.cpu(), torch::full({3}, 7.0, torch::kDouble)));
}

// Runs everywhere, GPU or not: a rank without a device never gets NCCL, and
// CPU tensors pass through the host staging unchanged.
TEST(GpuCommChoice, RanksWithoutDevicesUseHostStagedMpi) {
  auto world = make_world_communicator(test_runtime());
  world->set_default_timeout(milliseconds(20000));
  const int rank = world->rank();
  const int size = world->size();
  std::unique_ptr<Communicator> chosen =
      make_group_communicator(world->subgroup(0, rank, "cpu-only"), GroupBackendOptions{});
  ASSERT_NE(dynamic_cast<HostStagedCommunicator*>(chosen.get()), nullptr);
  EXPECT_EQ(chosen->name(), "cpu-only");
  torch::Tensor t = torch::full({5}, rank + 1, torch::kLong);
  chosen->all_reduce(t);
  EXPECT_TRUE(torch::equal(t, torch::full({5}, size * (size + 1) / 2, torch::kLong))) << t;
  torch::Tensor gathered = chosen->all_gather(torch::full({2}, rank, torch::kInt));
  for (int r = 0; r < size; ++r) EXPECT_TRUE(torch::equal(gathered[r], torch::full({2}, r, torch::kInt)));

  GroupBackendOptions nccl_only;
  nccl_only.backend = CommBackend::kNccl;
  std::string message = error_message<CommError>(
      [&] { make_group_communicator(world->subgroup(0, rank, "want-nccl"), nccl_only); });
  EXPECT_NE(message.find("group 'want-nccl'"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0 has no CUDA device"), std::string::npos) << message;

  GroupBackendOptions bad_device;
  bad_device.device = 1000;
  message = error_message<CommError>(
      [&] { make_group_communicator(world->subgroup(0, rank, "bad-device"), bad_device); });
  EXPECT_NE(message.find("device cuda:1000 does not exist"), std::string::npos) << message;

  // ProcessGroups through the factory: 2 stages when the world allows it.
  const int stages = size % 2 == 0 ? 2 : 1;
  ProcessGroups groups(*world, stages, group_factory(GroupBackendOptions{}));
  EXPECT_NE(dynamic_cast<HostStagedCommunicator*>(&groups.pipeline()), nullptr);
  torch::Tensor over_stage = torch::full({2}, 1.0, torch::kDouble);
  groups.stage_dp().all_reduce(over_stage);
  EXPECT_TRUE(torch::equal(over_stage, torch::full({2}, static_cast<double>(size / stages), torch::kDouble)));
}

#if PIPET_WITH_NCCL

// Single-member NCCL groups: each rank its own communicator, so this runs
// even when the ranks share one GPU.
TEST_F(GpuCommTest, NcclSingleMemberGroups) {
  const int world_rank = world_->rank();
  auto nccl = NcclCommunicator::create(world_->subgroup(world_rank, 0, "solo"), device_);
  EXPECT_GT(NcclCommunicator::library_version(), 0);
  EXPECT_EQ(nccl->size(), 1);
  EXPECT_EQ(nccl->device(), device_);
  check_all_ops(*nccl);

  // Split: color 0 keeps the one member, a negative color opts out.
  std::unique_ptr<Communicator> child = nccl->subgroup(0, 0, "solo-child");
  ASSERT_NE(dynamic_cast<NcclCommunicator*>(child.get()), nullptr);
  EXPECT_EQ(child->name(), "solo-child");
  torch::Tensor t = torch::full({4}, 3.0, torch::TensorOptions(torch::kFloat).device(cuda()));
  child->all_reduce(t, {ReduceOp::kMax});
  EXPECT_TRUE(torch::equal(t.cpu(), torch::full({4}, 3.0, torch::kFloat)));
  EXPECT_EQ(nccl->subgroup(-1, 0, "nobody"), nullptr);

  // Bad inputs name the problem.
  std::string message = error_message<CommError>([&] { nccl->send(t, 0, 1); });
  EXPECT_NE(message.find("send to rank 0 tag 1 on group 'solo'"), std::string::npos) << message;
  EXPECT_NE(message.find("itself"), std::string::npos) << message;
  torch::Tensor ints = torch::ones({2}, torch::TensorOptions(torch::kInt).device(cuda()));
  message = error_message<CommError>([&] { nccl->all_reduce(ints, {ReduceOp::kAvg}); });
  EXPECT_NE(message.find("avg needs a floating-point tensor"), std::string::npos) << message;

  // After abort every operation says so instead of hanging.
  nccl->abort();
  message = error_message<CommError>([&] { nccl->all_reduce(t); });
  EXPECT_NE(message.find("aborted"), std::string::npos) << message;
}

TEST_F(GpuCommTest, NcclAcrossRanksWithTimeoutAbort) {
  if (!one_gpu_per_rank())
    GTEST_SKIP() << "NCCL across ranks needs one GPU per rank (" << devices_ << " GPU(s) for "
                 << world_->size() << " ranks)";
  auto nccl = NcclCommunicator::create(world_copy("nccl-world"), device_);
  nccl->set_default_timeout(milliseconds(20000));
  check_all_ops(*nccl);

  // Split into even and odd ranks.
  const int rank = nccl->rank();
  std::unique_ptr<Communicator> parity = nccl->subgroup(rank % 2, rank, "parity");
  ASSERT_NE(parity, nullptr);
  torch::Tensor t = torch::full({16}, 1.0, torch::TensorOptions(torch::kFloat).device(cuda()));
  parity->all_reduce(t);
  const int members = (nccl->size() + (rank % 2 == 0 ? 1 : 0)) / 2;
  EXPECT_TRUE(torch::equal(t.cpu(), torch::full({16}, static_cast<float>(members))));

  // Rank 0 waits for a message rank 1 never sends: the wait times out, the
  // communicator is aborted, and the error names operation, group and rank.
  if (rank == 0) {
    torch::Tensor never = torch::zeros({4}, torch::TensorOptions(torch::kFloat).device(cuda()));
    auto work = nccl->recv_async(never, 1, 0);
    const std::string message = error_message<CommError>([&] { work->wait(milliseconds(500)); });
    EXPECT_NE(message.find("recv from rank 1 tag 0 on group 'nccl-world' (rank 0 of"),
              std::string::npos) << message;
    EXPECT_NE(message.find("did not complete within the timeout of 500 ms"), std::string::npos)
        << message;
    const std::string later = error_message<CommError>([&] { nccl->barrier(); });
    EXPECT_NE(later.find("aborted"), std::string::npos) << later;
  }
  world_->barrier();
}

#endif  // PIPET_WITH_NCCL

}  // namespace
}  // namespace pipet
