// Every Communicator operation on 2 and 4 ranks against hand-computed values.
#include "runtime/comm/local_communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/errors.h"
#include "tests/mpi/mpi_test_env.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace pipet {
namespace {

using std::chrono::milliseconds;

class CommTest : public testing::Test {
 protected:
  void SetUp() override {
    world_ = make_world_communicator(test_runtime());
    // A test that goes wrong fails fast instead of running into CTest's limit.
    world_->set_default_timeout(milliseconds(10000));
    rank_ = world_->rank();
    size_ = world_->size();
  }

  // Rank-dependent values that stay exact in every dtype (bfloat16 included).
  torch::Tensor rank_values(int64_t n, at::ScalarType type) const {
    return (torch::arange(n, torch::kLong) % 7 + rank_).to(type);
  }

  std::unique_ptr<MpiCommunicator> world_;
  int rank_ = 0;
  int size_ = 1;
};

const std::vector<at::ScalarType> kReduceTypes{torch::kFloat, torch::kDouble, torch::kLong,
                                               torch::kBFloat16, torch::kHalf, torch::kInt,
                                               torch::kByte};
const std::vector<int64_t> kSizes{0, 1, 1000, 1 << 20};

std::string label(at::ScalarType type, int64_t n) {
  return std::string(c10::toString(type)) + " x " + std::to_string(n);
}

TEST_F(CommTest, WorldMatchesRuntime) {
  EXPECT_EQ(world_->name(), "world");
  EXPECT_EQ(rank_, test_runtime().world_rank());
  EXPECT_EQ(size_, test_runtime().world_size());
  EXPECT_GE(size_, 2);
  EXPECT_GE(test_runtime().local_rank(), 0);
  EXPECT_LT(test_runtime().local_rank(), test_runtime().local_size());
  EXPECT_TRUE(MpiRuntime::active());
}

TEST_F(CommTest, AllReduceSumEveryDtypeAndSize) {
  for (at::ScalarType type : kReduceTypes) {
    for (int64_t n : kSizes) {
      torch::Tensor t = rank_values(n, type);
      world_->all_reduce(t);
      // sum over ranks r of (i % 7 + r) = size * (i % 7) + size (size - 1) / 2
      torch::Tensor expected =
          (torch::arange(n, torch::kLong) % 7 * size_ + size_ * (size_ - 1) / 2).to(type);
      EXPECT_EQ(t.scalar_type(), type);
      EXPECT_TRUE(torch::equal(t, expected)) << label(type, n);
    }
  }
}

TEST_F(CommTest, AllReduceAvgMaxMin) {
  for (at::ScalarType type : {torch::kFloat, torch::kDouble, torch::kBFloat16}) {
    torch::Tensor avg = torch::full({5}, rank_ + 1, type);
    world_->all_reduce(avg, {ReduceOp::kAvg});
    EXPECT_TRUE(torch::allclose(avg.to(torch::kDouble),
                                torch::full({5}, (size_ + 1) / 2.0, torch::kDouble)))
        << c10::toString(type) << " avg " << avg;
  }
  for (at::ScalarType type : {torch::kFloat, torch::kLong, torch::kBFloat16}) {
    // Element 0 is largest on the last rank, element 1 on rank 0.
    torch::Tensor base = torch::tensor({rank_, -rank_, 3}, torch::kLong).to(type);
    torch::Tensor max = base.clone();
    torch::Tensor min = base.clone();
    world_->all_reduce(max, {ReduceOp::kMax});
    world_->all_reduce(min, {ReduceOp::kMin});
    EXPECT_TRUE(torch::equal(max, torch::tensor({size_ - 1, 0, 3}, torch::kLong).to(type)))
        << c10::toString(type) << " max " << max;
    EXPECT_TRUE(torch::equal(min, torch::tensor({0, -(size_ - 1), 3}, torch::kLong).to(type)))
        << c10::toString(type) << " min " << min;
  }
}

TEST_F(CommTest, AllReduceBoolIsLogical) {
  torch::Tensor any = torch::tensor({rank_ == 0, false, true});
  torch::Tensor all = any.clone();
  world_->all_reduce(any, {ReduceOp::kMax});
  world_->all_reduce(all, {ReduceOp::kMin});
  EXPECT_TRUE(torch::equal(any, torch::tensor({true, false, true})));
  EXPECT_TRUE(torch::equal(all, torch::tensor({false, false, true})));
}

TEST_F(CommTest, AllReduceNonContiguousWritesThroughTheView) {
  const float factor = size_ * (size_ + 1) / 2.0f;  // sum of (r + 1)
  for (at::ScalarType type : {torch::kFloat, torch::kBFloat16}) {
    torch::Tensor base = (torch::arange(12, torch::kFloat).view({3, 4}) * (rank_ + 1)).to(type);
    torch::Tensor view = base.t();  // [4, 3], non-contiguous
    ASSERT_FALSE(view.is_contiguous());
    world_->all_reduce(view);
    torch::Tensor expected = (torch::arange(12, torch::kFloat).view({3, 4}) * factor).to(type);
    EXPECT_TRUE(torch::equal(base, expected)) << c10::toString(type) << base;
    EXPECT_TRUE(torch::equal(view, expected.t())) << c10::toString(type);
  }
}

TEST_F(CommTest, AllReduceRejectsBadInputBeforeCommunicating) {
  torch::Tensor ints = torch::ones({3}, torch::kLong);
  try {
    world_->all_reduce(ints, {ReduceOp::kAvg});
    FAIL() << "avg of int64 must throw";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("avg needs a floating-point tensor"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(rank_)), std::string::npos);
  }
  torch::Tensor undefined;
  EXPECT_THROW(world_->all_reduce(undefined), CommError);
  torch::Tensor expanded = torch::ones({1}).expand({4});
  EXPECT_THROW(world_->all_reduce(expanded), CommError);
  torch::Tensor complex = torch::zeros({2}, torch::kComplexFloat);
  EXPECT_THROW(world_->all_reduce(complex), CommError);
}

