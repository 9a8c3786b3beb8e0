#include "benchmarks/profile_table.h"

#include "benchmarks/harness.h"
#include "runtime/core/errors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <ostream>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace pipet::bench {
namespace {

// Bookkeeping events torch.profiler leaves out of its tables (its
// _filter_name list); dropping them here keeps the two tables comparable.
bool is_profiler_bookkeeping(const std::string& name) {
  static const std::unordered_set<std::string> hidden = {
      "[memory]",
      "[OutOfMemory]",
      "profiler::_record_function_enter",
      "profiler::_record_function_enter_new",
      "profiler::_record_function_exit",
      "aten::is_leaf",
      "aten::output_nr",
      "aten::_version",
  };
  return hidden.count(name) != 0;
}

bool is_host(const ProfiledEvent& e) { return e.kind != EventKind::kDevice; }

double end_us(const ProfiledEvent& e) { return e.start_us + e.duration_us; }

// Per kept event: the thread it nests on and what it accumulates.
struct Folded {
  const ProfiledEvent* event = nullptr;
  uint64_t thread = 0;
  double children_cpu_us = 0.0;
  double self_device_us = 0.0;
};

// Gives each host event's nested events' durations to it, per thread: sorted
// by start (longest first on ties), an event's parent is the innermost open
// event that contains it whole.
void nest_host_events(std::vector<Folded>& folded) {
  std::map<uint64_t, std::vector<size_t>> by_thread;
  for (size_t i = 0; i < folded.size(); ++i) {
    const auto& e = *folded[i].event;
    if (is_host(e) && !e.is_async) by_thread[folded[i].thread].push_back(i);
  }
  for (auto& [thread, indices] : by_thread) {
    std::stable_sort(indices.begin(), indices.end(), [&](size_t a, size_t b) {
      const auto& x = *folded[a].event;
      const auto& y = *folded[b].event;
      if (x.start_us != y.start_us) return x.start_us < y.start_us;
      return end_us(x) > end_us(y);
    });
    std::vector<size_t> open;
    for (size_t i : indices) {
      const auto& e = *folded[i].event;
      while (!open.empty()) {
        const auto& parent = *folded[open.back()].event;
        if (e.start_us >= end_us(parent) || end_us(e) > end_us(parent)) {
          open.pop_back();
        } else {
          folded[open.back()].children_cpu_us += e.duration_us;
          break;
        }
      }
      open.push_back(i);
    }
  }
}

}  // namespace

OpProfile summarize_profile(const std::vector<ProfiledEvent>& events, ProfileInfo info) {
  if (info.steps < 1) {
    throw ConfigError("op profile: the profiled step count must be >= 1, got " +
                      std::to_string(info.steps));
  }
  std::vector<Folded> folded;
  folded.reserve(events.size());
  for (const auto& e : events) {
    if (!is_profiler_bookkeeping(e.name)) folded.push_back({&e, e.thread, 0.0, 0.0});
  }

  // The ops device work and runtime calls link back to, by correlation id.
  std::unordered_map<uint64_t, size_t> op_by_id;
  for (size_t i = 0; i < folded.size(); ++i) {
    const auto& e = *folded[i].event;
    if (e.kind == EventKind::kHostOp && !e.is_async && e.correlation_id != 0) {
      op_by_id.emplace(e.correlation_id, i);
    }
  }
  const auto linked_op = [&](const ProfiledEvent& e) -> Folded* {
    if (e.linked_correlation_id == 0) return nullptr;
    const auto it = op_by_id.find(e.linked_correlation_id);
    return it == op_by_id.end() ? nullptr : &folded[it->second];
  };
  // A runtime call is recorded under the OS thread id, its op under the
  // profiler's own: nest the call on its op's thread.
  for (auto& f : folded) {
    if (f.event->kind != EventKind::kHostOther) continue;
    if (const Folded* op = linked_op(*f.event)) f.thread = op->thread;
  }
  nest_host_events(folded);
  for (const auto& f : folded) {
    if (f.event->kind != EventKind::kDevice) continue;
    if (Folded* op = linked_op(*f.event)) op->self_device_us += f.event->duration_us;
  }

  std::map<std::pair<std::string, std::string>, OpRow> rows_by_key;
  for (const auto& f : folded) {
    const auto& e = *f.event;
    const std::string kind = is_host(e) ? "op" : "kernel";
    auto& row = rows_by_key[{kind, e.name}];
    row.name = e.name;
    row.kind = kind;
    row.calls += 1;
    if (is_host(e)) {
      row.total_cpu_us += e.duration_us;
      // Timestamps rounded to whole microseconds (LibTorch 1.13) can leave
      // the children a hair longer than their parent; never below zero.
      if (!e.is_async) row.self_cpu_us += std::max(0.0, e.duration_us - f.children_cpu_us);
      row.self_device_us += f.self_device_us;
    } else {
      row.self_device_us += e.duration_us;
    }
  }

  OpProfile profile;
  profile.info = std::move(info);
  for (auto& [key, row] : rows_by_key) {
    if (row.kind == "op") {
      profile.totals.self_cpu_us += row.self_cpu_us;
      profile.totals.op_self_device_us += row.self_device_us;
    } else {
      profile.totals.device_us += row.self_device_us;
    }
    profile.rows.push_back(std::move(row));
  }
  profile.totals.unattributed_device_us =
      profile.totals.device_us - profile.totals.op_self_device_us;
  const bool by_device = profile.info.device == "cuda";
  std::stable_sort(profile.rows.begin(), profile.rows.end(), [&](const OpRow& a, const OpRow& b) {
    if (by_device && a.self_device_us != b.self_device_us) return a.self_device_us > b.self_device_us;
    if (a.self_cpu_us != b.self_cpu_us) return a.self_cpu_us > b.self_cpu_us;
    if (a.name != b.name) return a.name < b.name;
    return a.kind < b.kind;
  });
  return profile;
}

