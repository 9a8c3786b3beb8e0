// Backend choice per group (DESIGN.md §1): NCCL when NCCL is compiled in and
// every member of the group has its own CUDA device; otherwise the host group
// itself (MPI or local), which in PIPET_WITH_CUDA builds is wrapped in a
// HostStagedCommunicator so CUDA tensors still work (several ranks may then
// share one GPU, as multi-rank GPU tests do).
//
// Typical use, with groups rebuilt at every transition:
//   auto world = make_communicator(&runtime);              // MPI, CPU control plane
//   GroupBackendOptions backend;
//   backend.device = runtime.local_rank() % cuda_device_count();
//   ProcessGroups groups(*world, stages, group_factory(backend));
#pragma once

#include "runtime/comm/communicator.h"

#include <functional>
#include <memory>
#include <string>

namespace pipet {

enum class CommBackend {
  kAuto,  // NCCL where every member has its own GPU, else MPI (host-staged)
  kMpi,   // always the host group (host-staged for CUDA tensors)
  kNccl,  // NCCL or a CommError saying why it cannot be used
};

const char* comm_backend_name(CommBackend backend);

struct GroupBackendOptions {
  int device = -1;  // this rank's CUDA device; -1: none (CPU only)
  CommBackend backend = CommBackend::kAuto;
};

// CUDA devices this process sees: 0 in builds without PIPET_WITH_CUDA or when
// there is no driver or device.
int cuda_device_count();

// Collective over `host_group` (not null; a CPU communicator such as an
// MpiCommunicator or LocalCommunicator; every member calls it with its own
// options and the same `backend`). Members exchange (host name, PCI bus id of
// their device) and all reach the same choice. Throws CommError when kNccl is
// asked for and cannot be given (naming the reason), or when a device is out
// of range.
std::unique_ptr<Communicator> make_group_communicator(std::unique_ptr<Communicator> host_group,
                                                      const GroupBackendOptions& options);

// The factory ProcessGroups takes: make_group_communicator with `options`.
std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator>)> group_factory(
    GroupBackendOptions options);

}  // namespace pipet
