#include "runtime/engine/pipeline.h"

#include "runtime/comm/communicator.h"
#include "runtime/core/errors.h"
#include "runtime/core/torch_compat.h"
#include "runtime/data/batch.h"
#include "runtime/engine/task.h"
#include "runtime/model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

namespace pipet {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Point-to-point tags between neighbouring stages; messages with one tag
// between one pair arrive in order, which is the micro-batch order.
constexpr int kHeaderTag = 11;
constexpr int kHiddenTag = 12;
constexpr int kMaskTag = 13;
constexpr int kGradientTag = 14;

// Header of a forward message: the micro-batch index, then hidden and mask
// each as (ndim, kMaxDims sizes, dtype); ndim 0 for an absent mask.
constexpr int64_t kMaxDims = 4;
constexpr int64_t kDescriptor = 2 + kMaxDims;
constexpr int64_t kHiddenAt = 1;
constexpr int64_t kMaskAt = kHiddenAt + kDescriptor;
constexpr int64_t kHeaderLength = kMaskAt + kDescriptor;

void describe_tensor(int64_t* out, const torch::Tensor& t) {
  if (!t.defined()) {
    for (int64_t i = 0; i < kDescriptor; ++i) out[i] = 0;
    return;
  }
  if (t.dim() > kMaxDims)
    throw ModelError("a stage boundary tensor has " + std::to_string(t.dim()) +
                     " dimensions; at most " + std::to_string(kMaxDims) + " can be sent");
  out[0] = t.dim();
  for (int64_t i = 0; i < kMaxDims; ++i) out[1 + i] = i < t.dim() ? t.size(i) : 0;
  out[1 + kMaxDims] = static_cast<int64_t>(t.scalar_type());
}

torch::Tensor empty_from(const int64_t* in, const torch::Device& device, const std::string& what) {
  const int64_t ndim = in[0];
  const int64_t dtype = in[1 + kMaxDims];
  if (ndim < 0 || ndim > kMaxDims || dtype < 0 ||
      dtype >= static_cast<int64_t>(c10::ScalarType::NumOptions))
    throw CommError(what + ": malformed header (ndim " + std::to_string(ndim) + ", dtype " +
                    std::to_string(dtype) + ")");
  std::vector<int64_t> sizes(in + 1, in + 1 + ndim);
  for (int64_t size : sizes)
    if (size < 0) throw CommError(what + ": malformed header (negative size)");
  return torch::empty(sizes, torch::TensorOptions().dtype(static_cast<c10::ScalarType>(dtype)).device(device));
}

// The device of a stage's first parameter (every parameter of a model lives
// on one device).
torch::Device stage_device(const TransformerModel& model, size_t begin, size_t end) {
  for (size_t j = begin; j < end; ++j)
    for (const auto& [name, p] : model.sublayer(j).hf_parameters()) return p.device();
  return torch::Device(torch::kCPU);
}

}  // namespace

Activations batch_inputs(const Batch& batch) {
  Activations in;
  if (batch.pixel_values.defined()) {
    in.hidden = batch.pixel_values;
  } else {
    in.hidden = batch.input_ids;
    in.attention_mask = batch.attention_mask;
    in.token_type_ids = batch.token_type_ids;
  }
  return in;
}

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "gpipe") return PipelineSchedule::kGpipe;
  if (name == "1f1b") return PipelineSchedule::kOneFOneB;
  throw ConfigError("parallel.schedule: unknown schedule '" + name + "'; use gpipe or 1f1b");
}

// ---------------------------------------------------------------------------
// GradientBuckets

struct GradientBuckets::Bucket {
  std::vector<torch::Tensor> parameters;
  int sublayers = 0;   // sub-layers whose parameters are in this bucket
  int remaining = 0;   // of them not yet done this step
  torch::Tensor flat;  // the bucket's gradients while the all-reduce runs
  std::unique_ptr<Work> work;
  bool launched = false;
};

