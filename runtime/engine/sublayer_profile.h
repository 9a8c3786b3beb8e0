// autopipe.cost=measured: the forward and backward seconds of every
// sub-layer on one micro-batch, the measured basis of AutoPipe's costs.
#pragma once

#include "autopipe/cost_model.h"

#include <cstdint>
#include <vector>

namespace pipet {

class Communicator;
class Dataset;
class TransformerModel;
struct ComputeDevice;

// Times `rows` training samples through every sub-layer in turn (each timed
// twice, the faster kept: the first run pays for allocation), in eval mode
// (no dropout: nothing drawn from the generator training uses) and in the
// training precision; averaged over `world` so every rank plans from the
// same numbers. Collective. Rank 0 logs the figures.
struct SubLayerTimes {
  std::vector<double> forward_seconds;
  std::vector<double> backward_seconds;
};
SubLayerTimes profile_sublayers(TransformerModel& model, const Dataset& data, const ComputeDevice& device,
                                int64_t rows, Communicator& world);

// The model's sub-layers as AutoPipe's cost records: names and parameter
// counts, with `times` when given (empty: the parameter proxy).
std::vector<SubLayerCost> sublayer_costs(const TransformerModel& model, const SubLayerTimes& times);

}  // namespace pipet
