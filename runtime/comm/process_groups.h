// ProcessGroups: the groups of one layout (DESIGN.md §1). `world` is static
// (all ranks: control, decisions, barriers); a layout of K stages over the
// world's W ranks adds R = W/K pipeline groups and K stage-data-parallel
// groups:
//   pipeline p  = world ranks [p*K, (p+1)*K)  (rank in it = stage)
//   stage-dp s  = world ranks {p*K + s}       (rank in it = replica p)
// Rebuilding for a new K destroys the old groups (RAII) and splits new ones.
#pragma once

#include "runtime/comm/communicator.h"

#include <functional>
#include <memory>

namespace pipet {

class ProcessGroups {
 public:
  // Collective over `world`, which must outlive this object. Throws
  // ConfigError when `stages` does not divide the world size.
  ProcessGroups(Communicator& world, int stages);
  // As above, then each new group goes through `make_group` (collective over
  // that group), which picks its backend: e.g. group_factory() in
  // group_factory.h gives NCCL where every member has its own GPU.
  using GroupFactory =
      std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator> host_group)>;
  ProcessGroups(Communicator& world, int stages, const GroupFactory& make_group);
  // One factory for the pipeline groups and another for the stage-DP groups
  // (an empty factory keeps that group as split).
  ProcessGroups(Communicator& world, int stages, const GroupFactory& make_pipeline_group,
                const GroupFactory& make_stage_dp_group);
  ~ProcessGroups();
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  Communicator& world() const { return world_; }
  Communicator& pipeline() const { return *pipeline_; }
  Communicator& stage_dp() const { return *stage_dp_; }

  int stages() const { return stages_; }
  int replicas() const { return replicas_; }
  int stage() const { return world_.rank() % stages_; }
  int replica() const { return world_.rank() / stages_; }
  // World rank of (replica, stage).
  int world_rank_of(int replica, int stage) const { return replica * stages_ + stage; }

 private:
  Communicator& world_;
  int stages_;
  int replicas_;
  std::unique_ptr<Communicator> pipeline_;
  std::unique_ptr<Communicator> stage_dp_;
};

}  // namespace pipet
