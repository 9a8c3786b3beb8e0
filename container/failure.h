// Failure reporting: the launcher's exit codes, /opt/ml/output/failure
// (written once, key message first: SageMaker shows its first 1024
// characters), and the per-rank error files the runtime writes through
// --error-file, composed into one message naming rank, host and error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "container/contract.h"

namespace pipet::sagemaker {

// Exit codes of the launcher (container/README.md, "Exit codes"). The
// runtime's own codes (1-7, 143) pass through unchanged when the job fails.
enum class LauncherExit : int {
  kWorkersUnreachable = 10,  // leader: a worker never became reachable/ready in time
  kLeaderLost = 11,          // worker: the leader never started or never reported the job
  kLaunchFailed = 12,        // mpirun or the runtime binary could not be started
  kWorkerFailed = 13,        // leader: a worker rejected its inputs before the job started
};

// What SageMaker shows of the failure file.
constexpr size_t kFailureReasonChars = 1024;

// Writes `message` to the failure file unless one exists (never
// overwritten). Creates the output directory if needed. Returns false when
// a failure file was already there or it could not be written (logged).
bool write_failure_file(const ContractPaths& paths, const std::string& message);

// One rank's error, from <error dir>/rank-<R>.txt (+ rank-<R>.exit).
struct RankError {
  int rank = -1;
  std::string host;
  std::string message;
  int exit_code = 0;       // 0 when unknown
  int64_t time_ns = 0;     // when the file was written
  bool interrupted = false;  // stopped by a signal after checkpointing
};

// The errors in `error_dir`, most telling first: real errors before
// interruptions, then by time written (the first failure caused the rest).
std::vector<RankError> collect_rank_errors(const std::string& error_dir, const std::string& host);

// "rank 1 on algo-2 failed (exit code 3, data error): <message>".
std::string describe_rank_error(const RankError& error);

// A one-line JSON form (carried from a worker to the leader) and back.
std::string rank_error_to_json(const RankError& error);
std::optional<RankError> rank_error_from_json(const std::string& text);

// Name of an exit code's class: "data error", "interrupted", ...
std::string exit_code_class(int code);

}  // namespace pipet::sagemaker
