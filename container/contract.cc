#include "container/contract.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/strings.h"

namespace pipet::sagemaker {
namespace {

using json = nlohmann::json;
constexpr const char* kDefaultRoot = "/opt/ml";

std::pair<size_t, size_t> line_and_column(const std::string& text, size_t byte) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < text.size() && i + 1 < byte; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

// nlohmann's message minus its "[json.exception.parse_error.101] parse error
// at line 1, column 5: " preamble (we print our own position).
std::string parse_reason(const json::parse_error& e) {
  const std::string what = e.what();
  const size_t column = what.find("column ");
  if (column != std::string::npos) {
    const size_t colon = what.find(": ", column);
    if (colon != std::string::npos) return what.substr(colon + 2);
  }
  const size_t bracket = what.find("] ");
  return bracket == std::string::npos ? what : what.substr(bracket + 2);
}

std::string kind_of(const json& value) {
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_number()) return "a number";
  if (value.is_null()) return "null";
  if (value.is_array()) return "a list";
  return "an object";
}

// Parses a contract file; the top level must be an object. Equal keys in one
// object are rejected (nlohmann would silently keep the last).
json parse_object_file(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;
  auto reject_duplicates = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key) {
      const std::string key = parsed.get<std::string>();
      if (!open_objects.empty() && !open_objects.back().insert(key).second)
        throw ConfigError(path + ": key '" + key + "' appears twice");
    }
    return true;
  };
  json document;
  try {
    document = json::parse(text, reject_duplicates);
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_and_column(text, e.byte);
    throw ConfigError(path + ":" + std::to_string(line) + ":" + std::to_string(column) +
                      ": invalid JSON: " + parse_reason(e));
  }
  if (!document.is_object())
    throw ConfigError(path + ": expected a JSON object at the top level, got " + kind_of(document));
  return document;
}

// The file's JSON object, or nullopt-like empty object with present=false.
json read_optional_object(const std::string& path, bool& present) {
  present = path_exists(path);
  if (!present) return json::object();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw ConfigError(path + ": not a regular file");
  return parse_object_file(path, read_file(path, "SageMaker contract file"));
}

std::string string_member(const json& object, const std::string& key, const std::string& path,
                          bool required, const std::string& fallback = "") {
  if (!object.contains(key)) {
    if (required) throw ConfigError(path + ": required key '" + key + "' is missing");
    return fallback;
  }
  const json& value = object.at(key);
  if (!value.is_string())
    throw ConfigError(path + ": key '" + key + "': expected a string, got " + kind_of(value) +
                      " " + value.dump());
  return value.get<std::string>();
}

}  // namespace

ContractPaths::ContractPaths(std::string root_dir) : root(std::move(root_dir)) {
  while (root.size() > 1 && root.back() == '/') root.pop_back();
}

std::string ContractPaths::rebase(const std::string& path) const {
  const std::string prefix = kDefaultRoot;
  if (path == prefix) return root;
  if (starts_with(path, prefix + "/")) return root + path.substr(prefix.size());
  return path;
}

ContractPaths contract_paths_from_environment() {
  const char* base = std::getenv("SAGEMAKER_BASE_DIR");
  return ContractPaths(base && *base ? base : kDefaultRoot);
}

size_t ResourceConfig::host_index() const {
  return static_cast<size_t>(std::find(hosts.begin(), hosts.end(), current_host) - hosts.begin());
}

Hyperparameters read_hyperparameters(const ContractPaths& paths) {
  const std::string path = paths.hyperparameters();
  Hyperparameters out;
  const json object = read_optional_object(path, out.file_present);
  // The limit is the platform's; a bigger file was not written by SageMaker
  // and most likely carries a whole config pasted key by key.
  if (object.size() > kMaxHyperparameters)
    throw ConfigError(path + ": " + std::to_string(object.size()) +
                      " hyperparameters; SageMaker allows at most " +
                      std::to_string(kMaxHyperparameters) +
                      " (put the rest in a config file of the training channel)");
  for (const auto& [key, value] : object.items()) {
    if (starts_with(key, "sagemaker_") || key == "_tuning_objective_metric") {
      out.ignored.push_back(key);
      continue;
    }
    if (!value.is_string())
      throw ConfigError(path + ": hyperparameter '" + key + "' is " + kind_of(value) + " (" +
                        value.dump() +
                        "), but SageMaker passes every hyperparameter as a string; write it as " +
                        json(value.dump()).dump());
    out.values[key] = value.get<std::string>();
  }
  return out;
}

