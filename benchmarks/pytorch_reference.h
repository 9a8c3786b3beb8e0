// The PyTorch eager side of a comparison: a Python script run by the system
// interpreter (Debian's python3-torch lives under /usr/bin/python3, not under
// whatever `python3` comes first on PATH) with a fixed thread count, printing
// one JSON object as the last line of its stdout.
#pragma once

#include "runtime/core/errors.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace pipet::bench {

// The reference ran but failed (non-zero exit, no JSON); the message says
// which command and why. Benchmarks report it as a failed check.
class ReferenceFailed : public Error {
 public:
  explicit ReferenceFailed(const std::string& m) : Error(ExitCode::kInternal, m) {}
};

struct PythonTorch {
  std::string python;     // interpreter path
  bool available = false;
  std::string version;    // torch.__version__ when available
  std::string reason;     // why not, when unavailable
};

// Asks `python` whether it can import torch (one short child process).
PythonTorch probe_python_torch(const std::string& python);

// Runs `script args...` under `python` with OMP_NUM_THREADS,
// OPENBLAS_NUM_THREADS and MKL_NUM_THREADS set to `threads` (thread pools are
// sized when torch loads, so the environment is the only reliable knob) and
// `environment` ("NAME=value" entries) added. Returns the JSON object on the
// last line of its stdout; ReferenceFailed otherwise.
nlohmann::json run_python_reference(const PythonTorch& python, const std::string& script,
                                    const std::vector<std::string>& args, int threads,
                                    const std::vector<std::string>& environment = {});

}  // namespace pipet::bench
