#include "runtime/comm/group_factory.h"

#include "pipet/build_config.h"
#include "runtime/core/errors.h"

#include <spdlog/spdlog.h>

#if PIPET_WITH_CUDA
#include "runtime/comm/cuda_support.h"
#include "runtime/comm/host_staged_communicator.h"

#include <unistd.h>

#include <cstring>
#include <set>
#endif
#if PIPET_WITH_NCCL
#include "runtime/comm/nccl_communicator.h"
#endif

namespace pipet {

const char* comm_backend_name(CommBackend backend) {
  switch (backend) {
    case CommBackend::kAuto: return "auto";
    case CommBackend::kMpi: return "mpi";
    case CommBackend::kNccl: return "nccl";
  }
  return "unknown";
}

int cuda_device_count() {
#if PIPET_WITH_CUDA
  return cuda_support::device_count();
#else
  return 0;
#endif
}

namespace {

#if PIPET_WITH_CUDA
constexpr int64_t kHostBytes = 64;
constexpr int64_t kBusIdBytes = 32;

// This rank's device as (host name, PCI bus id): distinct across ranks exactly
// when the devices are distinct, whatever CUDA_VISIBLE_DEVICES renumbered.
// An empty bus id means "no device".
torch::Tensor device_identity(int device, const std::string& what) {
  torch::Tensor identity = torch::zeros({kHostBytes + kBusIdBytes}, torch::kByte);
  char* bytes = reinterpret_cast<char*>(identity.data_ptr<uint8_t>());
  if (gethostname(bytes, kHostBytes - 1) != 0) std::strcpy(bytes, "unknown-host");
  if (device >= 0) {
    char bus_id[kBusIdBytes] = {};
    cuda_support::check(cudaDeviceGetPCIBusId(bus_id, static_cast<int>(kBusIdBytes) - 1, device),
                        what, "cudaDeviceGetPCIBusId");
    std::memcpy(bytes + kHostBytes, bus_id, kBusIdBytes - 1);
  }
  return identity;
}
#endif

}  // namespace

std::unique_ptr<Communicator> make_group_communicator(std::unique_ptr<Communicator> host_group,
                                                      const GroupBackendOptions& options) {
  if (!host_group) throw CommError("make_group_communicator: no host group was given");
  const std::string what = "choosing the backend of group '" + host_group->name() + "' (rank " +
                           std::to_string(host_group->rank()) + " of " +
                           std::to_string(host_group->size()) + ")";
#if !PIPET_WITH_CUDA
  if (options.backend == CommBackend::kNccl)
    throw CommError(what + ": NCCL was asked for but this build has no CUDA (PIPET_WITH_CUDA=OFF)");
  if (options.device >= 0)
    throw CommError(what + ": CUDA device " + std::to_string(options.device) +
                    " was given but this build has no CUDA (PIPET_WITH_CUDA=OFF)");
  return host_group;
#else
  const int devices = cuda_support::device_count();
  const bool device_valid = options.device >= 0 && options.device < devices;
  // Every member learns every member's device, so all reach the same choice.
  // A bad device is reported after the exchange, so no peer is left waiting.
  torch::Tensor identities =
      host_group->all_gather(device_identity(device_valid ? options.device : -1, what));
  if (options.device >= 0 && !device_valid)
    throw CommError(what + ": device cuda:" + std::to_string(options.device) +
                    " does not exist (this process sees " + std::to_string(devices) +
                    " CUDA device(s))");
  std::string reason;  // why NCCL is not used; empty when it is
  std::set<std::string> seen;
  for (int64_t member = 0; member < identities.size(0) && reason.empty(); ++member) {
    const char* bytes = reinterpret_cast<const char*>(identities[member].data_ptr<uint8_t>());
    const std::string host(bytes, strnlen(bytes, kHostBytes));
    const std::string bus(bytes + kHostBytes, strnlen(bytes + kHostBytes, kBusIdBytes));
    if (bus.empty())
      reason = "rank " + std::to_string(member) + " has no CUDA device";
    else if (!seen.insert(host + "/" + bus).second)
      reason = "rank " + std::to_string(member) + " shares GPU " + bus + " on " + host +
               " with another member";
  }
#if !PIPET_WITH_NCCL
  if (reason.empty()) reason = "this build has no NCCL (PIPET_WITH_NCCL=OFF)";
#endif
  if (reason.empty() && options.backend == CommBackend::kMpi) reason = "the MPI backend was asked for";
  if (!reason.empty()) {
    if (options.backend == CommBackend::kNccl)
      throw CommError(what + ": NCCL was asked for but cannot be used: " + reason);
    spdlog::debug("[comm] group '{}': MPI with host staging ({})", host_group->name(), reason);
    return std::make_unique<HostStagedCommunicator>(std::move(host_group));
  }
#if PIPET_WITH_NCCL
  return NcclCommunicator::create(std::move(host_group), options.device);
#else
  return nullptr;  // unreachable: `reason` is set above when NCCL is not built
#endif
#endif
}

std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator>)> group_factory(
    GroupBackendOptions options) {
  return [options](std::unique_ptr<Communicator> host_group) {
    return make_group_communicator(std::move(host_group), options);
  };
}

}  // namespace pipet
