// Small filesystem helpers with errors that name the path and the purpose.
#pragma once

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

}  // namespace pipet
