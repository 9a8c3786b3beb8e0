// Unit tests of the op-profile tables: how events fold into rows (nesting,
// device attribution, bookkeeping names), the JSON and text outputs, and
// LibTorch's profiler recording a real tiny training step.
#include "benchmarks/op_profiler.h"
#include "benchmarks/profile_table.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/torch_pch.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <sstream>

namespace pipet::bench {
namespace {

ProfiledEvent host(const std::string& name, uint64_t thread, double start, double duration,
                   uint64_t id, EventKind kind = EventKind::kHostOp, uint64_t linked = 0) {
  ProfiledEvent e;
  e.name = name;
  e.kind = kind;
  e.thread = thread;
  e.start_us = start;
  e.duration_us = duration;
  e.correlation_id = id;
  e.linked_correlation_id = linked;
  return e;
}

ProfiledEvent device(const std::string& name, double start, double duration, uint64_t linked) {
  ProfiledEvent e;
  e.name = name;
  e.kind = EventKind::kDevice;
  e.start_us = start;
  e.duration_us = duration;
  e.correlation_id = 9000 + linked;  // a device id space of its own: never a link target
  e.linked_correlation_id = linked;
  return e;
}

// A forward op with a kernel launch on thread 1, a backward op on thread 2
// at overlapping times, an async range, a hidden bookkeeping op, and device
// work linked to ops, to nothing, and to an id no op has.
std::vector<ProfiledEvent> sample_events() {
  std::vector<ProfiledEvent> events = {
      host("aten::linear", 1, 0, 100, 1),
      host("aten::addmm", 1, 10, 60, 2),
      // A runtime call under the OS thread id, linked to addmm: it nests in addmm.
      host("cudaLaunchKernel", 777, 20, 5, 500, EventKind::kHostOther, 2),
      host("aten::t", 1, 75, 5, 3),
      host("aten::add_", 1, 120, 10, 4),
      host("aten::is_leaf", 1, 125, 1, 8),
      host("AddmmBackward0", 2, 50, 40, 5),
      host("aten::mm", 2, 55, 30, 6),
      device("gemm_kernel", 30, 40, 2),
      device("gemm_kernel", 80, 20, 6),
      device("elementwise_kernel", 130, 7, 4),
      device("memset", 140, 3, 0),
      device("orphan_kernel", 150, 2, 999),
  };
  auto async = host("async_range", 1, 0, 300, 7);
  async.is_async = true;
  events.push_back(async);
  return events;
}

ProfileInfo info_for(const std::string& device_name, int steps = 2) {
  ProfileInfo info;
  info.source = "pipetransformer";
  info.label = "tiny batch 4 fp32";
  info.device = device_name;
  info.torch_version = "1.13.0";
  info.steps = steps;
  info.wall_ms_per_step = 1.5;
  return info;
}

std::map<std::string, OpRow> by_key(const OpProfile& profile) {
  std::map<std::string, OpRow> rows;
  for (const auto& row : profile.rows) rows[row.kind + ":" + row.name] = row;
  return rows;
}

TEST(SummarizeProfile, NestsHostEventsPerThreadAndGivesDeviceWorkToItsOp) {
  const auto profile = summarize_profile(sample_events(), info_for("cuda"));
  const auto rows = by_key(profile);
  ASSERT_EQ(rows.size(), 12u);  // 8 host names (is_leaf dropped) + 4 kernel names
  EXPECT_EQ(rows.count("op:aten::is_leaf"), 0u);

  const auto& linear = rows.at("op:aten::linear");
  EXPECT_EQ(linear.calls, 1);
  EXPECT_DOUBLE_EQ(linear.self_cpu_us, 35.0);  // 100 - addmm 60 - t 5
  EXPECT_DOUBLE_EQ(linear.total_cpu_us, 100.0);
  EXPECT_DOUBLE_EQ(linear.self_device_us, 0.0);
  const auto& addmm = rows.at("op:aten::addmm");
  EXPECT_DOUBLE_EQ(addmm.self_cpu_us, 55.0);  // the launch nested in it
  EXPECT_DOUBLE_EQ(addmm.self_device_us, 40.0);
  EXPECT_DOUBLE_EQ(rows.at("op:cudaLaunchKernel").self_cpu_us, 5.0);
  EXPECT_DOUBLE_EQ(rows.at("op:cudaLaunchKernel").self_device_us, 0.0);
  EXPECT_DOUBLE_EQ(rows.at("op:aten::add_").self_cpu_us, 10.0);  // the hidden op takes nothing
  EXPECT_DOUBLE_EQ(rows.at("op:aten::add_").self_device_us, 7.0);
  // Thread 2 overlaps thread 1 in time but nests only in itself.
  EXPECT_DOUBLE_EQ(rows.at("op:AddmmBackward0").self_cpu_us, 10.0);
  EXPECT_DOUBLE_EQ(rows.at("op:aten::mm").self_cpu_us, 30.0);
  EXPECT_DOUBLE_EQ(rows.at("op:aten::mm").self_device_us, 20.0);
  // Async: no self time, and nothing nests in it.
  EXPECT_DOUBLE_EQ(rows.at("op:async_range").self_cpu_us, 0.0);
  EXPECT_DOUBLE_EQ(rows.at("op:async_range").total_cpu_us, 300.0);

  const auto& gemm = rows.at("kernel:gemm_kernel");
  EXPECT_EQ(gemm.calls, 2);
  EXPECT_DOUBLE_EQ(gemm.self_device_us, 60.0);
  EXPECT_DOUBLE_EQ(gemm.self_cpu_us, 0.0);

  EXPECT_DOUBLE_EQ(profile.totals.self_cpu_us, 35 + 55 + 5 + 5 + 10 + 10 + 30);
  EXPECT_DOUBLE_EQ(profile.totals.device_us, 72.0);
  EXPECT_DOUBLE_EQ(profile.totals.op_self_device_us, 67.0);
  EXPECT_DOUBLE_EQ(profile.totals.unattributed_device_us, 5.0);  // memset + orphan

  // On CUDA by device time (ties by CPU time), elsewhere by CPU time (ties by name).
  std::vector<std::string> first;
  for (size_t i = 0; i < 5; ++i) first.push_back(profile.rows[i].kind + ":" + profile.rows[i].name);
  EXPECT_EQ(first, (std::vector<std::string>{"kernel:gemm_kernel", "op:aten::addmm", "op:aten::mm",
                                             "op:aten::add_", "kernel:elementwise_kernel"}));
  const auto on_cpu = summarize_profile(sample_events(), info_for("cpu"));
  first.clear();
  for (size_t i = 0; i < 5; ++i) first.push_back(on_cpu.rows[i].name);
  EXPECT_EQ(first, (std::vector<std::string>{"aten::addmm", "aten::linear", "aten::mm",
                                             "AddmmBackward0", "aten::add_"}));

  EXPECT_THROW(summarize_profile(sample_events(), info_for("cpu", 0)), ConfigError);
}

TEST(ProfileOutputs, JsonTableAndTraceCarryTheRows) {
  auto events = sample_events();
  events.push_back(host(std::string(120, 'x'), 1, 400, 1, 20));
  const auto profile = summarize_profile(events, info_for("cuda"));

  const auto json = profile_json(profile);
  EXPECT_EQ(json.at("schema"), kOpProfileSchema);
  EXPECT_EQ(json.at("source"), "pipetransformer");
  EXPECT_EQ(json.at("device"), "cuda");
  EXPECT_EQ(json.at("steps"), 2);
  EXPECT_EQ(json.at("sort_key"), "self_device_us");
  EXPECT_DOUBLE_EQ(json.at("totals").at("unattributed_device_us").get<double>(), 5.0);
  ASSERT_EQ(json.at("rows").size(), profile.rows.size());
  const auto& top = json.at("rows").at(0);
  EXPECT_EQ(top.at("name"), "gemm_kernel");
  EXPECT_EQ(top.at("kind"), "kernel");
  EXPECT_EQ(top.at("calls"), 2);
  EXPECT_DOUBLE_EQ(top.at("self_device_us").get<double>(), 60.0);

  std::ostringstream text;
  print_profile_table(profile, text, 4);
  const std::string table = text.str();
  EXPECT_NE(table.find("op profile: tiny batch 4 fp32 (pipetransformer, torch 1.13.0, cuda)"),
            std::string::npos);
  EXPECT_NE(table.find("device total 0.072 ms (launched by ops 0.067 ms, unattributed 0.005 ms)"),
            std::string::npos);
  EXPECT_NE(table.find("self device ms"), std::string::npos);
  // 60 of 72 us of device work: 83.3 %.
  EXPECT_NE(table.find("gemm_kernel  kernel      2        0.000         0.0         0.000           0.060           83.3"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("(9 more rows in the JSON)"), std::string::npos);

  std::ostringstream cpu_text;
  print_profile_table(summarize_profile(events, info_for("cpu")), cpu_text, 100);
  EXPECT_EQ(cpu_text.str().find("self device"), std::string::npos);
  EXPECT_NE(cpu_text.str().find(std::string(87, 'x') + "..."), std::string::npos);
  EXPECT_EQ(cpu_text.str().find(std::string(88, 'x')), std::string::npos);

  const auto trace = chrome_trace_json(events);
  const auto& trace_events = trace.at("traceEvents");
  ASSERT_EQ(trace_events.size(), events.size() - 1);  // without aten::is_leaf
  double earliest = 1e9;
  int on_device = 0;
  for (const auto& e : trace_events) {
    EXPECT_EQ(e.at("ph"), "X");
    earliest = std::min(earliest, e.at("ts").get<double>());
    if (e.at("pid") == 1) ++on_device;
  }
  EXPECT_DOUBLE_EQ(earliest, 0.0);
  EXPECT_EQ(on_device, 5);
}

TEST(OpProfiler, RecordsARealTrainingStepOnTheCpu) {
  testing::TempDir dir;
  torch::manual_seed(0);
  torch::nn::Linear linear(128, 256);
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({256}));
  const auto input = torch::randn({64, 128});
  const auto step = [&] {
    const auto loss = torch::gelu(norm->forward(linear->forward(input))).pow(2).mean();
    loss.backward();
  };
  step();  // first-call costs (thread pools) outside the profile

  std::vector<ProfiledEvent> events;
  {
    OpProfiler profiler(/*with_cuda=*/false);
    // One profiler per thread at a time.
    EXPECT_THROW(OpProfiler second(false), Error);
    step();
    step();
    events = profiler.finish(dir.file("trace.json"));
    EXPECT_THROW(profiler.finish(""), Error);
  }
  const auto profile = summarize_profile(events, info_for("cpu"));
  const auto rows = by_key(profile);
  for (const char* name : {"op:aten::addmm", "op:aten::native_layer_norm", "op:aten::gelu",
                           "op:aten::native_layer_norm_backward", "op:aten::gelu_backward"}) {
    ASSERT_EQ(rows.count(name), 1u) << name;
    EXPECT_EQ(rows.at(name).calls, 2) << name;
    EXPECT_GT(rows.at(name).total_cpu_us, 0.0) << name;
  }
  EXPECT_GT(rows.at("op:aten::addmm").self_cpu_us, 0.0);
  EXPECT_GT(rows.at("op:aten::native_layer_norm").self_cpu_us, 0.0);
  EXPECT_GT(profile.totals.self_cpu_us, 0.0);
  EXPECT_DOUBLE_EQ(profile.totals.device_us, 0.0);
  // An op's total covers what nests in it.
  EXPECT_GE(rows.at("op:aten::layer_norm").total_cpu_us,
            rows.at("op:aten::native_layer_norm").total_cpu_us);
  EXPECT_GE(rows.at("op:aten::addmm").total_cpu_us, rows.at("op:aten::addmm").self_cpu_us);

  const auto trace = nlohmann::json::parse(read_file(dir.file("trace.json")));
  EXPECT_GT(trace.at("traceEvents").size(), 20u);

  // A profiler dropped without finish() leaves the thread free for the next.
  { OpProfiler abandoned(false); }
  OpProfiler again(false);
  step();
  EXPECT_FALSE(again.finish("").empty());
}

}  // namespace
}  // namespace pipet::bench
