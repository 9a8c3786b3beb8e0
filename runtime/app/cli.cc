#include "runtime/app/cli.h"

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <iostream>
#include <string>
#include <vector>

#include "pipet/build_config.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/comm/mpi_runtime.h"
#include "runtime/core/allocator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/core/threads.h"
#include "runtime/core/torch_pch.h"
#include "runtime/engine/export.h"
#include "runtime/engine/stop_signal.h"
#include "runtime/engine/trainer.h"

namespace pipet {
namespace {

// Writes the failure message to `path` unless a file is already there: the
// first failure is the one worth reading (SageMaker shows its first 1024
// characters), later ones must not replace it.
void write_error_file(const std::string& path, const std::string& message) {
  if (path.empty()) return;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return;
  std::string text = message + "\n";
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::close(fd);
}

// Logs a failure, writes the error file and returns the exit code. `where`
// ("rank 3 on host algo-2: ") leads the message so the first line a user
// sees says which process failed.
int report_failure(std::exception_ptr failure, const std::string& error_file, const std::string& where) {
  try {
    std::rethrow_exception(failure);
  } catch (const Interrupted& e) {
    spdlog::warn("{}", e.what());
    write_error_file(error_file, where + "interrupted: " + e.what());
    return static_cast<int>(e.exit_code());
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    write_error_file(error_file, where + e.what());
    return static_cast<int>(e.exit_code());
  } catch (const c10::Error& e) {
    const std::string message = std::string("internal error (LibTorch): ") + e.what_without_backtrace();
    spdlog::error("{}", message);
    write_error_file(error_file, where + message);
    return static_cast<int>(ExitCode::kInternal);
  } catch (const std::exception& e) {
    const std::string message = std::string("internal error: ") + e.what();
    spdlog::error("{}", message);
    write_error_file(error_file, where + message);
    return static_cast<int>(ExitCode::kInternal);
  }
}

std::string host_name() {
  if (const char* host = std::getenv("PIPET_HOST")) return host;  // set by the container launcher
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof(buffer) - 1) != 0) return "unknown";
  return buffer;
}

TrainConfig build_config(const std::string& config_file, const std::vector<std::string>& assignments) {
  TrainConfig config = config_file.empty() ? TrainConfig{} : load_config_file(config_file);
  for (const auto& assignment : assignments) apply_config_assignment(config, assignment, {"--set"});
  return config;
}

struct Options {
  std::string config_file;
  std::vector<std::string> assignments;
  std::string init_from;
  std::string resume;
  std::string output_dir;
  std::string error_file;
  std::string describe_format = "markdown";
  bool describe = false;
  std::string validate_file;
  std::string checkpoint_dir;
  std::string export_dir;
};

int command_train(const Options& options) {
  TrainConfig config = build_config(options.config_file, options.assignments);
  if (!options.init_from.empty()) config.model.init_from = options.init_from;
  if (!options.resume.empty()) config.checkpoint.resume = options.resume;
  if (!options.output_dir.empty()) config.output.dir = options.output_dir;
  // MPI only under mpirun: a plain run needs no MPI at all.
  std::unique_ptr<MpiRuntime> mpi;
  if (launched_by_mpi_launcher()) mpi = std::make_unique<MpiRuntime>();
  const int rank = mpi ? mpi->world_rank() : 0;
  init_logging(rank, config.runtime.log_level);
  install_stop_signal_handlers();
  TrainResult result;
  try {
    std::unique_ptr<Communicator> world = make_communicator(mpi.get());
    Trainer trainer(config, world.get());
    result = trainer.run();
  } catch (...) {
    // A failure on one rank of many: report it here, then end every rank of
    // the job (MPI_Abort) so none waits forever on this one. A stop request
    // is agreed by all ranks, so they all leave cleanly instead.
    if (mpi && mpi->world_size() > 1) {
      std::exception_ptr failure = std::current_exception();
      bool interrupted = false;
      try {
        std::rethrow_exception(failure);
      } catch (const Interrupted&) {
        interrupted = true;
      } catch (...) {
      }
      if (!interrupted) {
        const std::string where = "rank " + std::to_string(rank) + " of " +
                                  std::to_string(mpi->world_size()) + " on host " + host_name() + ": ";
        mpi->abort(report_failure(failure, options.error_file, where));
      }
    }
    throw;
  }
  if (result.interrupted) {
    throw Interrupted("stopped by signal " + std::to_string(stop_signal()) + " at step " +
                      std::to_string(result.steps) +
                      (result.last_checkpoint.empty() ? " (no checkpoint: checkpoint.dir is not set)"
                                                      : "; checkpoint " + result.last_checkpoint));
  }
  std::string eval_text;
  if (result.eval)
    for (const auto& [name, value] : result.eval->metrics)
      eval_text += fmt::format(", eval_{} {:.4f}", name, value);
  spdlog::info("[train] done: {} steps, train_loss {:.4f}{}, {:.1f} samples/s", result.steps,
               result.train_loss, eval_text, result.samples_per_second);
  return 0;
}

