#include "runtime/core/host.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <iterator>

namespace pipet {
namespace {

HostIdentity compute_host_identity() {
  HostIdentity host;
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) == 0 && buffer[0] != '\0') {
    host.name = buffer;
  } else {
    host.name = "localhost";
  }
  for (char& c : host.name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  std::string identity = host.name + "|";
  // No procfs (not Linux): the host name alone.
  std::ifstream boot_id("/proc/sys/kernel/random/boot_id");
  if (boot_id) identity.append(std::istreambuf_iterator<char>(boot_id), std::istreambuf_iterator<char>());
  uint64_t hash = 1469598103934665603ull;
  for (const unsigned char c : identity) hash = (hash ^ c) * 1099511628211ull;
  host.key = hash;
  return host;
}

}  // namespace

std::string HostIdentity::file_tag() const {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(key & 0xffffffffu));
  return name + "-" + hex;
}

const HostIdentity& host_identity() {
  static const HostIdentity host = compute_host_identity();
  return host;
}

}  // namespace pipet
