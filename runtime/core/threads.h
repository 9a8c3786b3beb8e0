// Per-rank CPU thread budget: torch intra-op threads and OpenBLAS threads, so
// several ranks on one machine do not oversubscribe the cores.
#pragma once

#include <cstdint>
#include <string>

namespace pipet {

// The MPI launcher's ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE,
// MPI_LOCALNRANKS or SLURM_NTASKS_PER_NODE), 1 outside a launcher.
int ranks_on_this_node();

// This rank's index among the ranks on its node (OMPI_COMM_WORLD_LOCAL_RANK,
// MPI_LOCALRANKID or SLURM_LOCALID), 0 outside a launcher: picks its GPU.
int local_rank_on_this_node();

// True when this process is one rank of an mpirun (or PMI/PMIx) job.
bool launched_by_mpi_launcher();

// `requested` > 0 is used as is; 0 means hardware cores divided by the ranks
// on this node (OMPI_COMM_WORLD_LOCAL_SIZE), at least 1. Returns the count set.
int configure_threads(int64_t requested);

// OpenMP's idle workers busy-wait by default and take the cores that
// OpenBLAS's own threads need for the next GEMM: a 2-thread vit-tiny step
// ran 4x slower than with passive waiting, even on an idle machine. libgomp
// reads OMP_WAIT_POLICY when it loads, before main, so when the variable is
// unset this sets it to PASSIVE and re-executes the program (same pid, same
// arguments). Call first thing in main. Returns when the policy was already
// set (by the user, who keeps their choice, or by the re-exec) or when exec
// failed (the run continues with libgomp's default).
void prefer_passive_openmp_wait(char** argv);

// The OpenMP wait policy in force and who chose it, for the start-up log:
// "PASSIVE (set by pipetransformer)", "ACTIVE (from the environment)".
std::string openmp_wait_policy_description();

}  // namespace pipet
