#include "benchmarks/comm_harness.h"

#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cctype>
#include <cmath>
#include <iostream>
#include <limits>

namespace pipet::bench {
namespace {

constexpr int kExitCheckFailed = 20;
constexpr int kExitBelowFloor = 23;
constexpr double kGiga = 1e9;  // GB/s are 10^9 bytes per second, as nccl-tests

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "int32") return torch::kInt32;
  throw ConfigError("--dtype: 'float32', 'float64' or 'int32', got '" + name + "'");
}

// The measured row of one operation at one size.
struct Row {
  std::string operation;
  int64_t bytes = 0;
  int64_t elements = 0;
  double time_us = 0.0;     // mean over iterations, max over ranks
  double algbw_gbps = 0.0;  // bytes / time
  double busbw_gbps = 0.0;  // algbw x bus factor
  int failed_ranks = 0;     // ranks whose check failed
};

// Message sizes from min to max, multiplied by `factor` each time.
std::vector<int64_t> message_sizes(const CommSweepOptions& o, int64_t element_size) {
  const int64_t min_bytes = parse_byte_count(o.min_bytes, "--min-bytes");
  const int64_t max_bytes = parse_byte_count(o.max_bytes, "--max-bytes");
  if (min_bytes < element_size)
    throw ConfigError("--min-bytes " + o.min_bytes + " is smaller than one " + o.dtype + " element");
  if (max_bytes < min_bytes)
    throw ConfigError("--max-bytes " + o.max_bytes + " is smaller than --min-bytes " + o.min_bytes);
  if (o.step_factor < 2) throw ConfigError("--step-factor must be >= 2, got " + std::to_string(o.step_factor));
  std::vector<int64_t> sizes;
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= o.step_factor) {
    if (bytes % element_size != 0)
      throw ConfigError("message size " + std::to_string(bytes) + " B is not a whole number of " + o.dtype +
                        " elements (" + std::to_string(element_size) + " B each)");
    sizes.push_back(bytes);
    if (bytes > std::numeric_limits<int64_t>::max() / o.step_factor) break;
  }
  return sizes;
}

// One operation at one size on this rank; the figures are agreed over ranks.
Row measure(CommOperation& op, Communicator& world, int64_t bytes, const torch::TensorOptions& options,
            const HarnessOptions& harness) {
  Row row;
  row.operation = op.name();
  row.bytes = bytes;
  row.elements = bytes / static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  op.resize(row.elements, options);

  op.fill_check_pattern();
  op.run();
  const std::string mismatch = op.verify();
  if (!mismatch.empty()) {
    std::cerr << "bench_comm: rank " << world.rank() << ": " << row.operation << " check FAILED at "
              << format_bytes(bytes) << ": " << mismatch << "\n";
  }

  op.fill_for_timing();
  for (int i = 0; i < harness.warmup; ++i) op.run();
  world.barrier();  // every rank starts the timed loop together
  const double start = now_ms();
  for (int i = 0; i < harness.iterations; ++i) op.run();
  const double mean_us = (now_ms() - start) * 1000.0 / harness.iterations;

  torch::Tensor slowest = torch::tensor({mean_us}, torch::kFloat64);
  world.all_reduce(slowest, {ReduceOp::kMax});
  torch::Tensor failed = torch::tensor({mismatch.empty() ? 0 : 1}, torch::kInt64);
  world.all_reduce(failed, {ReduceOp::kSum});
  op.resize(0, options);  // release the buffers before the next operation

  row.time_us = slowest.item<double>();
  row.failed_ranks = static_cast<int>(failed.item<int64_t>());
  row.algbw_gbps = row.time_us > 0 ? static_cast<double>(bytes) / (row.time_us * 1e-6) / kGiga : 0.0;
  row.busbw_gbps = row.algbw_gbps * op.bus_factor(world.size());
  return row;
}

}  // namespace

const std::vector<std::string>& operation_names() {
  static const std::vector<std::string> names = {"all_reduce", "broadcast", "send_recv"};
  return names;
}

std::unique_ptr<CommOperation> make_operation(const std::string& name, Communicator& comm) {
  if (name == "all_reduce") return make_all_reduce(comm);
  if (name == "broadcast") return make_broadcast(comm);
  if (name == "send_recv") return make_send_recv(comm);
  throw ConfigError("--ops: unknown operation '" + name + "' (valid: all_reduce, broadcast, send_recv)");
}

