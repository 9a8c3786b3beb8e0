#include "runtime/core/files.h"

#include "runtime/core/errors.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <system_error>
#include <utility>

namespace pipet {
namespace {

// strerror() is not thread-safe; the system category's message is.
std::string error_text(int err) { return std::system_category().message(err); }

std::string in_quotes(const std::string& path) { return "'" + path + "'"; }

// The directory that holds `path` ("." for a bare name, "/" for "/name").
std::string parent_directory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A name no other writer in this or another process picks at the same time.
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  return std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) + "-" +
         std::to_string(static_cast<uint64_t>(ticks) % 1000000007ULL);
}

// Closes a descriptor on scope exit unless released.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int fsync_retrying(int fd) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

}  // namespace

// --- AtomicFileWriter --------------------------------------------------------

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  const std::string base = base_name(path_);
  if (base.empty() || base == "." || base == "..")
    throw IoError("cannot write " + in_quotes(path_) + ": not a file path");
  // Stay well under NAME_MAX (255) however long the target's name is.
  const std::string stem = "." + base.substr(0, std::min<size_t>(base.size(), 180)) + ".tmp-";
  const std::string dir = parent_directory(path_);
  int last_error = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string candidate = dir + "/" + stem + unique_suffix();
    const int fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      fd_ = fd;
      temp_path_ = std::move(candidate);
      return;
    }
    last_error = errno;
    if (last_error != EEXIST && last_error != EINTR) break;
  }
  throw IoError("cannot write " + in_quotes(path_) + ": cannot create a temporary file in " +
                in_quotes(dir) + ": " + error_text(last_error));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  PIPET_CHECK(fd_ >= 0, "AtomicFileWriter::write on '" + path_ + "' after commit or failure");
  const char* cursor = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    // Linux transfers at most ~2 GiB per call; ask for 1 GiB and loop.
    const size_t chunk = std::min<size_t>(left, size_t{1} << 30);
    const ssize_t n = ::write(fd_, cursor, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      discard();
      throw IoError("cannot write " + in_quotes(path_) + ": " + error_text(err));
    }
    if (n == 0) {
      discard();
      throw IoError("cannot write " + in_quotes(path_) + ": the device accepted no bytes");
    }
    cursor += n;
    left -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  PIPET_CHECK(fd_ >= 0, "AtomicFileWriter::commit on '" + path_ + "' twice or after failure");
  if (fsync_retrying(fd_) != 0) {
    const int err = errno;
    discard();
    throw IoError("cannot write " + in_quotes(path_) + ": fsync failed: " + error_text(err));
  }
  // close() can report a deferred write error (NFS); it must not be retried.
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && errno != EINTR) {
    const int err = errno;
    discard();
    throw IoError("cannot write " + in_quotes(path_) + ": close failed: " + error_text(err));
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    discard();
    throw IoError("cannot write " + in_quotes(path_) + ": cannot rename the temporary file over it: " +
                  error_text(err));
  }
  temp_path_.clear();
  committed_ = true;
  fsync_directory(parent_directory(path_));
}

// --- free functions ----------------------------------------------------------

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

std::string read_file(const std::string& path, const std::string& what) {
  const std::string where = what + " " + in_quotes(path);
  FdGuard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError("cannot open " + where + ": " + error_text(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw IoError("cannot stat " + where + ": " + error_text(errno));
  if (S_ISDIR(st.st_mode)) throw IoError("cannot read " + where + ": it is a directory");

  std::string contents;
  // st_size is a hint only (pipes and /proc files report 0): read to EOF.
  if (S_ISREG(st.st_mode) && st.st_size > 0) contents.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot read " + where + ": " + error_text(errno));
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  return contents;
}

void ensure_writable_directory(const std::string& path, const std::string& what) {
  if (path.empty()) throw IoError(what + ": the directory path is empty");

  // Walk the prefixes so the error says which component is in the way.
  std::string prefix = path[0] == '/' ? "/" : "";
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t next = std::min(path.find('/', pos), path.size());
    const std::string component = path.substr(pos, next - pos);
    pos = next + 1;
    if (component.empty()) continue;
    if (!prefix.empty() && prefix.back() != '/') prefix += '/';
    prefix += component;
    const bool is_target = pos > path.size() || path.find_first_not_of('/', pos) == std::string::npos;

    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) continue;
      if (is_target)
        throw IoError(what + ": " + in_quotes(path) + " exists and is not a directory");
      throw IoError(what + ": cannot create directory " + in_quotes(path) +
                    ": a parent is not a directory (" + in_quotes(prefix) + " is a file)");
    }
    if (errno != ENOENT)
      throw IoError(what + ": cannot create directory " + in_quotes(path) + ": cannot inspect " +
                    in_quotes(prefix) + ": " + error_text(errno));
    if (::mkdir(prefix.c_str(), 0777) != 0) {
      const int err = errno;
      // Another process may have created it between stat and mkdir.
      if (err == EEXIST && ::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
      throw IoError(what + ": cannot create directory " + in_quotes(prefix) + ": " + error_text(err));
    }
  }

  // access(W_OK) says yes to root even on read-only mounts and ignores ACL
  // quirks; creating a file is the only honest test.
  const std::string probe = path + "/.pipet-write-probe-" + unique_suffix();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    throw IoError(what + ": directory " + in_quotes(path) + " is not writable: " + error_text(errno));
  ::close(fd);
  if (::unlink(probe.c_str()) != 0)
    throw IoError(what + ": cannot remove the probe file " + in_quotes(probe) + ": " +
                  error_text(errno));
}

void fsync_directory(const std::string& path) {
  FdGuard fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0)
    throw IoError("cannot open directory " + in_quotes(path) + " to sync it: " + error_text(errno));
  if (fsync_retrying(fd.get()) != 0) {
    const int err = errno;
    // Some filesystems cannot sync directories; there is nothing more to do there.
    if (err == EINVAL || err == EROFS || err == ENOTSUP) return;
    throw IoError("cannot sync directory " + in_quotes(path) + ": " + error_text(err));
  }
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

namespace {
thread_local std::string remove_tree_error;

int remove_one(const char* path, const struct stat*, int type, struct FTW*) {
  // Depth-first: a directory's entries are gone before it is visited.
  const int rc = (type == FTW_DP) ? ::rmdir(path) : ::unlink(path);
  if (rc != 0 && errno != ENOENT) {
    remove_tree_error = std::string("cannot remove ") + path + ": " + std::generic_category().message(errno);
    return 1;  // stops the walk
  }
  return 0;
}
}  // namespace

std::string remove_tree(const std::string& path) noexcept {
  try {
    struct stat info;
    if (::lstat(path.c_str(), &info) != 0) {
      return errno == ENOENT ? std::string()
                             : "cannot inspect " + path + ": " + std::generic_category().message(errno);
    }
    if (!S_ISDIR(info.st_mode)) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return "cannot remove " + path + ": " + std::generic_category().message(errno);
      return {};
    }
    remove_tree_error.clear();
    // FTW_PHYS: links are removed as links; FTW_DEPTH: children first.
    if (::nftw(path.c_str(), remove_one, 32, FTW_DEPTH | FTW_PHYS) != 0 && remove_tree_error.empty())
      remove_tree_error = "cannot walk " + path + ": " + std::generic_category().message(errno);
    return remove_tree_error;
  } catch (...) {
    return "cannot remove " + path + ": out of memory";
  }
}

}  // namespace pipet
