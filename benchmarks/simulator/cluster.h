// A cluster that may not be here: nodes x devices, how fast each device is
// relative to the one the profile was taken on, how many ranks a node can run
// at full speed at once, and the links between devices.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace pipet::sim {

struct LinkSpec {
  double bandwidth = 1e9;  // bytes/s one point-to-point transfer gets at most
  double latency = 0.0;    // seconds per message (per ring step for collectives)
  // bytes/s all concurrent transfers of the link share (a node's PCIe
  // fabric, a NIC); 0 = bandwidth (one transfer at a time at full speed).
  double aggregate = 0.0;
  // bytes/s a ring all-reduce step gets at most (bus bandwidth); 0 = bandwidth.
  double collective = 0.0;
  double aggregate_or_bandwidth() const { return aggregate > 0 ? aggregate : bandwidth; }
  double collective_or_bandwidth() const { return collective > 0 ? collective : bandwidth; }
};

struct ClusterSpec {
  std::string name;
  std::string notes;        // assumptions, for reports
  int nodes = 1;
  int devices_per_node = 1; // ranks per node (GPUs; CPU "slots")
  // Ranks a node runs at full speed at once, each using the profile's
  // thread count: GPUs = devices_per_node; a CPU node = cores / threads.
  // When more ranks compute at the same moment, they share it equally
  // (processor sharing); a rank waiting for a message uses none.
  double compute_slots_per_node = 1;
  // Profile seconds are divided by this (a device twice as fast: 2).
  double speed_factor = 1.0;
  LinkSpec intra;  // between devices of one node; concurrent transfers of a node share its aggregate
  LinkSpec inter;  // between nodes; the transfers crossing one node's NIC share its aggregate
  // AutoDP transition: fixed cost (group rebuild, executor and optimizer)
  // plus the state each rank receives at the link's bandwidth.
  double transition_fixed_seconds = 0.0;
  // AutoCache tiers per node: capacity and read bandwidth (0 capacity: no tier).
  double cache_memory_bytes = 0.0;
  double cache_memory_bandwidth = 10e9;
  double cache_disk_bytes = 0.0;
  double cache_disk_bandwidth = 1e9;
  // A cache write (fill) costs this many times a memory read of the entry.
  double cache_write_factor = 1.0;

  int world_size() const { return nodes * devices_per_node; }
  int node_of(int rank) const { return rank / devices_per_node; }
};

// Throws ConfigError naming `where` and the key for a bad value.
void validate_cluster(const ClusterSpec& cluster, const std::string& where);
ClusterSpec cluster_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json cluster_to_json(const ClusterSpec& cluster);
ClusterSpec load_cluster(const std::string& path);

}  // namespace pipet::sim
