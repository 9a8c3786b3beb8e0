#include "benchmarks/simulator/cluster.h"

#include <cmath>

#include "benchmarks/simulator/json_fields.h"
#include "runtime/core/errors.h"

namespace pipet::sim {
namespace {

LinkSpec link_from(const JsonFields& parent, const std::string& key) {
  const JsonFields link = parent.object(key);
  LinkSpec out;
  out.bandwidth = link.positive("bandwidth_gbps") * 1e9;
  out.latency = link.non_negative("latency_us", 0.0) * 1e-6;
  out.aggregate = link.non_negative("aggregate_gbps", 0.0) * 1e9;
  out.collective = link.non_negative("collective_gbps", 0.0) * 1e9;
  link.reject_unknown();
  return out;
}

nlohmann::json link_json(const LinkSpec& l) {
  return {{"bandwidth_gbps", l.bandwidth / 1e9}, {"latency_us", l.latency * 1e6},
          {"aggregate_gbps", l.aggregate / 1e9}, {"collective_gbps", l.collective / 1e9}};
}

}  // namespace

void validate_cluster(const ClusterSpec& c, const std::string& where) {
  auto fail = [&](const std::string& what) { throw ConfigError(where + ": " + what); };
  if (c.nodes < 1) fail("nodes must be >= 1, got " + std::to_string(c.nodes));
  if (c.devices_per_node < 1) fail("devices_per_node must be >= 1, got " + std::to_string(c.devices_per_node));
  if (!(c.compute_slots_per_node > 0) || !std::isfinite(c.compute_slots_per_node))
    fail("compute_slots_per_node must be > 0");
  if (!(c.speed_factor > 0) || !std::isfinite(c.speed_factor)) fail("speed_factor must be > 0");
  for (const auto& [name, link] : {std::pair<const char*, LinkSpec>{"intra", c.intra}, {"inter", c.inter}}) {
    if (!(link.bandwidth > 0) || !std::isfinite(link.bandwidth)) fail(std::string(name) + ".bandwidth_gbps must be > 0");
    if (!(link.latency >= 0) || !std::isfinite(link.latency)) fail(std::string(name) + ".latency_us must be >= 0");
    if (!(link.aggregate >= 0) || !(link.collective >= 0) || !std::isfinite(link.aggregate) ||
        !std::isfinite(link.collective))
      fail(std::string(name) + ".aggregate_gbps and collective_gbps must be >= 0");
  }
  if (!(c.transition_fixed_seconds >= 0)) fail("transition_fixed_seconds must be >= 0");
  if (!(c.cache_memory_bytes >= 0) || !(c.cache_disk_bytes >= 0)) fail("cache capacities must be >= 0");
  if (!(c.cache_memory_bandwidth > 0) || !(c.cache_disk_bandwidth > 0)) fail("cache bandwidths must be > 0");
  if (!(c.cache_write_factor >= 0)) fail("cache_write_factor must be >= 0");
}

ClusterSpec cluster_from_json(const nlohmann::json& j, const std::string& where) {
  JsonFields root(j, where);
  ClusterSpec c;
  c.name = root.text("name", "");
  c.notes = root.text("notes", "");
  c.nodes = static_cast<int>(root.integer_at_least("nodes", 1));
  c.devices_per_node = static_cast<int>(root.integer_at_least("devices_per_node", 1));
  c.compute_slots_per_node = root.positive("compute_slots_per_node", c.devices_per_node);
  c.speed_factor = root.positive("speed_factor", 1.0);
  c.intra = link_from(root, "intra");
  c.inter = root.has("inter") ? link_from(root, "inter") : c.intra;
  c.transition_fixed_seconds = root.non_negative("transition_fixed_seconds", 0.0);
  if (root.has("cache")) {
    const JsonFields cache = root.object("cache");
    c.cache_memory_bytes = cache.non_negative("memory_gb", 0.0) * 1e9;
    c.cache_memory_bandwidth = cache.positive("memory_read_gbps", 10.0) * 1e9;
    c.cache_disk_bytes = cache.non_negative("disk_gb", 0.0) * 1e9;
    c.cache_disk_bandwidth = cache.positive("disk_read_gbps", 1.0) * 1e9;
    c.cache_write_factor = cache.non_negative("write_factor", 1.0);
    cache.reject_unknown();
  }
  root.reject_unknown();
  validate_cluster(c, where);
  return c;
}

nlohmann::json cluster_to_json(const ClusterSpec& c) {
  return {{"name", c.name},
          {"notes", c.notes},
          {"nodes", c.nodes},
          {"devices_per_node", c.devices_per_node},
          {"compute_slots_per_node", c.compute_slots_per_node},
          {"speed_factor", c.speed_factor},
          {"intra", link_json(c.intra)},
          {"inter", link_json(c.inter)},
          {"transition_fixed_seconds", c.transition_fixed_seconds},
          {"cache",
           {{"memory_gb", c.cache_memory_bytes / 1e9},
            {"memory_read_gbps", c.cache_memory_bandwidth / 1e9},
            {"disk_gb", c.cache_disk_bytes / 1e9},
            {"disk_read_gbps", c.cache_disk_bandwidth / 1e9},
            {"write_factor", c.cache_write_factor}}}};
}

ClusterSpec load_cluster(const std::string& path) { return cluster_from_json(read_json_file(path, "cluster spec"), path); }

}  // namespace pipet::sim
