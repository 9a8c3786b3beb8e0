#include "runtime/engine/sublayer_profile.h"

#include <algorithm>

#include "runtime/comm/communicator.h"
#include "runtime/core/logging.h"
#include "runtime/core/stopwatch.h"
#include "runtime/core/torch_compat.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/compute_device.h"
#include "runtime/engine/pipeline.h"
#include "runtime/model/model.h"

namespace pipet {
SubLayerTimes profile_sublayers(TransformerModel& model, const Dataset& data, const ComputeDevice& device,
                                int64_t rows, Communicator& world) {
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < rows; ++i) indices.push_back(i % data.size());
  const Activations inputs = device.to_device(batch_inputs(data.get_batch(indices, 0)));
  const size_t count = model.num_sublayers();
  std::vector<double> forward(count, 0.0), backward(count, 0.0);
  model.eval();
  for (int repeat = 0; repeat < 2; ++repeat) {
    Activations a = inputs;
    for (size_t j = 0; j < count; ++j) {
      if (a.hidden.is_floating_point()) a.hidden = a.hidden.detach().requires_grad_(true);
      // On a GPU the kernels run asynchronously: the timer reads the device's
      // time only after a synchronisation.
      device.synchronize();
      const auto started = SteadyClock::now();
      Activations out;
      {
        // The precision training runs in (bf16 autocast changes the costs).
        AutocastGuard autocast(device.device.type(), device.autocast_dtype);
        out = model.sublayer(j).forward(a);
      }
      device.synchronize();
      const double forward_seconds = seconds_since(started);
      const auto backward_started = SteadyClock::now();
      torch::autograd::backward({out.hidden.sum()});
      device.synchronize();
      const double backward_seconds = seconds_since(backward_started);
      forward[j] = repeat == 0 ? forward_seconds : std::min(forward[j], forward_seconds);
      backward[j] = repeat == 0 ? backward_seconds : std::min(backward[j], backward_seconds);
      out.hidden = out.hidden.detach();
      a = out;
    }
  }
  model.train();
  for (auto& [name, p] : model.hf_parameters()) p.mutable_grad() = torch::Tensor();
  std::vector<double> both(forward);
  both.insert(both.end(), backward.begin(), backward.end());
  torch::Tensor totals = torch::tensor(both, torch::kDouble);
  world.all_reduce(totals);
  totals.div_(static_cast<double>(world.size()));
  const double* t = totals.data_ptr<double>();
  SubLayerTimes times;
  times.forward_seconds.assign(t, t + count);
  times.backward_seconds.assign(t + count, t + 2 * count);
  if (world.rank() == 0) {
    std::string text;
    for (size_t j = 0; j < count; ++j)
      text += fmt::format("{}{} {:.2f}+{:.2f} ms", j ? ", " : "", model.sublayer(j).display_name(),
                          times.forward_seconds[j] * 1e3, times.backward_seconds[j] * 1e3);
    spdlog::info("[autopipe] measured forward+backward per sub-layer ({} rows): {}", rows, text);
  }
  return times;
}

std::vector<SubLayerCost> sublayer_costs(const TransformerModel& model, const SubLayerTimes& times) {
  std::vector<SubLayerCost> records;
  for (const auto& sublayer : model.sublayers()) {
    SubLayerCost cost;
    cost.name = sublayer->display_name();
    cost.parameters = sublayer->parameter_count();
    if (!times.forward_seconds.empty()) {
      cost.forward_seconds = times.forward_seconds[records.size()];
      cost.backward_seconds = times.backward_seconds[records.size()];
    }
    records.push_back(cost);
  }
  return records;
}

}  // namespace pipet
