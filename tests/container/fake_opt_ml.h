// A fake /opt/ml tree in a temporary directory, in the two shapes the
// launcher meets: what the SageMaker platform writes, and what local mode
// (`instance_type="local"`) writes.
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "tests/support/temp_dir.h"

namespace pipet::testing {

class FakeOptMl {
 public:
  // The tree lives in <dir>/<name>; nothing is written until asked.
  FakeOptMl(const TempDir& dir, const std::string& name = "opt_ml")
      : root_(dir.path() + "/" + name) {
    std::filesystem::create_directories(root_ + "/input/config");
    std::filesystem::create_directories(root_ + "/input/data");
    std::filesystem::create_directories(root_ + "/model");
    std::filesystem::create_directories(root_ + "/output");
  }

  const std::string& root() const { return root_; }
  std::string path(const std::string& relative) const { return root_ + "/" + relative; }
  std::string config(const std::string& file) const { return root_ + "/input/config/" + file; }

  void hyperparameters(const std::string& json) { write_text(config("hyperparameters.json"), json); }
  void resources(const std::string& json) { write_text(config("resourceconfig.json"), json); }
  void input_data(const std::string& json) { write_text(config("inputdataconfig.json"), json); }
  void checkpoint(const std::string& json) { write_text(config("checkpointconfig.json"), json); }

  // The platform's resourceconfig.json for `current` among `hosts`.
  void platform_resources(const std::string& current, const std::string& hosts_json,
                          const std::string& interface = "eth0") {
    resources(R"({"current_host": ")" + current + R"(", "current_instance_type": "ml.p4d.24xlarge",
      "current_group_name": "homogeneousCluster", "hosts": )" + hosts_json +
              R"(, "instance_groups": [{"instance_group_name": "homogeneousCluster",
      "instance_type": "ml.p4d.24xlarge", "hosts": )" + hosts_json +
              R"(}], "network_interface_name": ")" + interface + R"("})");
  }

  // A channel folder with one file in it.
  void channel_file(const std::string& channel, const std::string& file, const std::string& bytes) {
    std::filesystem::create_directories(root_ + "/input/data/" + channel);
    write_text(root_ + "/input/data/" + channel + "/" + file, bytes);
  }

  // Every file and folder under the root, relative.
  std::set<std::string> listing() const {
    std::set<std::string> out;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root_))
      out.insert(std::filesystem::relative(entry.path(), root_).string());
    return out;
  }

 private:
  std::string root_;
};

}  // namespace pipet::testing
