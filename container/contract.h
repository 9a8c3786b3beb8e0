// The SageMaker training-container contract, read from the /opt/ml tree:
//   input/config/hyperparameters.json   flat object, every value a string
//   input/config/resourceconfig.json    current_host, hosts, network interface
//   input/config/inputdataconfig.json   one object per input channel
//   input/config/checkpointconfig.json  LocalPath of the synced checkpoint dir
//   input/data/<channel>/               the channel's files
//   model/, output/data/, output/failure
// The root is /opt/ml unless SAGEMAKER_BASE_DIR says otherwise (tests, local
// runs); absolute paths under /opt/ml inside the contract files are rebased
// onto that root. Every reader throws ConfigError naming the file (and the
// line and column for JSON syntax errors, the key for schema errors).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace pipet::sagemaker {

// Where the contract lives. All paths absolute, derived from one root.
struct ContractPaths {
  std::string root;  // /opt/ml or SAGEMAKER_BASE_DIR

  explicit ContractPaths(std::string root_dir);
  std::string config_dir() const { return root + "/input/config"; }
  std::string hyperparameters() const { return config_dir() + "/hyperparameters.json"; }
  std::string resource_config() const { return config_dir() + "/resourceconfig.json"; }
  std::string input_data_config() const { return config_dir() + "/inputdataconfig.json"; }
  std::string checkpoint_config() const { return config_dir() + "/checkpointconfig.json"; }
  std::string data_dir() const { return root + "/input/data"; }
  std::string channel_dir(const std::string& channel) const { return data_dir() + "/" + channel; }
  std::string model_dir() const { return root + "/model"; }
  std::string output_dir() const { return root + "/output"; }
  std::string output_data_dir() const { return output_dir() + "/data"; }
  std::string failure_file() const { return output_dir() + "/failure"; }
  std::string default_checkpoint_dir() const { return root + "/checkpoints"; }

  // "/opt/ml/x" -> root + "/x" (other paths unchanged).
  std::string rebase(const std::string& path) const;
};

// The root from SAGEMAKER_BASE_DIR, else /opt/ml.
ContractPaths contract_paths_from_environment();

// hyperparameters.json after dropping the platform's own keys (sagemaker_*,
// _tuning_objective_metric). Values are the raw strings as given.
struct Hyperparameters {
  std::map<std::string, std::string> values;
  std::vector<std::string> ignored;  // platform keys that were dropped
  bool file_present = false;
};

// SageMaker allows at most this many hyperparameters.
constexpr size_t kMaxHyperparameters = 100;

struct ResourceConfig {
  std::string current_host;
  std::vector<std::string> hosts;  // list order: hosts[0] leads
  std::string network_interface_name = "eth0";
  std::string current_instance_type;
  bool file_present = false;

  bool is_leader() const { return !hosts.empty() && hosts.front() == current_host; }
  size_t host_index() const;  // position of current_host in hosts
};

struct Channel {
  std::string name;
  std::string input_mode = "File";             // File | Pipe | FastFile
  std::string distribution = "FullyReplicated"; // FullyReplicated | ShardedByS3Key
  std::string content_type;
};

struct InputDataConfig {
  std::map<std::string, Channel> channels;
  bool file_present = false;
};

struct CheckpointContract {
  std::string local_path;  // rebased; the default dir when the file is absent
  std::string s3_uri;      // informational
  bool file_present = false;
};

Hyperparameters read_hyperparameters(const ContractPaths& paths);
ResourceConfig read_resource_config(const ContractPaths& paths);
InputDataConfig read_input_data_config(const ContractPaths& paths);
CheckpointContract read_checkpoint_config(const ContractPaths& paths);

// Interprets a SageMaker boolean string: true/True/TRUE/1 and
// false/False/FALSE/0, JSON-encoded or not. Throws ConfigError naming `what`.
bool parse_bool_text(const std::string& text, const std::string& what);

// Removes one level of JSON string encoding ("\"abc\"" -> "abc"); other text
// is returned trimmed. Throws ConfigError naming `what` for broken quoting.
std::string unquote_json_text(const std::string& text, const std::string& what);

}  // namespace pipet::sagemaker