ResourceConfig read_resource_config(const ContractPaths& paths) {
  const std::string path = paths.resource_config();
  ResourceConfig out;
  const json object = read_optional_object(path, out.file_present);
  if (!out.file_present) {
    // Not in SageMaker (a plain `docker run`): one host, named as the
    // platform names the first one.
    out.current_host = "algo-1";
    out.hosts = {"algo-1"};
    return out;
  }
  out.current_host = string_member(object, "current_host", path, /*required=*/true);
  if (out.current_host.empty()) throw ConfigError(path + ": current_host is empty");
  if (!object.contains("hosts")) throw ConfigError(path + ": required key 'hosts' is missing");
  const json& hosts = object.at("hosts");
  if (!hosts.is_array() || hosts.empty())
    throw ConfigError(path + ": key 'hosts': expected a non-empty list of host names, got " +
                      hosts.dump());
  std::set<std::string> seen;
  for (size_t i = 0; i < hosts.size(); ++i) {
    const json& host = hosts[i];
    if (!host.is_string() || host.get<std::string>().empty())
      throw ConfigError(path + ": hosts[" + std::to_string(i) + "]: expected a host name, got " +
                        host.dump());
    const std::string name = host.get<std::string>();
    if (!seen.insert(name).second)
      throw ConfigError(path + ": hosts[" + std::to_string(i) + "]: host '" + name +
                        "' is listed twice");
    out.hosts.push_back(name);  // list order, never sorted: algo-10 comes after algo-9
  }
  if (!seen.count(out.current_host))
    throw ConfigError(path + ": current_host '" + out.current_host +
                      "' is not in hosts [" + join(out.hosts, ", ") + "]");
  out.network_interface_name =
      string_member(object, "network_interface_name", path, /*required=*/false, "eth0");
  if (out.network_interface_name.empty())
    throw ConfigError(path + ": network_interface_name is empty");
  out.current_instance_type = string_member(object, "current_instance_type", path, false);
  return out;
}

InputDataConfig read_input_data_config(const ContractPaths& paths) {
  const std::string path = paths.input_data_config();
  InputDataConfig out;
  const json object = read_optional_object(path, out.file_present);
  for (const auto& [name, spec] : object.items()) {
    if (name.empty() || name.find('/') != std::string::npos)
      throw ConfigError(path + ": channel name '" + name + "' is not a directory name");
    if (!spec.is_object())
      throw ConfigError(path + ": channel '" + name + "': expected an object, got " +
                        kind_of(spec));
    const std::string where = path + ": channel '" + name + "'";
    Channel channel;
    channel.name = name;
    channel.input_mode = string_member(spec, "TrainingInputMode", where, false, "File");
    const std::vector<std::string> modes = {"File", "Pipe", "FastFile"};
    if (std::find(modes.begin(), modes.end(), channel.input_mode) == modes.end())
      throw ConfigError(where + ": TrainingInputMode '" + channel.input_mode +
                        "' is not one of File, Pipe, FastFile" +
                        did_you_mean(channel.input_mode, modes));
    channel.distribution =
        string_member(spec, "S3DistributionType", where, false, "FullyReplicated");
    channel.content_type = string_member(spec, "ContentType", where, false);
    out.channels[name] = channel;
  }
  return out;
}

CheckpointContract read_checkpoint_config(const ContractPaths& paths) {
  const std::string path = paths.checkpoint_config();
  CheckpointContract out;
  const json object = read_optional_object(path, out.file_present);
  out.local_path = paths.rebase(string_member(object, "LocalPath", path, false, "/opt/ml/checkpoints"));
  if (out.local_path.empty() || out.local_path.front() != '/')
    throw ConfigError(path + ": LocalPath '" + out.local_path + "' is not an absolute path");
  out.s3_uri = string_member(object, "S3Uri", path, false);
  return out;
}

std::string unquote_json_text(const std::string& text, const std::string& what) {
  const std::string trimmed = trim(text);
  if (trimmed.size() >= 2 && trimmed.front() == '"' && trimmed.back() == '"') {
    try {
      return json::parse(trimmed).get<std::string>();
    } catch (const json::exception&) {
      throw ConfigError(what + ": invalid JSON-encoded string " + json(text).dump());
    }
  }
  return trimmed;
}

bool parse_bool_text(const std::string& text, const std::string& what) {
  const std::string t = unquote_json_text(text, what);
  if (t == "true" || t == "True" || t == "TRUE" || t == "1") return true;
  if (t == "false" || t == "False" || t == "FALSE" || t == "0") return false;
  throw ConfigError(what + ": expected a boolean (true/True/1 or false/False/0), got " +
                    json(text).dump());
}

}  // namespace pipet::sagemaker
