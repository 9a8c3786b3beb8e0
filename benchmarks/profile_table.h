// Op-level profile tables: the events a profiler recorded over a few training
// steps, folded into one row per op (calls, self CPU time, and the device
// time of the kernels each op launched itself), written as an aligned text
// table and as JSON in the schema benchmarks/gpu/op_profile.py writes for
// PyTorch, so benchmarks/gpu/compare_profiles.py can put the two side by side
// (benchmarks/README.md, "Op-level profiles").
//
// No LibTorch here: benchmarks/op_profiler.h turns LibTorch's profiler events
// into ProfiledEvent; this part is plain arithmetic and testable on its own.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace pipet::bench {

// The JSON schema tag both profilers write; compare_profiles.py checks it.
inline constexpr const char* kOpProfileSchema = "pipet-op-profile-v1";

enum class EventKind {
  kHostOp,       // an op, autograd node or annotated range on a host thread
  kHostOther,    // another host-side event (a CUDA runtime call, ...)
  kDevice,       // work on the device: a kernel, memcpy or memset
};

// One event as the profiler recorded it. Times in microseconds.
struct ProfiledEvent {
  std::string name;
  EventKind kind = EventKind::kHostOp;
  uint64_t thread = 0;                 // host events: the recording thread
  double start_us = 0.0;
  double duration_us = 0.0;
  uint64_t correlation_id = 0;         // host ops: the id device work links back to
  uint64_t linked_correlation_id = 0;  // device work, runtime calls: the launching op's id (0: none)
  bool is_async = false;               // host ranges that end on another thread
};

// One row of the table: every event of one name and kind, summed.
struct OpRow {
  std::string name;
  std::string kind;             // "op" (host side) or "kernel" (device side)
  int64_t calls = 0;
  double self_cpu_us = 0.0;     // host time minus the time of the host events nested in it
  double total_cpu_us = 0.0;    // host time including nested events
  double self_device_us = 0.0;  // op: its own kernels (not its children's); kernel: its duration
};

struct OpProfileTotals {
  double self_cpu_us = 0.0;             // sum of the op rows' self CPU time
  double device_us = 0.0;               // sum of the kernel rows (all device work)
  double op_self_device_us = 0.0;       // sum of the op rows' self device time
  double unattributed_device_us = 0.0;  // device work no recorded op launched
};

// What was profiled, for the header of the table and the JSON.
struct ProfileInfo {
  std::string source;         // who ran the step: "pipetransformer" or "pytorch"
  std::string label;          // what ran: "vit-b16 batch 128 bf16"
  std::string device;         // "cpu" or "cuda"
  std::string torch_version;
  int steps = 0;              // profiled steps the times are summed over
  double wall_ms_per_step = 0.0;  // wall time per profiled step, profiler overhead included
};

struct OpProfile {
  ProfileInfo info;
  std::vector<OpRow> rows;  // by self device time on cuda, by self CPU time elsewhere; ties by name
  OpProfileTotals totals;
};

// Folds events into rows. Host ops nest by time on their thread (a runtime
// call takes the thread of the op it is linked to, as torch.profiler does);
// self CPU time is the duration minus the nested events' durations. Device
// work adds its duration to the op whose correlation id it links to, and is
// also a row of its own. Events of the profiler's own bookkeeping (the names
// torch.profiler hides) are dropped. Throws ConfigError when info.steps < 1.
OpProfile summarize_profile(const std::vector<ProfiledEvent>& events, ProfileInfo info);

// The JSON document (schema kOpProfileSchema): info fields, totals, rows.
nlohmann::json profile_json(const OpProfile& profile);

// A header with the totals, then the first `row_limit` rows as an aligned
// table (device columns on cuda only); names longer than 90 characters are
// cut with "...".
void print_profile_table(const OpProfile& profile, std::ostream& out, size_t row_limit);

// A Chrome trace (chrome://tracing, Perfetto) of the events, for LibTorch
// builds whose profiler cannot write one itself: host events on their
// threads, device work on a "device" row.
nlohmann::json chrome_trace_json(const std::vector<ProfiledEvent>& events);

}  // namespace pipet::bench
