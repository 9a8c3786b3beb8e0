// Test helpers: a temporary directory removed at scope exit, file helpers.
#pragma once

#include <string>
#include <string_view>

namespace pipet::testing {

class TempDir {
 public:
  TempDir();  // mkdtemp under $TMPDIR or /tmp
  ~TempDir(); // recursive removal; never throws
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_text(const std::string& path, std::string_view contents);
std::string read_text(const std::string& path);

}  // namespace pipet::testing