torch::Tensor check_pattern(int64_t elements, double offset, const torch::TensorOptions& options) {
  const torch::Tensor index = torch::arange(elements, torch::TensorOptions().dtype(torch::kInt64));
  return (index.remainder(251) + static_cast<int64_t>(offset)).to(options);
}

std::string first_mismatch(const torch::Tensor& got, const torch::Tensor& expected) {
  if (got.sizes() != expected.sizes())
    return "shape " + c10::str(got.sizes()) + ", expected " + c10::str(expected.sizes());
  const torch::Tensor differs = got.ne(expected);
  if (!differs.any().item<bool>()) return "";
  const int64_t at = differs.nonzero()[0][0].item<int64_t>();
  const int64_t count = differs.sum().item<int64_t>();
  return "element " + std::to_string(at) + " is " + std::to_string(got[at].item<double>()) + ", expected " +
         std::to_string(expected[at].item<double>()) + " (" + std::to_string(count) + " of " +
         std::to_string(got.numel()) + " elements differ)";
}

CommBackend open_comm_backend(const std::string& name, MpiRuntime& runtime) {
  if (name == "mpi") {
    CommBackend backend;
    backend.name = name;
    backend.world = make_world_communicator(runtime);
    backend.device = torch::kCPU;
    return backend;
  }
  if (name == "nccl") {
    // A GPU backend plugs in here: a world NCCL communicator and a CUDA device.
    throw ConfigError("--backend nccl: runtime/comm has no NCCL communicator in this build; only 'mpi' can be "
                      "measured");
  }
  throw ConfigError("--backend: 'mpi' or 'nccl', got '" + name + "'");
}

int64_t parse_byte_count(const std::string& text, const std::string& flag) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  std::string suffix = text.substr(digits);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  if (suffix == "K" || suffix == "KIB") shift = 10;
  if (suffix == "M" || suffix == "MIB") shift = 20;
  if (suffix == "G" || suffix == "GIB") shift = 30;
  if (digits == 0 || digits > 12 || shift < 0)
    throw ConfigError(flag + ": expected a byte count such as 4096, 1K, 64KiB, 256M or 1G, got '" + text + "'");
  const int64_t value = std::stoll(text.substr(0, digits)) << shift;
  if (value <= 0) throw ConfigError(flag + " must be > 0, got '" + text + "'");
  return value;
}

std::string format_bytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30) && bytes % (int64_t{1} << 30) == 0)
    return std::to_string(bytes >> 30) + " GiB";
  if (bytes >= (int64_t{1} << 20) && bytes % (int64_t{1} << 20) == 0)
    return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

void add_comm_flags(CLI::App& app, CommSweepOptions& o) {
  add_harness_flags(app, o.harness);
  app.add_option("--backend", o.backend, "Communication backend: mpi (nccl is not in this build)")
      ->capture_default_str();
  app.add_option("--ops", o.operations,
                 "Operations, comma-separated: all_reduce, broadcast, send_recv (default: all)")
      ->delimiter(',');
  app.add_option("--min-bytes", o.min_bytes, "Smallest message (bytes; K, M, G suffixes are binary)")
      ->capture_default_str();
  app.add_option("--max-bytes", o.max_bytes, "Largest message")->capture_default_str();
  app.add_option("--step-factor", o.step_factor, "Each message size is the previous one times this")
      ->capture_default_str();
  app.add_option("--dtype", o.dtype, "Element type: float32, float64 or int32")->capture_default_str();
  app.add_option("--min-busbw", o.min_busbw_gbps,
                 "Exit 23 when an operation's average bus bandwidth over all sizes is below this "
                 "(GB/s); 0 = off")
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "debug | info | warn | error")->capture_default_str();
}