int command_config(const Options& options) {
  if (options.describe) {
    std::cout << describe_config(options.describe_format);
    return 0;
  }
  TrainConfig config = build_config(options.validate_file, options.assignments);
  validate_config(config);
  std::cout << options.validate_file << ": valid\n";
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  configure_allocator();
  init_logging(0);
  Options options;
  CLI::App app{"pipetransformer: Transformer fine-tuning with elastic pipelining "
               "(freeze, AutoPipe, AutoDP, AutoCache)",
               "pipetransformer"};
  app.set_version_flag("--version", std::string(PIPET_VERSION) + " (LibTorch " PIPET_TORCH_VERSION ")");
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 internal error, 2 bad command line or configuration, "
      "3 dataset missing or malformed, 4 filesystem error or corrupt file, 5 weights or "
      "checkpoint do not fit the model, 6 communication failure, 7 training diverged, "
      "143 stopped by SIGTERM/SIGINT after checkpointing.");
  app.add_option("--error-file", options.error_file,
                 "On failure, write the error message to this file (never overwrites an existing one)");

  CLI::App* train = app.add_subcommand("train", "Train a model");
  train->add_option("--config,-c", options.config_file, "JSON config file (see `config --describe`)")
      ->check(CLI::ExistingFile);
  train->add_option("--set,-s", options.assignments, "Override a config key: --set train.lr=3e-4 (repeatable)");
  train->add_option("--init-from", options.init_from, "Pretrained weights (safetensors, Hugging Face names)");
  train->add_option("--resume", options.resume, "auto (default: newest checkpoint in checkpoint.dir), never, or a checkpoint of any layout (a step directory, a part, or a checkpoint.dir)");
  train->add_option("--output,-o", options.output_dir, "Output directory (output.dir)");

  CLI::App* config = app.add_subcommand("config", "Describe the configuration keys or validate a config file");
  auto* describe = config->add_flag("--describe", options.describe, "Print every key with its type, default, range and documentation");
  config->add_option("--format", options.describe_format, "Format of --describe: markdown or text")
      ->check(CLI::IsMember({"markdown", "text"}));
  auto* validate = config->add_option("--validate", options.validate_file, "Validate a config file")
                       ->check(CLI::ExistingFile);
  config->add_option("--set,-s", options.assignments, "Overrides applied before validating");
  describe->excludes(validate);
  config->require_option(1, 0);

  CLI::App* export_cmd = app.add_subcommand("export", "Export a checkpoint as model.safetensors + config.json (Hugging Face format)");
  export_cmd->add_option("--checkpoint", options.checkpoint_dir, "A checkpoint of any layout: checkpoint.dir (its newest step), a step directory, or one rank's part (rank-R/step-N)")->required();
  export_cmd->add_option("--output,-o", options.export_dir, "Directory to write")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    if (code != 0) {
      write_error_file(options.error_file, std::string("usage: ") + e.what());
      return static_cast<int>(ExitCode::kConfig);
    }
    return 0;
  }

  try {
    if (train->parsed()) return command_train(options);
    if (config->parsed()) return command_config(options);
    if (export_cmd->parsed()) {
      export_checkpoint(options.checkpoint_dir, options.export_dir);
      return 0;
    }
    return static_cast<int>(ExitCode::kConfig);
  } catch (...) {
    return report_failure(std::current_exception(), options.error_file, "");
  }
}

}  // namespace pipet
