#include "benchmarks/simulator/profile.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "benchmarks/simulator/json_fields.h"
#include "runtime/core/errors.h"

namespace pipet::sim {
namespace {

// Linear in rows through the points, the end segments extended.
template <typename Get>
double interpolate(const std::vector<TimePoint>& points, double rows, Get get) {
  if (points.size() == 1) return get(points[0]) * rows / static_cast<double>(points[0].rows);
  size_t hi = 1;
  while (hi + 1 < points.size() && rows > static_cast<double>(points[hi].rows)) ++hi;
  const TimePoint& a = points[hi - 1];
  const TimePoint& b = points[hi];
  const double slope = (get(b) - get(a)) / static_cast<double>(b.rows - a.rows);
  return std::max(0.0, get(a) + slope * (rows - static_cast<double>(a.rows)));
}

std::string expected_name(size_t index, size_t count) {
  if (index == 0) return "embedding";
  if (index + 1 == count) return "head";
  const size_t block = (index - 1) / 2;
  return "block" + std::to_string(block) + ((index - 1) % 2 == 0 ? ".attention" : ".mlp");
}

}  // namespace

double SubLayerProfile::forward_seconds(double rows) const {
  return interpolate(times, rows, [](const TimePoint& p) { return p.forward; });
}
double SubLayerProfile::backward_seconds(double rows) const {
  return interpolate(times, rows, [](const TimePoint& p) { return p.backward; });
}
double SubLayerProfile::frozen_forward_seconds(double rows) const {
  return interpolate(times, rows, [](const TimePoint& p) { return p.frozen_forward; });
}

int64_t ModelProfile::total_parameters() const {
  int64_t total = 0;
  for (const auto& s : sublayers) total += s.parameters;
  return total;
}

void validate_profile(const ModelProfile& p, const std::string& where) {
  auto fail = [&](const std::string& what) { throw ConfigError(where + ": " + what); };
  if (p.num_blocks < 1) fail("num_blocks must be >= 1, got " + std::to_string(p.num_blocks));
  const size_t expected = static_cast<size_t>(2 * p.num_blocks + 2);
  if (p.sublayers.size() != expected)
    fail("sublayers has " + std::to_string(p.sublayers.size()) + " entries; a model of " +
         std::to_string(p.num_blocks) + " blocks has " + std::to_string(expected) +
         " (embedding, attention and MLP per block, head)");
  if (p.threads < 1) fail("threads must be >= 1, got " + std::to_string(p.threads));
  const auto non_negative = [&](double v, const std::string& what) {
    if (!std::isfinite(v) || v < 0) fail(what + " must be finite and >= 0, got " + std::to_string(v));
  };
  non_negative(p.optimizer_seconds_per_parameter, "optimizer_seconds_per_parameter");
  non_negative(p.norm_seconds_per_parameter, "norm_seconds_per_parameter");
  non_negative(p.bucket_copy_seconds_per_parameter, "bucket_copy_seconds_per_parameter");
  non_negative(p.input_seconds_per_row, "input_seconds_per_row");
  if (p.cache_entry_bytes < 0) fail("cache_entry_bytes must be >= 0");
  for (size_t i = 0; i < p.sublayers.size(); ++i) {
    const SubLayerProfile& s = p.sublayers[i];
    const std::string at = "sublayers[" + std::to_string(i) + "] '" + s.name + "'";
    if (s.name != expected_name(i, p.sublayers.size()))
      fail(at + " is out of model order: expected '" + expected_name(i, p.sublayers.size()) + "'");
    const int block = (i == 0 || i + 1 == p.sublayers.size()) ? -1 : static_cast<int>((i - 1) / 2);
    if (s.block != block) fail(at + " has block " + std::to_string(s.block) + ", expected " + std::to_string(block));
    if (s.parameters < 0) fail(at + " has a negative parameter count");
    if (s.output_bytes_per_row < 0) fail(at + " has negative output_bytes_per_row");
    if (s.times.empty()) fail(at + " has no times");
    for (size_t k = 0; k < s.times.size(); ++k) {
      const TimePoint& t = s.times[k];
      const std::string point = at + " times[" + std::to_string(k) + "]";
      if (t.rows < 1) fail(point + " rows must be >= 1, got " + std::to_string(t.rows));
      if (k > 0 && t.rows <= s.times[k - 1].rows) fail(point + " rows must be strictly ascending");
      non_negative(t.forward, point + " forward");
      non_negative(t.backward, point + " backward");
      non_negative(t.frozen_forward, point + " frozen_forward");
    }
  }
}

ModelProfile profile_from_json(const nlohmann::json& j, const std::string& where) {
  JsonFields root(j, where);
  ModelProfile p;
  p.model = root.text("model");
  p.source = root.text("source", "");
  p.num_blocks = static_cast<int>(root.integer_at_least("num_blocks", 1));
  p.threads = static_cast<int>(root.integer_at_least("threads", 1, 1));
  p.optimizer_seconds_per_parameter = root.non_negative("optimizer_seconds_per_parameter", 0.0);
  p.norm_seconds_per_parameter = root.non_negative("norm_seconds_per_parameter", 0.0);
  p.bucket_copy_seconds_per_parameter = root.non_negative("bucket_copy_seconds_per_parameter", 0.0);
  p.input_seconds_per_row = root.non_negative("input_seconds_per_row", 0.0);
  p.cache_entry_bytes = root.integer_at_least("cache_entry_bytes", 0, 0);
  const nlohmann::json& list = root.raw("sublayers");
  if (!list.is_array()) root.fail("sublayers", "must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    JsonFields s(list[i], where, "sublayers[" + std::to_string(i) + "]");
    SubLayerProfile sub;
    sub.name = s.text("name");
    sub.block = static_cast<int>(s.integer("block", -1));
    sub.parameters = s.integer_at_least("parameters", 0);
    sub.output_bytes_per_row = s.integer_at_least("output_bytes_per_row", 0);
    const nlohmann::json& times = s.raw("times");
    if (!times.is_array()) s.fail(s.key_path("times"), "must be an array");
    for (size_t k = 0; k < times.size(); ++k) {
      JsonFields t(times[k], where, s.key_path("times[" + std::to_string(k) + "]"));
      TimePoint point;
      point.rows = t.integer_at_least("rows", 1);
      point.forward = t.non_negative("forward");
      point.backward = t.non_negative("backward");
      point.frozen_forward = t.non_negative("frozen_forward", point.forward);
      t.reject_unknown();
      sub.times.push_back(point);
    }
    s.reject_unknown();
    p.sublayers.push_back(std::move(sub));
  }
  root.reject_unknown();
  validate_profile(p, where);
  return p;
}

nlohmann::json profile_to_json(const ModelProfile& p) {
  nlohmann::json subs = nlohmann::json::array();
  for (const auto& s : p.sublayers) {
    nlohmann::json times = nlohmann::json::array();
    for (const auto& t : s.times)
      times.push_back({{"rows", t.rows}, {"forward", t.forward}, {"backward", t.backward},
                       {"frozen_forward", t.frozen_forward}});
    subs.push_back({{"name", s.name},
                    {"block", s.block},
                    {"parameters", s.parameters},
                    {"output_bytes_per_row", s.output_bytes_per_row},
                    {"times", times}});
  }
  return {{"model", p.model},
          {"source", p.source},
          {"num_blocks", p.num_blocks},
          {"threads", p.threads},
          {"optimizer_seconds_per_parameter", p.optimizer_seconds_per_parameter},
          {"norm_seconds_per_parameter", p.norm_seconds_per_parameter},
          {"bucket_copy_seconds_per_parameter", p.bucket_copy_seconds_per_parameter},
          {"input_seconds_per_row", p.input_seconds_per_row},
          {"cache_entry_bytes", p.cache_entry_bytes},
          {"sublayers", subs}};
}

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw IoError(what + " '" + path + "' cannot be read");
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(path + ": not valid JSON: " + e.what());
  }
}

