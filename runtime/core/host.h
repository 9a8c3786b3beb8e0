// Which machine this process runs on, for names that must differ between
// machines (AutoCache's disk slot files) and for grouping the ranks that
// share one /dev/shm.
#pragma once

#include <cstdint>
#include <string>

namespace pipet {

struct HostIdentity {
  // gethostname(), with characters other than [A-Za-z0-9._-] replaced by
  // '_' ("localhost" when it fails).
  std::string name;
  // FNV-1a of the host name and the kernel's boot id. The name alone does not
  // tell machines apart: every SageMaker container answers "aws". The boot id
  // is random per machine and boot; the name then tells apart containers of
  // one machine, which each have their own /dev/shm.
  uint64_t key = 0;

  // "<name>-<key as 8 hex digits>": safe in a file name, distinct per machine.
  std::string file_tag() const;
};

// Computed once per process (the answer cannot change while it runs).
const HostIdentity& host_identity();

}  // namespace pipet
