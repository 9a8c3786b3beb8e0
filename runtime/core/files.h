// Small filesystem helpers with errors that name the path and the purpose.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pipet {

// Writes `bytes` to `path` atomically: a temporary file in the same directory,
// fsync, rename over `path`, fsync of the directory. Readers see the old file
// or the new one, never a half-written one. Throws IoError naming the path.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Reads a whole file. Throws IoError naming the path (and `what` it is for).
std::string read_file(const std::string& path, const std::string& what = "file");

// Creates `path` (and parents) if needed and checks it is a writable
// directory. `what` names its purpose in errors ("output.dir").
void ensure_writable_directory(const std::string& path, const std::string& what);

// fsync of a directory, so a rename inside it is durable.
void fsync_directory(const std::string& path);

bool path_exists(const std::string& path);

// Removes `path` and, for a directory, everything below it (symbolic links
// are removed, never followed); a missing path is not an error. Returns the
// first failure's message, empty on success. Never throws.
//
// Use this, not std::filesystem::remove_all: PyTorch 2.x wheels' libtorch.so
// exports its own build of std::filesystem, which interposes ours, and its
// remove_all jumps to a null address on Ubuntu 24.04 (docs/gpu.md).
std::string remove_tree(const std::string& path) noexcept;

// Streams a file into place atomically, for contents too large to assemble in
// memory first: bytes go to a uniquely named temporary file next to `path`;
// commit() fsyncs it, renames it over `path` and fsyncs the directory. If the
// writer is destroyed without commit() (an error, an exception), the temporary
// file is removed and `path` is untouched. Errors are IoError naming `path`.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  void commit();

  const std::string& path() const { return path_; }

 private:
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace pipet