ModelProfile load_profile(const std::string& path) { return profile_from_json(read_json_file(path, "profile"), path); }

std::vector<double> vit_forward_flops_per_row(const VitShape& v) {
  const double patches = static_cast<double>((v.image_size / v.patch_size) * (v.image_size / v.patch_size));
  const double tokens = patches + 1;  // + CLS
  const double h = static_cast<double>(v.hidden);
  const double inter = static_cast<double>(v.intermediate);
  std::vector<double> flops;
  flops.push_back(2.0 * patches * static_cast<double>(v.channels * v.patch_size * v.patch_size) * h);
  // QKV and output projections, scores and the weighted sum (softmax, norm
  // and residual are memory-bound and left out).
  const double attention = 2.0 * tokens * h * 4.0 * h + 2.0 * 2.0 * tokens * tokens * h;
  const double mlp = 2.0 * 2.0 * tokens * h * inter;
  for (int64_t b = 0; b < v.layers; ++b) {
    flops.push_back(attention);
    flops.push_back(mlp);
  }
  flops.push_back(2.0 * h * static_cast<double>(v.classes));
  return flops;
}

ModelProfile derive_vit_profile(const VitShape& v, const DeviceThroughput& d, const std::vector<int64_t>& rows) {
  if (v.image_size % v.patch_size != 0 || v.hidden % v.heads != 0 || v.layers < 1)
    throw ConfigError("derive: the ViT shape is inconsistent (image " + std::to_string(v.image_size) + ", patch " +
                      std::to_string(v.patch_size) + ", hidden " + std::to_string(v.hidden) + ", heads " +
                      std::to_string(v.heads) + ", layers " + std::to_string(v.layers) + ")");
  if (!(d.achieved_flops > 0) || !(d.memory_bandwidth > 0) || d.call_overhead_seconds < 0)
    throw ConfigError("derive: achieved FLOP/s and memory bandwidth must be > 0 and the call overhead >= 0");
  if (rows.empty()) throw ConfigError("derive: no micro-batch sizes (rows) given");
  const int64_t patches = (v.image_size / v.patch_size) * (v.image_size / v.patch_size);
  const int64_t tokens = patches + 1;
  const int64_t h = v.hidden;
  const std::vector<double> flops = vit_forward_flops_per_row(v);
  ModelProfile p;
  p.model = v.name;
  p.source = "derived from FLOPs: " + d.description;
  p.num_blocks = static_cast<int>(v.layers);
  p.threads = 1;
  // AdamW touches parameter, gradient and two moments (read) and writes
  // three of them; the norm pass reads the gradient once; bucket packing
  // copies the gradient twice.
  p.optimizer_seconds_per_parameter = 4.0 * 7.0 / d.memory_bandwidth;
  p.norm_seconds_per_parameter = 4.0 / d.memory_bandwidth;
  p.bucket_copy_seconds_per_parameter = 4.0 * 4.0 / d.memory_bandwidth;
  p.input_seconds_per_row = d.input_seconds_per_row;
  p.cache_entry_bytes = tokens * h * v.bytes_per_value;
  const int64_t ln = 2 * h;
  for (size_t i = 0; i < flops.size(); ++i) {
    SubLayerProfile s;
    if (i == 0) {
      s.name = "embedding";
      s.parameters = v.channels * v.patch_size * v.patch_size * h + h + h + tokens * h;
      s.output_bytes_per_row = tokens * h * v.bytes_per_value;
    } else if (i + 1 == flops.size()) {
      s.name = "head";
      s.parameters = ln + h * v.classes + v.classes;
      s.output_bytes_per_row = v.classes * v.bytes_per_value;
    } else {
      s.block = static_cast<int>((i - 1) / 2);
      const bool attention = (i - 1) % 2 == 0;
      s.name = "block" + std::to_string(s.block) + (attention ? ".attention" : ".mlp");
      s.parameters = attention ? ln + 4 * (h * h + h) : ln + h * v.intermediate + v.intermediate + v.intermediate * h + h;
      s.output_bytes_per_row = tokens * h * v.bytes_per_value;
    }
    for (int64_t r : rows) {
      TimePoint t;
      t.rows = r;
      t.forward = d.call_overhead_seconds + flops[i] * static_cast<double>(r) / d.achieved_flops;
      t.backward = d.call_overhead_seconds + 2.0 * flops[i] * static_cast<double>(r) / d.achieved_flops;
      t.frozen_forward = t.forward;
      s.times.push_back(t);
    }
    p.sublayers.push_back(std::move(s));
  }
  validate_profile(p, "derived profile for " + v.name);
  return p;
}

}  // namespace pipet::sim
