#include "runtime/engine/evaluation.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/comm/collectives.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/process_groups.h"
#include "runtime/core/config.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/batch_feeder.h"
#include "runtime/engine/checkpoint.h"
#include "runtime/engine/stage_layout.h"
#include "runtime/model/model.h"

namespace pipet {

Evaluator::Evaluator(std::shared_ptr<const Dataset> eval_data, const Task& task, int64_t batch_size,
                     Communicator& world, const BatchFeeder& feeder)
    : eval_data_(std::move(eval_data)), task_(task), batch_size_(batch_size), world_(world), feeder_(feeder) {}

bool Evaluator::has_data() const { return eval_data_ && eval_data_->size() > 0; }

EvalResult Evaluator::run(TransformerModel& model, const StageLayout& layout) {
  if (!has_data()) return EvalResult{};
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t total = eval_data_->size();
  const int64_t replicas = layout.active_replicas();
  const bool idle = layout.idle();
  const int64_t shard_begin = idle ? 0 : total * layout.replica() / replicas;
  const int64_t shard_end = idle ? 0 : total * (layout.replica() + 1) / replicas;
  const int64_t batch_size = std::max<int64_t>(1, batch_size_ / replicas);
  StageExecutor& executor = layout.executor();
  const StageRole role{executor.first(), executor.last()};
  std::unique_ptr<EvalAccumulator> accumulator = task_.make_evaluator();
  for (int64_t begin = shard_begin; begin < shard_end; begin += batch_size) {
    const int64_t end = std::min(begin + batch_size, shard_end);
    std::vector<int64_t> indices;
    for (int64_t i = begin; i < end; ++i) indices.push_back(i);
    std::vector<MicroBatch> micro = feeder_.micro_batches(*eval_data_, indices, /*epoch=*/0, layout.micro_batches(),
                                                          static_cast<int64_t>(indices.size()), role);
    const std::vector<torch::Tensor> logits = executor.forward_only(micro);
    int64_t row = 0;
    for (size_t m = 0; m < logits.size(); ++m) {
      const int64_t rows = micro[m].labels.size(0);
      const std::vector<int64_t> ids(indices.begin() + row, indices.begin() + row + rows);
      // Metrics are computed on the host, in fp32 (bf16 logits under autocast).
      accumulator->add(logits[m].to(torch::kCPU, torch::kFloat), micro[m].labels.to(torch::kCPU),
                       torch::tensor(ids, torch::kInt64));
      row += rows;
    }
  }
  model.train();

  const int last_stage = layout.stages() - 1;
  std::string encoded;
  if (executor.last() && !idle) {
    if (replicas > 1) {
      const std::vector<torch::Tensor> parts = all_gather_variable(layout.replica_group(), accumulator->pack());
      std::unique_ptr<EvalAccumulator> merged = task_.make_evaluator();
      for (const torch::Tensor& part : parts) merged->merge(part);
      accumulator = std::move(merged);
    }
    const EvalResult local = accumulator->result();
    nlohmann::json j = {{"samples", local.samples}, {"loss", local.loss}, {"metrics", local.metrics}};
    encoded = j.dump();
  }
  if (world_.size() > 1) encoded = broadcast_string(world_, encoded, layout.groups().world_rank_of(0, last_stage));
  const nlohmann::json j = nlohmann::json::parse(encoded);
  EvalResult result;
  result.samples = j.at("samples").get<int64_t>();
  result.loss = j.at("loss").get<double>();
  result.metrics = j.at("metrics").get<std::map<std::string, double>>();
  return result;
}

bool update_early_stop(const EvalConfig& config, const Task& task, const EvalResult& result, TrainerState& state) {
  if (config.early_stop_patience <= 0) return false;
  const std::string metric = config.early_stop_metric.substr(5);  // drops "eval_"
  const bool higher_is_better = task.higher_is_better(metric);
  const double value = result.metric(metric);
  const double delta = config.early_stop_min_delta;
  const bool improved = !state.has_best || (higher_is_better ? value > state.best_metric + delta
                                                              : value < state.best_metric - delta);
  if (improved) {
    state.has_best = true;
    state.best_metric = value;
    state.evals_without_improvement = 0;
    return false;
  }
  ++state.evals_without_improvement;
  return state.evals_without_improvement >= config.early_stop_patience;
}

void gather_model_to_first_stage(TransformerModel& model, const StageLayout& layout) {
  if (layout.stages() == 1 || layout.replica() != 0) return;
  torch::NoGradGuard no_grad;
  Communicator& pipeline = layout.groups().pipeline();
  constexpr int kWeightTag = 21;
  if (layout.stage() == 0) {
    for (int s = 1; s < layout.stages(); ++s)
      for (size_t j = layout.ranges()[s].first; j < layout.ranges()[s].second; ++j)
        for (auto& [name, p] : model.sublayer(j).hf_parameters()) {
          torch::Tensor buffer = torch::empty_like(p);
          pipeline.recv(buffer, s, kWeightTag);
          p.copy_(buffer);
        }
  } else {
    for (auto& [name, p] : layout.stage_parameters()) pipeline.send(p.detach(), 0, kWeightTag);
  }
}

}  // namespace pipet