TEST_F(CommTest, BroadcastFromLastRankEveryDtypeAndSize) {
  const int root = size_ - 1;
  for (at::ScalarType type : {torch::kFloat, torch::kDouble, torch::kLong, torch::kBFloat16}) {
    for (int64_t n : kSizes) {
      torch::Tensor expected = (torch::arange(n, torch::kLong) % 100).to(type);
      torch::Tensor t = rank_ == root ? expected.clone() : torch::zeros({n}, type);
      world_->broadcast(t, {root});
      EXPECT_TRUE(torch::equal(t, expected)) << label(type, n);
    }
  }
}

TEST_F(CommTest, BroadcastNonContiguous) {
  torch::Tensor source = torch::arange(20, torch::kDouble).view({4, 5});
  torch::Tensor base = rank_ == 0 ? source.clone() : torch::full({4, 5}, -1.0, torch::kDouble);
  torch::Tensor view = base.t();
  world_->broadcast(view, {0});
  EXPECT_TRUE(torch::equal(base, source));
}

TEST_F(CommTest, BroadcastRejectsRootOutsideGroup) {
  torch::Tensor t = torch::zeros({2});
  EXPECT_THROW(world_->broadcast(t, {size_}), CommError);
  EXPECT_THROW(world_->broadcast(t, {-1}), CommError);
}

TEST_F(CommTest, AllGatherStacksInRankOrder) {
  torch::Tensor input = torch::full({2, 3}, rank_, torch::kLong);
  torch::Tensor gathered = world_->all_gather(input);
  ASSERT_EQ(gathered.sizes(), torch::IntArrayRef({size_, 2, 3}));
  for (int r = 0; r < size_; ++r)
    EXPECT_TRUE(torch::equal(gathered[r], torch::full({2, 3}, r, torch::kLong))) << "slot " << r;

  torch::Tensor bf16 = (torch::arange(6, torch::kFloat).view({2, 3}) + 10 * rank_)
                           .to(torch::kBFloat16).t();  // non-contiguous input
  torch::Tensor gathered_view = world_->all_gather(bf16);
  ASSERT_EQ(gathered_view.sizes(), torch::IntArrayRef({size_, 3, 2}));
  for (int r = 0; r < size_; ++r) {
    torch::Tensor expected =
        (torch::arange(6, torch::kFloat).view({2, 3}) + 10 * r).to(torch::kBFloat16).t();
    EXPECT_TRUE(torch::equal(gathered_view[r], expected)) << "slot " << r;
  }

  torch::Tensor empty = world_->all_gather(torch::zeros({0, 4}));
  EXPECT_EQ(empty.sizes(), torch::IntArrayRef({size_, 0, 4}));
}