GradientBuckets::GradientBuckets(const std::vector<std::shared_ptr<SubLayer>>& sublayers,
                                 size_t begin, size_t end, Communicator& group,
                                 int64_t bucket_bytes)
    : group_(group), bucket_of_(end - begin, -1), begin_(begin) {
  // Backward order: the last sub-layer finishes first.
  int64_t open_bytes = 0;
  for (size_t j = end; j-- > begin;) {
    std::vector<torch::Tensor> trainable;
    for (const auto& [name, p] : sublayers.at(j)->hf_parameters())
      if (p.requires_grad()) trainable.push_back(p);
    if (trainable.empty()) continue;
    const bool dtype_changes = !buckets_.empty() && !buckets_.back()->parameters.empty() &&
                               buckets_.back()->parameters.front().scalar_type() !=
                                   trainable.front().scalar_type();
    if (buckets_.empty() || open_bytes >= bucket_bytes || dtype_changes) {
      buckets_.push_back(std::make_unique<Bucket>());
      open_bytes = 0;
    }
    Bucket& bucket = *buckets_.back();
    for (const torch::Tensor& p : trainable) {
      bucket.parameters.push_back(p);
      open_bytes += p.numel() * static_cast<int64_t>(p.element_size());
    }
    ++bucket.sublayers;
    bucket.remaining = bucket.sublayers;
    bucket_of_[j - begin] = static_cast<int>(buckets_.size()) - 1;
  }
}

GradientBuckets::~GradientBuckets() = default;

void GradientBuckets::launch(Bucket& bucket) {
  bucket.launched = true;
  if (group_.size() == 1) return;
  std::vector<torch::Tensor> grads;
  grads.reserve(bucket.parameters.size());
  for (const torch::Tensor& p : bucket.parameters) {
    const torch::Tensor& g = p.grad();
    grads.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({p.numel()}, p.options()));
  }
  bucket.flat = torch::cat(grads);
  bucket.work = group_.all_reduce_async(bucket.flat, AllReduceOptions{ReduceOp::kSum});
}

void GradientBuckets::sublayer_done(size_t index) {
  const int b = bucket_of_.at(index - begin_);
  if (b >= 0) {
    Bucket& bucket = *buckets_[b];
    if (--bucket.remaining == 0) launch(bucket);
  }
  // MPI moves non-blocking collectives forward only inside MPI calls: poll
  // the buckets in flight so they progress while backward continues.
  for (const auto& bucket : buckets_)
    if (bucket->work) bucket->work->completed();
}

void GradientBuckets::finish(std::chrono::milliseconds timeout) {
  torch::NoGradGuard no_grad;
  for (const auto& bucket : buckets_)
    if (!bucket->launched) launch(*bucket);
  for (const auto& bucket : buckets_) {
    if (bucket->work) {
      bucket->work->wait(timeout);
      int64_t offset = 0;
      for (torch::Tensor& p : bucket->parameters) {
        torch::Tensor summed = bucket->flat.narrow(0, offset, p.numel()).view_as(p);
        if (p.grad().defined()) {
          p.mutable_grad().copy_(summed);
        } else {
          p.mutable_grad() = summed.clone();
        }
        offset += p.numel();
      }
    }
    bucket->work.reset();
    bucket->flat = torch::Tensor();
    bucket->launched = false;
    bucket->remaining = bucket->sublayers;
  }
}

// ---------------------------------------------------------------------------
// StageExecutor

struct StageExecutor::Pending {
  std::vector<torch::Tensor> leaves;   // input of each sub-layer as a graph leaf (or undefined)
  std::vector<torch::Tensor> outputs;  // hidden output of each sub-layer
  torch::Tensor loss;                  // last stage: the weighted loss
};

StageExecutor::StageExecutor(TransformerModel& model, size_t begin, size_t end,
                             Communicator& pipeline, const Task& task,
                             std::chrono::milliseconds timeout, size_t frozen_end)
    : model_(model),
      begin_(begin),
      end_(end),
      first_active_(std::min(std::max(begin, frozen_end), end)),
      // Sub-layers [frozen_end, begin) live on earlier stages: they train,
      // so this stage's input needs its gradient sent back.
      previous_trains_(pipeline.rank() > 0 && begin > frozen_end),
      pipeline_(pipeline),
      task_(task),
      timeout_(timeout),
      stage_(pipeline.rank()),
      stages_(pipeline.size()),
      device_(stage_device(model, begin, std::min(end, model.num_sublayers()))) {
  if (begin >= end || end > model.num_sublayers())
    throw ModelError("stage " + std::to_string(stage_) + " was given sub-layers [" +
                     std::to_string(begin) + ", " + std::to_string(end) + ") of a model with " +
                     std::to_string(model.num_sublayers()));
  // A stage frozen through runs forward only; the last one computes the
  // loss, so it must train.
  if (!trains() && last())
    throw ModelError("the last stage (" + std::to_string(stage_) + ") holds no trainable sub-layer (frozen up to " +
                     std::to_string(frozen_end) + ", stage ends at " + std::to_string(end) + ")");
}

