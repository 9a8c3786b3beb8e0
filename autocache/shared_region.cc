#include "autocache/shared_region.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <signal.h>
#include <sstream>

namespace pipet {

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int FileDescriptor::release() noexcept {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void FileDescriptor::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Mapping::Mapping(Mapping&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

Mapping Mapping::map(int fd, size_t bytes) {
  Mapping mapping;
  if (bytes == 0) {
    errno = EINVAL;
    return mapping;
  }
  void* address = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) return mapping;
  mapping.data_ = static_cast<uint8_t*>(address);
  mapping.size_ = bytes;
  return mapping;
}

void Mapping::reset() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

uint64_t process_start_ticks(int32_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return 0;
  // The command name (field 2) is in parentheses and may contain spaces:
  // fields are counted after its closing parenthesis.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(line.substr(close + 1));
  std::string field;
  // Field 3 is the state; a zombie ('Z') or dead ('X') process is gone.
  if (!(fields >> field) || field == "Z" || field == "X") return 0;
  for (int index = 4; index <= 22; ++index) {
    if (!(fields >> field)) return 0;
  }
  try {
    return std::stoull(field);
  } catch (const std::exception&) {
    return 0;
  }
}

ProcessIdentity current_process() {
  ProcessIdentity self;
  self.pid = static_cast<int32_t>(::getpid());
  self.start_ticks = process_start_ticks(self.pid);
  return self;
}

bool process_alive(const ProcessIdentity& process) {
  if (process.pid <= 0) return false;
  if (::kill(process.pid, 0) != 0 && errno != EPERM) return false;
  const uint64_t ticks = process_start_ticks(process.pid);
  return ticks != 0 && ticks == process.start_ticks;
}

std::string errno_text(int error_number) { return std::strerror(error_number); }

}  // namespace pipet