nlohmann::json profile_json(const OpProfile& profile) {
  const auto& info = profile.info;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : profile.rows) {
    rows.push_back({{"name", row.name},
                    {"kind", row.kind},
                    {"calls", row.calls},
                    {"self_cpu_us", row.self_cpu_us},
                    {"total_cpu_us", row.total_cpu_us},
                    {"self_device_us", row.self_device_us}});
  }
  return {{"schema", kOpProfileSchema},
          {"source", info.source},
          {"label", info.label},
          {"device", info.device},
          {"torch_version", info.torch_version},
          {"steps", info.steps},
          {"wall_ms_per_step", info.wall_ms_per_step},
          {"sort_key", info.device == "cuda" ? "self_device_us" : "self_cpu_us"},
          {"totals",
           {{"self_cpu_us", profile.totals.self_cpu_us},
            {"device_us", profile.totals.device_us},
            {"op_self_device_us", profile.totals.op_self_device_us},
            {"unattributed_device_us", profile.totals.unattributed_device_us}}},
          {"rows", std::move(rows)}};
}

void print_profile_table(const OpProfile& profile, std::ostream& out, size_t row_limit) {
  const auto& info = profile.info;
  const auto& totals = profile.totals;
  const bool device = info.device == "cuda";
  const auto ms = [](double us) { return format_fixed(us / 1000.0, 3); };
  const auto percent = [](double part, double whole) {
    return whole > 0.0 ? format_fixed(100.0 * part / whole, 1) : std::string("-");
  };
  out << "op profile: " << info.label << " (" << info.source << ", torch " << info.torch_version
      << ", " << info.device << ")\n"
      << info.steps << " profiled steps, " << format_fixed(info.wall_ms_per_step, 2)
      << " ms/step wall under the profiler; times are sums over the " << info.steps << " steps\n"
      << "self CPU total " << ms(totals.self_cpu_us) << " ms";
  if (device) {
    out << "; device total " << ms(totals.device_us) << " ms (launched by ops "
        << ms(totals.op_self_device_us) << " ms, unattributed "
        << ms(totals.unattributed_device_us) << " ms)\nkind op = host side (self device = "
           "kernels it launched itself); kind kernel = device side (also counted in the op that "
           "launched it)";
  }
  out << "\n\n";

  std::vector<std::string> headers = {"name", "kind", "calls", "self CPU ms", "self CPU %",
                                      "CPU total ms"};
  if (device) {
    headers.push_back("self device ms");
    headers.push_back("self device %");
  }
  ResultTable table(headers);
  constexpr size_t kNameWidth = 90;
  for (size_t i = 0; i < profile.rows.size() && i < row_limit; ++i) {
    const auto& row = profile.rows[i];
    std::string name = row.name;
    if (name.size() > kNameWidth) name = name.substr(0, kNameWidth - 3) + "...";
    std::vector<std::string> cells = {name, row.kind, std::to_string(row.calls),
                                      ms(row.self_cpu_us), percent(row.self_cpu_us, totals.self_cpu_us),
                                      ms(row.total_cpu_us)};
    if (device) {
      cells.push_back(ms(row.self_device_us));
      // Ops against what ops launched, kernels against all device work.
      cells.push_back(percent(row.self_device_us,
                              row.kind == "op" ? totals.op_self_device_us : totals.device_us));
    }
    table.add_row(std::move(cells));
  }
  table.print(out);
  if (profile.rows.size() > row_limit) {
    out << "(" << profile.rows.size() - row_limit << " more rows in the JSON)\n";
  }
}

nlohmann::json chrome_trace_json(const std::vector<ProfiledEvent>& events) {
  double origin = 0.0;
  bool first = true;
  for (const auto& e : events) {
    if (first || e.start_us < origin) origin = e.start_us;
    first = false;
  }
  nlohmann::json trace_events = nlohmann::json::array();
  for (const auto& e : events) {
    if (is_profiler_bookkeeping(e.name)) continue;
    const bool host = is_host(e);
    trace_events.push_back(
        {{"name", e.name},
         {"cat", host ? (e.kind == EventKind::kHostOp ? "cpu_op" : "cpu_runtime") : "device"},
         {"ph", "X"},
         {"ts", e.start_us - origin},
         {"dur", e.duration_us},
         {"pid", host ? 0 : 1},
         {"tid", host ? e.thread : 0},
         {"args",
          {{"correlation", host ? e.correlation_id : e.linked_correlation_id}}}});
  }
  return {{"traceEvents", std::move(trace_events)}, {"displayTimeUnit", "ms"}};
}

}  // namespace pipet::bench
