// RAII handles and process facts behind the activation cache: file
// descriptors, memory mappings, and process identities that survive pid
// reuse (pid + start time), used to tell a live user of a shared segment
// from a dead one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pipet {

// An owned file descriptor, closed on destruction. Movable, not copyable.
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() { reset(); }
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.release()) {}
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() noexcept;
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// A shared read-write mapping of a whole file, unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  ~Mapping() { reset(); }
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  // Maps `bytes` of `fd` from offset 0 (MAP_SHARED, read-write). Returns an
  // empty mapping and sets errno on failure.
  static Mapping map(int fd, size_t bytes);

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool valid() const { return data_ != nullptr; }
  void reset() noexcept;

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A process as (pid, start time in clock ticks since boot): a recycled pid
// has a different start time.
struct ProcessIdentity {
  int32_t pid = 0;
  uint64_t start_ticks = 0;
};

ProcessIdentity current_process();
// Start time of `pid` from /proc/<pid>/stat; 0 when the process does not exist.
uint64_t process_start_ticks(int32_t pid);
// True while the process exists and is the same one (start time matches).
// Zombies count as dead.
bool process_alive(const ProcessIdentity& process);

// "<what>: <strerror(errno)>" for log lines and error messages.
std::string errno_text(int error_number);

}  // namespace pipet
