// What the simulator knows about a model on one kind of device: per
// sub-layer parameter counts, forward / backward / frozen-forward seconds at
// a few micro-batch sizes, output activation bytes, and the per-parameter
// cost of the step's parameter passes. Measured here (`pipet-simulate
// profile`) or derived from FLOPs at a stated throughput (`derive`), stored
// as JSON. Pure data: no torch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace pipet::sim {

// Seconds one call takes for a micro-batch of `rows` samples.
struct TimePoint {
  int64_t rows = 0;
  double forward = 0.0;         // training forward (autograd graph kept)
  double backward = 0.0;        // backward of that forward
  double frozen_forward = 0.0;  // forward under no-grad, eval mode (a frozen sub-layer)
};

struct SubLayerProfile {
  std::string name;  // "embedding", "block3.attention", "head"
  int block = -1;    // transformer block of an attention/MLP sub-layer, -1 otherwise
  int64_t parameters = 0;
  int64_t output_bytes_per_row = 0;  // activation sent to the next stage, per sample
  std::vector<TimePoint> times;      // ascending rows, at least one point

  // Piecewise linear in rows between the measured points, extended along
  // the nearest segment outside them (proportional to rows with one point),
  // never below zero.
  double forward_seconds(double rows) const;
  double backward_seconds(double rows) const;
  double frozen_forward_seconds(double rows) const;
};

struct ModelProfile {
  std::string model;   // preset name, e.g. "vit-small"
  std::string source;  // how the times were obtained, for reports
  int num_blocks = 0;
  int threads = 1;     // compute threads per rank the times were taken with
  std::vector<SubLayerProfile> sublayers;
  // Per trainable parameter and step: zero_grad + optimizer update.
  double optimizer_seconds_per_parameter = 0.0;
  // Per trainable parameter, on replica 0 only: the squared-norm pass that
  // feeds the global clip and the freeze statistics.
  double norm_seconds_per_parameter = 0.0;
  // Per trainable parameter of a stage whose data-parallel group has more
  // than one member: packing the gradient buckets and copying the sums back.
  double bucket_copy_seconds_per_parameter = 0.0;
  // Building one sample's inputs on the first stage.
  double input_seconds_per_row = 0.0;
  // AutoCache: bytes of one cached frozen-prefix output (one sample).
  int64_t cache_entry_bytes = 0;

  size_t size() const { return sublayers.size(); }
  int64_t total_parameters() const;
};

// Throws ConfigError naming `where` and the field unless the profile is
// usable: sub-layers in model order (embedding, 2 per block, head), counts
// and times finite and >= 0, rows strictly ascending and >= 1.
void validate_profile(const ModelProfile& profile, const std::string& where);

ModelProfile profile_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json profile_to_json(const ModelProfile& profile);
// Reads and validates a profile file; IoError when it cannot be read,
// ConfigError naming the file and key when it is malformed.
ModelProfile load_profile(const std::string& path);

// Per-sub-layer times from FLOPs for a ViT (no device here to measure):
// forward FLOPs per sample from the architecture, backward = 2 x forward,
// frozen forward = forward; seconds = FLOPs / achieved FLOP/s + a fixed
// per-call overhead. The parameter passes cost `bytes_per_parameter_pass`
// bytes of memory traffic per parameter at `memory_bandwidth` bytes/s.
struct VitShape {
  std::string name;
  int64_t image_size = 224, patch_size = 16, channels = 3;
  int64_t hidden = 768, layers = 12, heads = 12, intermediate = 3072, classes = 1000;
  int64_t bytes_per_value = 4;  // activations and cache entries (fp32)
};
struct DeviceThroughput {
  std::string description;          // e.g. "Quadro RTX 5000, fp32, assumed 4.0 TFLOP/s achieved"
  double achieved_flops = 4.0e12;   // FLOP/s on the transformer GEMMs
  double call_overhead_seconds = 0.0;  // fixed per sub-layer call (kernel launches)
  double memory_bandwidth = 400e9;  // bytes/s for the parameter passes
  double input_seconds_per_row = 0.0;
};
// Forward FLOPs (multiply-add = 2) of each sub-layer for one sample.
std::vector<double> vit_forward_flops_per_row(const VitShape& shape);
ModelProfile derive_vit_profile(const VitShape& shape, const DeviceThroughput& device,
                                const std::vector<int64_t>& rows);

}  // namespace pipet::sim
