// MpiRuntime: owns MPI's lifetime in this process (MPI_Init_thread in the
// constructor, MPI_Finalize in the destructor). `main` creates exactly one,
// before any communicator, and destroys it after every communicator is gone.
#pragma once

namespace pipet {

class MpiRuntime {
 public:
  // Initialises MPI with at least MPI_THREAD_FUNNELED (MPI is called from the
  // main thread only). Throws CommError if MPI is already initialised or was
  // finalised, or if the library cannot give FUNNELED. Errors on the world
  // communicator are returned (MPI_ERRORS_RETURN), never fatal.
  MpiRuntime();
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();

  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  MpiRuntime(MpiRuntime&&) = delete;
  MpiRuntime& operator=(MpiRuntime&&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Rank and count of the ranks on this node (shared-memory domain).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // Ends every rank of the job with `code` (MPI_Abort), so no rank is left
  // waiting on a peer that died.
  [[noreturn]] void abort(int code) const;

  // True while some MpiRuntime holds MPI initialised in this process.
  static bool active();

 private:
  void init(int* argc, char*** argv);

  int world_rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
};

}  // namespace pipet
