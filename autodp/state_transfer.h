// AutoDP's state move (DESIGN.md §4.3). A layout says which rank trains which
// sub-layers: with K stages, rank r is stage r % K of replica r / K and holds
// the sub-layers of its stage's range (stage 0 also holds the frozen prefix).
// Moving from one layout to another, each rank receives, point to point, the
// parameters of the sub-layers it newly holds and the optimizer slots of
// those that stay trainable, from the rank of its own old replica that held
// them. Nothing else travels: a rank's old sub-layers are current already,
// and newly frozen sub-layers drop their optimizer state. Both directions:
// sub-layers an unfreeze re-activates start with fresh optimizer slots
// (their moments were dropped when they froze). The move changes where
// state lives, never its value.
#pragma once

#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace pipet {

class Communicator;
class TransformerModel;

struct OwnershipLayout {
  int stages = 1;
  std::vector<std::pair<size_t, size_t>> ranges;  // [begin, end) per stage
  size_t frozen_end = 0;                          // sub-layers below are frozen (on stage 0)
};

struct TransferStats {
  int64_t bytes_sent = 0;      // by this rank
  int64_t messages_sent = 0;
  double seconds = 0.0;
};

// Collective over `world` (every rank passes the same layouts). `slots` are
// the optimizer's slot names ("step" is an int64 scalar, the others have the
// parameter's shape). `optimizer_state` holds this rank's state
// ("<param>/<slot>") on entry and, on return, exactly the state of the
// trainable parameters of its new range; a slot the sender lacks travels as
// zeros (an SGD momentum buffer before the first step). Throws CommError on a
// transfer failure, ModelError when a received message has the wrong size.
TransferStats move_training_state(Communicator& world, TransformerModel& model,
                                  const OwnershipLayout& before, const OwnershipLayout& after,
                                  const std::vector<std::string>& slots,
                                  std::map<std::string, torch::Tensor>& optimizer_state);

}  // namespace pipet