TEST_F(CommTest, SendRecvRing) {
  const int next = (rank_ + 1) % size_;
  const int prev = (rank_ + size_ - 1) % size_;
  // Large enough to take MPI's rendezvous path; both sides are posted first.
  for (int64_t n : {int64_t{1}, int64_t{1} << 20}) {
    torch::Tensor outgoing = torch::full({n}, rank_ * 10, torch::kFloat);
    torch::Tensor incoming = torch::zeros({n}, torch::kFloat);
    auto recv = world_->recv_async(incoming, prev, 3);
    auto send = world_->send_async(outgoing, next, 3);
    send->wait(milliseconds(10000));
    recv->wait(milliseconds(10000));
    EXPECT_TRUE(torch::equal(incoming, torch::full({n}, prev * 10, torch::kFloat))) << n;
  }
}

TEST_F(CommTest, RecvIntoNonContiguousTensorAndZeroSize) {
  const int next = (rank_ + 1) % size_;
  const int prev = (rank_ + size_ - 1) % size_;
  torch::Tensor base = torch::zeros({3, 2}, torch::kLong);
  torch::Tensor view = base.t();  // [2, 3]
  auto recv = world_->recv_async(view, prev, 5);
  world_->send(torch::arange(6, torch::kLong).view({2, 3}) + prev * 0 + rank_, next, 5);
  recv->wait(milliseconds(10000));
  EXPECT_TRUE(torch::equal(view, torch::arange(6, torch::kLong).view({2, 3}) + prev));

  torch::Tensor nothing = torch::zeros({0}, torch::kFloat);
  auto recv_empty = world_->recv_async(nothing, prev, 6);
  world_->send(torch::zeros({0}, torch::kFloat), next, 6);
  EXPECT_NO_THROW(recv_empty->wait(milliseconds(10000)));
}

TEST_F(CommTest, RecvSizeMismatchIsReported) {
  // Rank 0 sends 4 floats twice; rank 1 expects 3 (truncation), then 5.
  if (rank_ == 0) {
    world_->send(torch::ones({4}), 1, 11);
    world_->send(torch::ones({4}), 1, 12);
  } else if (rank_ == 1) {
    torch::Tensor small = torch::zeros({3});
    try {
      world_->recv(small, 0, 11);
      ADD_FAILURE() << "a 16-byte message into a 12-byte tensor must throw";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("recv from rank 0 tag 11"), std::string::npos) << e.what();
    }
    torch::Tensor large = torch::zeros({5});
    try {
      world_->recv(large, 0, 12);
      ADD_FAILURE() << "a 16-byte message into a 20-byte tensor must throw";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("expected 20 bytes"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("received 16 bytes"), std::string::npos) << e.what();
    }
  }
  world_->barrier();
}

TEST_F(CommTest, PeerAndTagValidation) {
  torch::Tensor t = torch::zeros({1});
  EXPECT_THROW(world_->send(t, size_, 0), CommError);
  EXPECT_THROW(world_->recv(t, -1, 0), CommError);
  EXPECT_THROW(world_->send(t, 0, -5), CommError);
}

TEST_F(CommTest, CreateGroupOfEvenRanks) {
  std::vector<int> evens;
  for (int r = 0; r < size_; r += 2) evens.push_back(r);
  std::unique_ptr<MpiCommunicator> group = world_->create_group(evens, "evens");
  if (rank_ % 2 == 1) {
    EXPECT_EQ(group, nullptr);
  } else {
    ASSERT_NE(group, nullptr);
    EXPECT_EQ(group->name(), "evens");
    EXPECT_EQ(group->size(), static_cast<int>(evens.size()));
    EXPECT_EQ(group->rank(), rank_ / 2);
    torch::Tensor t = torch::full({3}, rank_, torch::kLong);
    group->all_reduce(t);
    int64_t expected = 0;
    for (int r : evens) expected += r;
    EXPECT_TRUE(torch::equal(t, torch::full({3}, expected, torch::kLong)));
  }
  world_->barrier();
}

