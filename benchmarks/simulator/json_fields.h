// Reading JSON objects with errors that name the file and the key path
// (library-internal helper of the simulator).
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>

#include "runtime/core/errors.h"

namespace pipet::sim {

// Parses a JSON file; IoError when unreadable, ConfigError naming the file
// when it is not JSON. `what` says what the file is for ("cluster spec").
nlohmann::json read_json_file(const std::string& path, const std::string& what);

class JsonFields {
 public:
  // `where` names the document ("cluster.json"), `path` the object inside it.
  JsonFields(const nlohmann::json& object, std::string where, std::string path = "")
      : object_(object), where_(std::move(where)), path_(std::move(path)) {
    if (!object_.is_object()) fail(path_.empty() ? "the document" : path_, "must be a JSON object");
  }

  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  bool has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }
  const nlohmann::json& raw(const std::string& key) const {
    if (!has(key)) fail(key_path(key), "is missing");
    seen_.insert(key);
    return object_.at(key);
  }

  double number(const std::string& key) const {
    const nlohmann::json& v = raw(key);
    if (!v.is_number()) fail(key_path(key), "must be a number, got " + v.dump());
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail(key_path(key), "must be finite");
    return d;
  }
  double number(const std::string& key, double fallback) const { return has(key) ? number(key) : mark(key, fallback); }
  double non_negative(const std::string& key) const { return check_min(key, number(key), 0.0, false); }
  double non_negative(const std::string& key, double fallback) const {
    return has(key) ? non_negative(key) : mark(key, fallback);
  }
  double positive(const std::string& key) const { return check_min(key, number(key), 0.0, true); }
  double positive(const std::string& key, double fallback) const { return has(key) ? positive(key) : mark(key, fallback); }

  int64_t integer(const std::string& key) const {
    const nlohmann::json& v = raw(key);
    if (!v.is_number_integer()) fail(key_path(key), "must be an integer, got " + v.dump());
    return v.get<int64_t>();
  }
  int64_t integer(const std::string& key, int64_t fallback) const { return has(key) ? integer(key) : mark(key, fallback); }
  int64_t integer_at_least(const std::string& key, int64_t minimum) const {
    const int64_t v = integer(key);
    if (v < minimum) fail(key_path(key), "must be >= " + std::to_string(minimum) + ", got " + std::to_string(v));
    return v;
  }
  int64_t integer_at_least(const std::string& key, int64_t minimum, int64_t fallback) const {
    return has(key) ? integer_at_least(key, minimum) : mark(key, fallback);
  }

  std::string text(const std::string& key) const {
    const nlohmann::json& v = raw(key);
    if (!v.is_string()) fail(key_path(key), "must be a string, got " + v.dump());
    return v.get<std::string>();
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    return has(key) ? text(key) : mark(key, fallback);
  }
  bool flag(const std::string& key, bool fallback) const {
    if (!has(key)) return mark(key, fallback);
    const nlohmann::json& v = raw(key);
    if (!v.is_boolean()) fail(key_path(key), "must be true or false, got " + v.dump());
    return v.get<bool>();
  }
  JsonFields object(const std::string& key) const { return JsonFields(raw(key), where_, key_path(key)); }

  // Keys present but never read: a misspelt setting must not pass silently.
  // Keys starting with "_" are comments.
  void reject_unknown() const {
    for (const auto& [key, value] : object_.items())
      if (!seen_.count(key) && (key.empty() || key[0] != '_')) fail(key_path(key), "is not a known setting");
  }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(where_ + ": " + key + " " + what);
  }

 private:
  template <typename T>
  T mark(const std::string& key, T value) const {
    seen_.insert(key);
    return value;
  }
  double check_min(const std::string& key, double v, double minimum, bool strict) const {
    if (strict ? !(v > minimum) : !(v >= minimum))
      fail(key_path(key), std::string("must be ") + (strict ? "> " : ">= ") + std::to_string(minimum) + ", got " +
                              std::to_string(v));
    return v;
  }

  const nlohmann::json& object_;
  std::string where_;
  std::string path_;
  mutable std::set<std::string> seen_;
};

}  // namespace pipet::sim