int run_comm_benchmark(CommSweepOptions& o, MpiRuntime& runtime) {
  validate_harness_options(o.harness);
  if (o.operations.empty()) o.operations = operation_names();
  if (!(o.min_busbw_gbps >= 0)) throw ConfigError("--min-busbw must be >= 0 (0 = off)");
  const torch::ScalarType dtype = parse_dtype(o.dtype);
  const std::vector<int64_t> sizes = message_sizes(o, static_cast<int64_t>(c10::elementSize(dtype)));
  init_logging(runtime.world_rank(), o.log_level);

  CommBackend backend = open_comm_backend(o.backend, runtime);
  Communicator& world = *backend.world;
  if (world.size() < 2)
    throw ConfigError("bench_comm needs at least 2 ranks; run it under mpirun -np 2 (or more)");
  std::vector<std::unique_ptr<CommOperation>> operations;
  for (const std::string& name : o.operations) operations.push_back(make_operation(name, world));
  const torch::TensorOptions options = torch::TensorOptions().dtype(dtype).device(backend.device);
  const bool root = world.rank() == 0;

  const nlohmann::json environment = environment_json();
  if (root) {
    std::cout << "bench_comm: backend " << backend.name << ", " << world.size() << " ranks, " << o.dtype << ", "
              << format_bytes(sizes.front()) << " .. " << format_bytes(sizes.back()) << " (x" << o.step_factor
              << "), warmup " << o.harness.warmup << ", iterations " << o.harness.iterations << "\n"
              << environment_line(environment) << "\n";
    const int cores = environment.value("cores", 0);
    if (cores > 0 && world.size() > cores)
      std::cout << "warning: " << world.size() << " ranks on " << cores
                << " cores: ranks share cores, so timings are indicative\n";
    std::cout << std::flush;
  }

  std::vector<Row> rows;
  for (auto& op : operations)
    for (int64_t bytes : sizes) rows.push_back(measure(*op, world, bytes, options, o.harness));

  int code = 0;
  nlohmann::json averages = nlohmann::json::object();
  ResultTable table({"operation", "size", "count", "time us", "algbw GB/s", "busbw GB/s", "check"});
  for (const Row& r : rows)
    table.add_row({r.operation, format_bytes(r.bytes), std::to_string(r.elements), format_fixed(r.time_us, 1),
                   format_fixed(r.algbw_gbps, 3), format_fixed(r.busbw_gbps, 3),
                   r.failed_ranks == 0 ? "ok" : "FAILED on " + std::to_string(r.failed_ranks) + " ranks"});
  for (const Row& r : rows)
    if (r.failed_ranks > 0) code = kExitCheckFailed;
  if (root) {
    std::cout << "\n";
    table.print(std::cout);
    std::cout << "\n";
  }
  for (const auto& op : operations) {
    double sum = 0.0;
    int count = 0;
    for (const Row& r : rows) {
      if (r.operation != op->name()) continue;
      sum += r.busbw_gbps;
      ++count;
    }
    const double average = count > 0 ? sum / count : 0.0;
    averages[op->name()] = average;
    if (root) std::cout << "avg busbw " << op->name() << ": " << format_fixed(average, 3) << " GB/s\n";
    if (o.min_busbw_gbps > 0 && average < o.min_busbw_gbps) {
      if (root)
        std::cout << "below --min-busbw " << format_fixed(o.min_busbw_gbps, 3) << " GB/s: " << op->name()
                  << " averages " << format_fixed(average, 3) << " GB/s\n";
      if (code == 0) code = kExitBelowFloor;  // a failed check outranks a missed floor
    }
  }
  if (root && code == kExitCheckFailed) std::cout << "check FAILED (see the ranks' messages above)\n";

  if (root && !o.harness.json_path.empty()) {
    nlohmann::json document;
    document["benchmark"] = "comm";
    document["environment"] = environment;
    document["options"] = {{"backend", backend.name},          {"ranks", world.size()},
                           {"dtype", o.dtype},                 {"warmup", o.harness.warmup},
                           {"iterations", o.harness.iterations}, {"step_factor", o.step_factor},
                           {"min_busbw_gbps", o.min_busbw_gbps}};
    nlohmann::json results = nlohmann::json::array();
    for (const Row& r : rows)
      results.push_back({{"operation", r.operation},
                         {"bytes", r.bytes},
                         {"elements", r.elements},
                         {"time_us", r.time_us},
                         {"algbw_gbps", r.algbw_gbps},
                         {"busbw_gbps", r.busbw_gbps},
                         {"check", r.failed_ranks == 0 ? "ok" : "FAILED"}});
    document["results"] = std::move(results);
    document["average_busbw_gbps"] = averages;
    write_json_results(o.harness.json_path, document);
  }
  std::cout << std::flush;
  // Every rank leaves together so mpirun sees one verdict.
  world.barrier();
  return code;
}

}  // namespace pipet::bench