void StageExecutor::send_activations(const Activations& out, int64_t micro_batch) {
  int64_t header[kHeaderLength];
  header[0] = micro_batch;
  describe_tensor(header + kHiddenAt, out.hidden);
  describe_tensor(header + kMaskAt, out.attention_mask);
  torch::Tensor header_tensor = torch::from_blob(header, {kHeaderLength}, torch::kInt64).clone();
  const int next = stage_ + 1;
  sends_.push_back(pipeline_.send_async(header_tensor, next, kHeaderTag, {timeout_}));
  sends_.push_back(pipeline_.send_async(out.hidden.detach(), next, kHiddenTag, {timeout_}));
  if (out.attention_mask.defined())
    sends_.push_back(pipeline_.send_async(out.attention_mask, next, kMaskTag, {timeout_}));
}

Activations StageExecutor::receive_activations(int64_t micro_batch) {
  const std::string what = "stage " + std::to_string(stage_) + " receiving micro-batch " +
                           std::to_string(micro_batch) + " from stage " + std::to_string(stage_ - 1);
  torch::Tensor header = torch::empty({kHeaderLength}, torch::kInt64);
  const auto waiting = Clock::now();
  pipeline_.recv(header, stage_ - 1, kHeaderTag, {timeout_});
  wait_seconds_ += seconds_since(waiting);
  const int64_t* h = header.data_ptr<int64_t>();
  if (h[0] != micro_batch)
    throw CommError(what + ": got micro-batch " + std::to_string(h[0]) +
                    " instead; the stages disagree on the schedule");
  Activations in;
  in.hidden = empty_from(h + kHiddenAt, device_, what);
  pipeline_.recv(in.hidden, stage_ - 1, kHiddenTag, {timeout_});
  if (h[kMaskAt] > 0) {
    in.attention_mask = empty_from(h + kMaskAt, device_, what);
    pipeline_.recv(in.attention_mask, stage_ - 1, kMaskTag, {timeout_});
  }
  return in;
}

void StageExecutor::forward(MicroBatch& micro, int64_t index, bool keep_graph, Pending* pending,
                            torch::Tensor* logits) {
  Activations a = !first() ? receive_activations(index) : micro.produce_input ? micro.produce_input() : micro.input;
  AutocastGuard autocast(device_.type(), autocast_dtype_);
  const size_t count = end_ - begin_;
  // A cached frozen-prefix output skips the sub-layers it already went through.
  const size_t start = first() ? std::max(begin_, micro.input_depth) : begin_;
  if (start > first_active_)
    throw ModelError("stage " + std::to_string(stage_) + " was given an input for sub-layer " +
                     std::to_string(start) + ", past its first trainable sub-layer " +
                     std::to_string(first_active_));
  if (keep_graph) {
    pending->leaves.assign(count, torch::Tensor());
    pending->outputs.assign(count, torch::Tensor());
  }
  for (size_t j = start; j < end_; ++j) {
    if (j < first_active_) {
      // Frozen: forward only, nothing kept for backward.
      torch::NoGradGuard no_grad;
      a = model_.sublayer(j).forward(a);
      continue;
    }
    // A sub-layer's input needs a gradient when something trainable precedes
    // it: an earlier sub-layer of this stage, or one on an earlier stage.
    if (keep_graph && a.hidden.is_floating_point() && (j > first_active_ || previous_trains_)) {
      a.hidden = a.hidden.detach().requires_grad_(true);
      pending->leaves[j - begin_] = a.hidden;
    }
    a = model_.sublayer(j).forward(a);
    if (keep_graph) pending->outputs[j - begin_] = a.hidden;
  }
  if (!last()) {
    send_activations(a, index);
    return;
  }
  if (logits) *logits = a.hidden;
  if (keep_graph) {
    torch::Tensor loss = task_.loss(a.hidden, micro.labels);
    pending->loss = loss * micro.loss_weight;
  }
}

