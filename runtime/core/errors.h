// The engine's error hierarchy. Every error the user can cause is one of these
// and carries a message that names what is wrong and where (file, key, line,
// rank). `main` maps the class to a documented process exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace pipet {

// Process exit codes, documented in README.md ("Exit codes").
enum class ExitCode : int {
  kOk = 0,
  kInternal = 1,     // a bug or an unexpected library failure
  kConfig = 2,       // bad command line, config key, type or value
  kData = 3,         // dataset missing, truncated or malformed
  kIo = 4,           // filesystem failure or corrupt file format
  kModel = 5,        // weights or checkpoint do not fit the model
  kComm = 6,         // communication failure or timeout between ranks
  kDiverged = 7,     // training produced a non-finite loss or gradient
  kInterrupted = 143 // SIGTERM/SIGINT: stopped after writing a checkpoint
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ExitCode exit_code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

// Bad command line, config file, key, type or value.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& m) : Error(ExitCode::kConfig, m) {}
};

// Dataset files missing, truncated or malformed.
class DataError : public Error {
 public:
  explicit DataError(const std::string& m) : Error(ExitCode::kData, m) {}
};

// Filesystem failures (unwritable directory, short write, missing file).
class IoError : public Error {
 public:
  explicit IoError(const std::string& m) : Error(ExitCode::kIo, m) {}
};

// A file whose bytes violate its format (safetensors, checkpoint state).
class FormatError : public IoError {
 public:
  explicit FormatError(const std::string& m) : IoError(m) {}
};

// Weights or checkpoint that do not fit the configured model.
class ModelError : public Error {
 public:
  explicit ModelError(const std::string& m) : Error(ExitCode::kModel, m) {}
};

// Communication failure between ranks.
class CommError : public Error {
 public:
  explicit CommError(const std::string& m) : Error(ExitCode::kComm, m) {}
};

// Training diverged: a non-finite loss or gradient norm.
class TrainingDiverged : public Error {
 public:
  explicit TrainingDiverged(const std::string& m) : Error(ExitCode::kDiverged, m) {}
};

// The job was asked to stop (signal) and stopped cleanly after checkpointing.
class Interrupted : public Error {
 public:
  explicit Interrupted(const std::string& m) : Error(ExitCode::kInterrupted, m) {}
};

// Throws InternalError-class Error when `cond` is false. For invariants only;
// user input gets a specific error class with a useful message.
#define PIPET_CHECK(cond, msg)                                                  \
  do {                                                                          \
    if (!(cond))                                                                \
      throw ::pipet::Error(::pipet::ExitCode::kInternal,                        \
                           std::string("internal check failed at ") + __FILE__ \
                               + ":" + std::to_string(__LINE__) + ": " #cond    \
                               + ": " + (msg));                                 \
  } while (0)

}  // namespace pipet