TEST_F(CommTest, CreateGroupRejectsBadLists) {
  EXPECT_THROW(world_->create_group({}, "empty"), CommError);
  EXPECT_THROW(world_->create_group({0, 0}, "twice"), CommError);
  EXPECT_THROW(world_->create_group({0, size_}, "outside"), CommError);
}

TEST_F(CommTest, SplitByParityWithReversedKeys) {
  std::unique_ptr<MpiCommunicator> half = world_->split(rank_ % 2, -rank_, "parity");
  ASSERT_NE(half, nullptr);
  const int members = (size_ - rank_ % 2 + 1) / 2;
  EXPECT_EQ(half->size(), members);
  EXPECT_EQ(half->rank(), members - 1 - rank_ / 2);  // higher world rank first
  torch::Tensor gathered = half->all_gather(torch::full({1}, rank_, torch::kInt));
  // Slot 0 holds the highest world rank of this parity.
  EXPECT_EQ(gathered[0].item<int>(), rank_ % 2 + 2 * (members - 1));

  std::unique_ptr<MpiCommunicator> none = world_->split(rank_ == 0 ? 0 : -1, 0, "only0");
  EXPECT_EQ(none == nullptr, rank_ != 0);
  if (none) {
    EXPECT_EQ(none->size(), 1);
  }
}

TEST_F(CommTest, WorkCompletesOnlyAfterThePeerActs) {
  if (rank_ == 1) {
    torch::Tensor incoming = torch::zeros({4}, torch::kInt);
    auto recv = world_->recv_async(incoming, 0, 7);
    // Rank 0 sends only after the barrier, which we have not yet entered.
    EXPECT_FALSE(recv->completed());
    world_->barrier();
    recv->wait(milliseconds(10000));
    EXPECT_TRUE(recv->completed());
    EXPECT_TRUE(torch::equal(incoming, torch::tensor({1, 2, 3, 4}, torch::kInt)));
    EXPECT_NO_THROW(recv->wait(milliseconds(1)));  // a second wait is a no-op
  } else {
    world_->barrier();
    if (rank_ == 0) world_->send(torch::tensor({1, 2, 3, 4}, torch::kInt), 1, 7);
  }
  auto barrier = world_->barrier_async();
  barrier->wait(milliseconds(10000));
  EXPECT_TRUE(barrier->completed());
}

TEST_F(CommTest, RecvTimeoutNamesOperationRankAndTimeout) {
  constexpr int kSilentTag = 4242;
  if (rank_ == 0) {
    torch::Tensor incoming = torch::zeros({2});
    auto recv = world_->recv_async(incoming, 1, kSilentTag);
    try {
      recv->wait(milliseconds(100));
      ADD_FAILURE() << "nobody sends on tag 4242 before the barrier; wait must time out";
    } catch (const CommError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("recv from rank 1 tag 4242"), std::string::npos) << message;
      EXPECT_NE(message.find("group 'world'"), std::string::npos) << message;
      EXPECT_NE(message.find("rank 0 of " + std::to_string(size_)), std::string::npos) << message;
      EXPECT_NE(message.find("100 ms"), std::string::npos) << message;
      EXPECT_EQ(e.exit_code(), ExitCode::kComm);
    }
    recv.reset();  // cancels the pending receive
  }
  world_->barrier();
  // The cancelled receive must not swallow a later message on the same tag.
  if (rank_ == 1) world_->send(torch::full({2}, 9.0f), 0, kSilentTag);
  if (rank_ == 0) {
    torch::Tensor incoming = torch::zeros({2});
    world_->recv(incoming, 1, kSilentTag);
    EXPECT_TRUE(torch::equal(incoming, torch::full({2}, 9.0f)));
  }
}

TEST_F(CommTest, DefaultTimeoutMustBePositive) {
  EXPECT_THROW(world_->set_default_timeout(milliseconds(0)), CommError);
  world_->set_default_timeout(milliseconds(1234));
  EXPECT_EQ(world_->default_timeout(), milliseconds(1234));
}

