// AutoDP's state move (DESIGN.md §4.3): before a layout change, every
// sub-layer's parameters and optimizer slots travel from their current owner
// (the stage that trains them, replica 0) to every rank. Afterwards each rank
// holds the whole current model and optimizer state and takes what its new
// stage needs, so a transition changes where state lives, never its value.
//
// One world broadcast per old stage, of one packed byte buffer: a handful of
// collectives per transition whatever the number of tensors.
#pragma once

#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

class Communicator;
class TransformerModel;

struct ReplicationStats {
  int64_t bytes = 0;      // bytes broadcast (each counted once)
  double seconds = 0.0;
};

// Collective over `world`, whose rank s (s < stages) is the current owner of
// the sub-layers in `ranges[s]` (stage s of replica 0). `optimized` names the
// parameters that have optimizer state, `slots` the state slots of each
// ("step" is an int64 scalar, the others have the parameter's shape).
// `optimizer_state` holds this rank's own state on entry ("<param>/<slot>")
// and every optimized parameter's state on return; a slot the owner lacks is
// sent as zeros (an SGD momentum buffer before the first step). Model
// parameters are overwritten in place with the owners' values.
ReplicationStats replicate_training_state(Communicator& world, TransformerModel& model,
                                          const std::vector<std::pair<size_t, size_t>>& ranges,
                                          const std::set<std::string>& optimized,
                                          const std::vector<std::string>& slots,
                                          std::map<std::string, torch::Tensor>& optimizer_state);

}  // namespace pipet