void StageExecutor::backward(Pending& pending, int64_t index, GradientBuckets* sync) {
  if (!trains()) {
    // Frozen through: nothing to differentiate and nobody waits for a gradient.
    pending = Pending();
    return;
  }
  torch::Tensor grad;
  if (!last()) {
    grad = torch::empty_like(pending.outputs.back());
    const auto waiting = Clock::now();
    pipeline_.recv(grad, stage_ + 1, kGradientTag, {timeout_});
    wait_seconds_ += seconds_since(waiting);
  }
  for (size_t j = end_; j-- > first_active_;) {
    const size_t k = j - begin_;
    if (last() && j + 1 == end_) {
      torch::autograd::backward({pending.loss});
    } else if (pending.outputs[k].requires_grad()) {
      torch::autograd::backward({pending.outputs[k]}, {grad});
    }
    if (pending.leaves[k].defined()) {
      grad = pending.leaves[k].grad();
      if (!grad.defined()) grad = torch::zeros_like(pending.leaves[k]);
    }
    if (sync) sync->sublayer_done(j);
  }
  if (previous_trains_) {
    if (!grad.defined())
      throw ModelError("stage " + std::to_string(stage_) + " has no input gradient for micro-batch " +
                       std::to_string(index));
    sends_.push_back(pipeline_.send_async(grad, stage_ - 1, kGradientTag, {timeout_}));
  }
  pending = Pending();
}

void StageExecutor::wait_sends() {
  for (auto& work : sends_) work->wait(timeout_);
  sends_.clear();
}

torch::Tensor StageExecutor::train(std::vector<MicroBatch>& micro_batches, PipelineSchedule schedule,
                                   GradientBuckets* sync) {
  const auto started = Clock::now();
  wait_seconds_ = 0.0;
  const int64_t count = static_cast<int64_t>(micro_batches.size());
  std::vector<Pending> pending(static_cast<size_t>(count));
  // Summed on the device in double (the same arithmetic as on the host); the
  // caller reads it: no host synchronisation per micro-batch.
  torch::Tensor loss_sum;
  auto run_forward = [&](int64_t m) {
    forward(micro_batches[m], m, /*keep_graph=*/true, &pending[m], nullptr);
    if (last()) {
      // A non-finite loss is not thrown here: the trainer sees it after the
      // step's all-reduce, on every rank at once.
      const int64_t rows = micro_batches[m].labels.size(0);
      const torch::Tensor term = pending[m].loss.detach().to(torch::kDouble)
                                     .div(micro_batches[m].loss_weight)
                                     .mul(static_cast<double>(rows));
      loss_sum = loss_sum.defined() ? loss_sum.add(term) : term;
    }
  };
  auto run_backward = [&](int64_t m) {
    backward(pending[m], m, m + 1 == count ? sync : nullptr);
  };
  try {
    if (schedule == PipelineSchedule::kGpipe) {
      for (int64_t m = 0; m < count; ++m) run_forward(m);
      for (int64_t m = 0; m < count; ++m) run_backward(m);
    } else {
      // 1F1B: stage s runs K-s-1 forwards ahead, then alternates one forward
      // and one backward, then drains; at most K micro-batches are in flight.
      const int64_t warmup = std::min<int64_t>(stages_ - stage_ - 1, count);
      for (int64_t m = 0; m < warmup; ++m) run_forward(m);
      for (int64_t m = warmup; m < count; ++m) {
        run_forward(m);
        run_backward(m - warmup);
      }
      for (int64_t m = count - warmup; m < count; ++m) run_backward(m);
    }
    wait_sends();
  } catch (...) {
    sends_.clear();
    throw;
  }
  total_seconds_ = seconds_since(started);
  return loss_sum.defined() ? loss_sum.reshape({1}) : loss_sum;
}

std::vector<torch::Tensor> StageExecutor::forward_only(std::vector<MicroBatch>& micro_batches) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> logits;
  try {
    for (size_t m = 0; m < micro_batches.size(); ++m) {
      torch::Tensor out;
      forward(micro_batches[m], static_cast<int64_t>(m), /*keep_graph=*/false, nullptr, &out);
      if (last()) logits.push_back(out);
    }
    wait_sends();
  } catch (...) {
    sends_.clear();
    throw;
  }
  return logits;
}

}  // namespace pipet