// Two ranks that each send to the other, then receive: ordinary MPI buffers
// the sends and passes; under NCCL's rules a send waits for its receive, so
// both wait in their sends and the timeout names the operation. Issued as one
// exchange, the same traffic passes under the rules.
TEST_F(CommTest, NcclRulesCatchACrossedExchangeThatOrdinaryMpiPasses) {
  const int kPairTag = 3;
  auto crossed = [&](MpiCommunicator& pair) {
    const int peer = 1 - pair.rank();
    torch::Tensor out = torch::full({4096}, static_cast<float>(pair.rank()));
    torch::Tensor in = torch::empty({4096});
    std::unique_ptr<Work> send =
        pair.exchange_async({send_op(out, peer, kPairTag, "stage " + std::to_string(pair.rank()) + " -> " +
                                                              std::to_string(peer) + ", activation of micro-batch 3")});
    pair.exchange({recv_op(in, peer, kPairTag, "gradient of micro-batch 2")});
    send->wait(pair.default_timeout());
    EXPECT_TRUE(torch::equal(in, torch::full({4096}, static_cast<float>(peer))));
  };
  {
    std::unique_ptr<MpiCommunicator> pair = world_->split(rank_ < 2 ? 0 : -1, rank_, "ordinary-pair");
    if (pair) crossed(*pair);
  }
  {
    std::unique_ptr<MpiCommunicator> pair = world_->split(rank_ < 2 ? 0 : -1, rank_, "strict-pair");
    if (pair) {
      pair->set_nccl_rules(true);
      pair->set_default_timeout(milliseconds(1500));
      const auto started = std::chrono::steady_clock::now();
      std::string message;
      try {
        crossed(*pair);
        ADD_FAILURE() << "a crossed, ungrouped exchange passed under NCCL's rules";
      } catch (const CommError& e) {
        message = e.what();
      }
      EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
      EXPECT_NE(message.find("activation of micro-batch 3"), std::string::npos) << message;
      EXPECT_NE(message.find("NCCL's rules"), std::string::npos) << message;
    }
  }
  world_->barrier();  // both ranks of the pair have timed out before the next split
  std::unique_ptr<MpiCommunicator> pair = world_->split(rank_ < 2 ? 0 : -1, rank_, "grouped-pair");
  if (!pair) return;
  pair->set_nccl_rules(true);
  const int peer = 1 - pair->rank();
  torch::Tensor out = torch::full({4096}, static_cast<float>(pair->rank()));
  torch::Tensor in = torch::empty({4096});
  pair->exchange({send_op(out, peer, kPairTag, "activation"), recv_op(in, peer, kPairTag, "gradient")});
  EXPECT_TRUE(torch::equal(in, torch::full({4096}, static_cast<float>(peer))));
}

// Under NCCL's rules one tag carries every message: receives take them in the
// order they were sent, whatever tag the caller names. Groups split from a
// communicator under the rules inherit them.
TEST_F(CommTest, NcclRulesMatchReceivesInIssueOrderAndSplitGroupsInheritThem) {
  world_->set_nccl_rules(true);
  std::unique_ptr<MpiCommunicator> pair = world_->split(rank_ < 2 ? 0 : -1, rank_, "ordered-pair");
  world_->set_nccl_rules(false);
  if (!pair) return;
  EXPECT_TRUE(pair->nccl_rules());
  if (pair->rank() == 0) {
    pair->exchange({send_op(torch::full({2}, 1.0f), 1, 7, "first"), send_op(torch::full({2}, 2.0f), 1, 5, "second")});
  } else {
    torch::Tensor first = torch::empty({2}), second = torch::empty({2});
    // Tags 5 then 7: ordinary MPI would match by tag and swap them.
    pair->exchange({recv_op(first, 0, 5, "first"), recv_op(second, 0, 7, "second")});
    EXPECT_TRUE(torch::equal(first, torch::full({2}, 1.0f)));
    EXPECT_TRUE(torch::equal(second, torch::full({2}, 2.0f)));
  }
}

