#include "runtime/comm/process_groups.h"

#include "runtime/core/errors.h"

namespace pipet {

ProcessGroups::ProcessGroups(Communicator& world, int stages) : world_(world), stages_(stages) {
  const int size = world.size();
  if (stages < 1 || size % stages != 0) {
    throw ConfigError("parallel.pipeline_stages " + std::to_string(stages) +
                      " does not divide the " + std::to_string(size) +
                      " ranks of the job; use a divisor of the rank count");
  }
  replicas_ = size / stages;
  const int rank = world.rank();
  const int replica = rank / stages;
  const int stage = rank % stages;
  // Both splits are collective over the world, in the same order everywhere.
  pipeline_ = world.subgroup(replica, stage, "pipeline" + std::to_string(replica));
  stage_dp_ = world.subgroup(stage, replica, "stage" + std::to_string(stage) + "-dp");
  if (!pipeline_ || !stage_dp_)
    throw CommError("rank " + std::to_string(rank) + " was left out of its pipeline or stage group");
}

ProcessGroups::ProcessGroups(Communicator& world, int stages, const GroupFactory& make_group)
    : ProcessGroups(world, stages, make_group, make_group) {}

ProcessGroups::ProcessGroups(Communicator& world, int stages, const GroupFactory& make_pipeline_group,
                             const GroupFactory& make_stage_dp_group)
    : ProcessGroups(world, stages) {
  // Same order on every rank: each call is collective over its own group.
  if (make_pipeline_group) pipeline_ = make_pipeline_group(std::move(pipeline_));
  if (make_stage_dp_group) stage_dp_ = make_stage_dp_group(std::move(stage_dp_));
  if (!pipeline_ || !stage_dp_)
    throw CommError("rank " + std::to_string(world.rank()) +
                    ": the group factory returned no communicator for its pipeline or stage group");
}

ProcessGroups::~ProcessGroups() = default;

}  // namespace pipet