TEST_F(CommTest, AnExchangeWithAMissingPeerNamesTheOperation) {
  std::unique_ptr<MpiCommunicator> pair = world_->split(rank_ < 2 ? 0 : -1, rank_, "lonely-pair");
  if (!pair) return;
  pair->set_default_timeout(milliseconds(500));
  if (pair->rank() == 1) {
    torch::Tensor in = torch::empty({8});
    try {
      pair->exchange({recv_op(in, 0, 1, "stage 0 -> 1, activation of micro-batch 5")});
      ADD_FAILURE() << "a receive nobody sends to completed";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("stage 0 -> 1, activation of micro-batch 5"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("rank 1 of 2"), std::string::npos) << e.what();
    }
  }
  pair->barrier({milliseconds(10000)});
}

TEST(MpiRuntimeTest, NcclRulesVariableMustBeZeroOrOne) {
  const char* set = std::getenv("PIPET_NCCL_RULES");
  const std::string before = set ? set : "";
  ::setenv("PIPET_NCCL_RULES", "yes", 1);
  try {
    make_world_communicator(test_runtime());
    ADD_FAILURE() << "PIPET_NCCL_RULES=yes was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("PIPET_NCCL_RULES"), std::string::npos) << e.what();
  }
  ::setenv("PIPET_NCCL_RULES", "1", 1);
  EXPECT_TRUE(make_world_communicator(test_runtime())->nccl_rules());
  ::unsetenv("PIPET_NCCL_RULES");
  EXPECT_FALSE(make_world_communicator(test_runtime())->nccl_rules());
  if (set) ::setenv("PIPET_NCCL_RULES", before.c_str(), 1);
}

TEST(MpiRuntimeTest, SecondRuntimeIsRejected) {
  try {
    MpiRuntime second;
    FAIL() << "a second MpiRuntime must throw";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("already initialised"), std::string::npos) << e.what();
  }
}

TEST(FactoryTest, PicksLocalOnlyForOneRank) {
  std::unique_ptr<Communicator> local = make_communicator(nullptr);
  EXPECT_NE(dynamic_cast<LocalCommunicator*>(local.get()), nullptr);
  std::unique_ptr<Communicator> world = make_communicator(&test_runtime());
  EXPECT_NE(dynamic_cast<MpiCommunicator*>(world.get()), nullptr);
  EXPECT_EQ(world->size(), test_runtime().world_size());
  EXPECT_EQ(world->name(), "world");
}

TEST(LocalCommunicatorTest, CollectivesAreIdentity) {
  LocalCommunicator local("solo");
  EXPECT_EQ(local.rank(), 0);
  EXPECT_EQ(local.size(), 1);
  EXPECT_EQ(local.name(), "solo");
  torch::Tensor t = torch::tensor({1.5f, -2.0f});
  local.all_reduce(t, {ReduceOp::kAvg});
  EXPECT_TRUE(torch::equal(t, torch::tensor({1.5f, -2.0f})));
  local.broadcast(t, {0});
  EXPECT_THROW(local.broadcast(t, {1}), CommError);
  torch::Tensor gathered = local.all_gather(t);
  EXPECT_EQ(gathered.sizes(), torch::IntArrayRef({1, 2}));
  EXPECT_TRUE(torch::equal(gathered[0], t));
  local.barrier();
  torch::Tensor ints = torch::ones({2}, torch::kLong);
  EXPECT_THROW(local.all_reduce(ints, {ReduceOp::kAvg}), CommError);
}

TEST(LocalCommunicatorTest, SendToSelfThenRecv) {
  LocalCommunicator local;
  torch::Tensor incoming = torch::zeros({2, 2});
  auto pending = local.recv_async(incoming, 0, 1);
  EXPECT_FALSE(pending->completed());
  local.send(torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2}), 0, 1);
  EXPECT_TRUE(pending->completed());
  pending->wait(milliseconds(10));
  EXPECT_TRUE(torch::equal(incoming, torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2})));

  torch::Tensor other = torch::zeros({2});
  try {
    local.recv(other, 0, 2, {milliseconds(5)});
    FAIL() << "a recv with no matching send must throw";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("recv from rank 0 tag 2"), std::string::npos) << e.what();
  }
  local.send(torch::zeros({3}), 0, 3);
  EXPECT_THROW(local.recv(other, 0, 3), CommError);  // 3 elements into 2
  EXPECT_THROW(local.send(other, 1, 0), CommError);
}

}  // namespace
}  // namespace pipet
