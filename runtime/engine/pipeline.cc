#include "runtime/engine/pipeline.h"

#include "runtime/comm/communicator.h"
#include "runtime/core/errors.h"
#include "runtime/core/stopwatch.h"
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

std::string StageExecutor::link(int from, int to, const char* what, int64_t micro_batch) const {
  return "stage " + std::to_string(from) + " -> " + std::to_string(to) + ", " + what + " of micro-batch " +
         std::to_string(micro_batch);
}

std::vector<P2POp> StageExecutor::activation_sends(const Activations& out, int64_t micro_batch) const {
  int64_t header[kHeaderLength];
  header[0] = micro_batch;
  describe_tensor(header + kHiddenAt, out.hidden);
  describe_tensor(header + kMaskAt, out.attention_mask);
  const int next = stage_ + 1;
  const std::string what = link(stage_, next, "activation", micro_batch);
  std::vector<P2POp> ops;
  ops.push_back(send_op(torch::from_blob(header, {kHeaderLength}, torch::kInt64).clone(), next, kHeaderTag,
                        what + " (header)"));
  ops.push_back(send_op(out.hidden.detach(), next, kHiddenTag, what));
  if (out.attention_mask.defined()) ops.push_back(send_op(out.attention_mask, next, kMaskTag, what + " (mask)"));
  return ops;
}

void StageExecutor::exchange(std::vector<P2POp> ops) {
  if (ops.empty()) return;
  bool receives = false;
  for (const P2POp& op : ops) receives = receives || op.kind == P2POp::Kind::kRecv;
  std::unique_ptr<Work> work = pipeline_.exchange_async(std::move(ops), {timeout_});
  if (!receives) {
    sends_.push_back(std::move(work));  // waited at the end of the schedule
    return;
  }
  const auto waiting = SteadyClock::now();
  work->wait(timeout_);
  wait_seconds_ += seconds_since(waiting);
}

Activations StageExecutor::receive_activation(int64_t micro_batch, std::vector<P2POp> with) {
  const std::string what = link(stage_ - 1, stage_, "activation", micro_batch);
  // The header first (its shapes size the receives), together with `with`;
  // then the tensors it describes.
  torch::Tensor header = torch::empty({kHeaderLength}, torch::kInt64);
  with.push_back(recv_op(header, stage_ - 1, kHeaderTag, what + " (header)"));
  exchange(std::move(with));
  const int64_t* h = header.data_ptr<int64_t>();
  if (h[0] != micro_batch)
    throw CommError(what + ": got micro-batch " + std::to_string(h[0]) + " instead; the stages disagree on the schedule");
  Activations in;
  in.hidden = empty_from(h + kHiddenAt, device_, what);
  std::vector<P2POp> body;
  body.push_back(recv_op(in.hidden, stage_ - 1, kHiddenTag, what));
  if (h[kMaskAt] > 0) {
    in.attention_mask = empty_from(h + kMaskAt, device_, what);
    body.push_back(recv_op(in.attention_mask, stage_ - 1, kMaskTag, what + " (mask)"));
  }
  exchange(std::move(body));
  return in;
}

bool StageExecutor::receives_gradient() const { return !last() && trains(); }

torch::Tensor StageExecutor::receive_gradient(const Pending& pending, int64_t micro_batch, std::vector<P2POp> with) {
  torch::Tensor grad;
  if (receives_gradient()) {
    grad = torch::empty_like(pending.outputs.back());
    with.push_back(recv_op(grad, stage_ + 1, kGradientTag, link(stage_ + 1, stage_, "gradient", micro_batch)));
  }
  exchange(std::move(with));
  return grad;
}

std::vector<P2POp> StageExecutor::gradient_send(const torch::Tensor& grad, int64_t micro_batch) const {
  if (!previous_trains_) return {};
  return {send_op(grad, stage_ - 1, kGradientTag, link(stage_, stage_ - 1, "gradient", micro_batch))};
}

Activations StageExecutor::forward(MicroBatch& micro, int64_t index, Activations a, bool keep_graph, Pending* pending,
                                   torch::Tensor* logits) {
  AutocastGuard autocast(device_.type(), autocast_dtype_);
  // Dropout masks keyed by the rows' samples, the same on every layout.
  std::optional<DropoutScope> draw;
  if (micro.dropout.sample_ids.defined()) draw.emplace(micro.dropout);
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
  if (last()) {
    if (logits) *logits = a.hidden;
    if (keep_graph) {
      torch::Tensor loss = task_.loss(a.hidden, micro.labels);
      pending->loss = loss * micro.loss_weight;
    }
  }
  return a;
}

torch::Tensor StageExecutor::backward(Pending& pending, int64_t index, torch::Tensor grad, GradientBuckets* sync) {
  if (!trains()) {
    // Frozen through: nothing to differentiate and nobody waits for a gradient.
    pending = Pending();
    return torch::Tensor();
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
  pending = Pending();
  if (previous_trains_ && !grad.defined())
    throw ModelError("stage " + std::to_string(stage_) + " has no input gradient for micro-batch " +
                     std::to_string(index));
  return previous_trains_ ? grad : torch::Tensor();
}

void StageExecutor::wait_sends() {
  for (auto& work : sends_) work->wait(timeout_);
  sends_.clear();
}

// Every exchange between two stages is issued by both in one order, and the
// traffic that crosses between neighbours in 1F1B's steady state goes in one
// exchange (Megatron-LM's send_forward_recv_backward on stage s with
// send_backward_recv_forward on s+1), so the schedules cannot deadlock under
// NCCL's rules: a send may wait for its receive, receives match in issue
// order. Checked on CPU with MpiCommunicator's NCCL rules (PIPET_NCCL_RULES).
torch::Tensor StageExecutor::train(std::vector<MicroBatch>& micro_batches, PipelineSchedule schedule,
                                   GradientBuckets* sync) {
  const auto started = SteadyClock::now();
  wait_seconds_ = 0.0;
  const int64_t count = static_cast<int64_t>(micro_batches.size());
  std::vector<Pending> pending(static_cast<size_t>(count));
  // Summed on the device in double (the same arithmetic as on the host); the
  // caller reads it: no host synchronisation per micro-batch.
  torch::Tensor loss_sum;
  // The first stage's input comes from its micro-batch (AutoCache produces
  // it right before its forward); the others receive it, with `with`.
  auto input_of = [&](int64_t m, std::vector<P2POp> with = {}) {
    if (!first()) return receive_activation(m, std::move(with));
    exchange(std::move(with));
    MicroBatch& micro = micro_batches[m];
    return micro.produce_input ? micro.produce_input() : micro.input;
  };
  // The forward of micro-batch m; returns the sends of its output.
  auto run_forward = [&](int64_t m, Activations input) {
    const Activations out = forward(micro_batches[m], m, std::move(input), /*keep_graph=*/true, &pending[m], nullptr);
    if (last()) {
      // A non-finite loss is not thrown here: the trainer sees it after the
      // step's all-reduce, on every rank at once.
      const int64_t rows = micro_batches[m].labels.size(0);
      const torch::Tensor term = pending[m].loss.detach().to(torch::kDouble)
                                     .div(micro_batches[m].loss_weight)
                                     .mul(static_cast<double>(rows));
      loss_sum = loss_sum.defined() ? loss_sum.add(term) : term;
      return std::vector<P2POp>{};
    }
    return activation_sends(out, m);
  };
  // The backward of micro-batch m from `grad`; returns the send of its input gradient.
  auto run_backward = [&](int64_t m, torch::Tensor grad) {
    return gradient_send(backward(pending[m], m, std::move(grad), m + 1 == count ? sync : nullptr), m);
  };
  try {
    if (schedule == PipelineSchedule::kGpipe) {
      for (int64_t m = 0; m < count; ++m) exchange(run_forward(m, input_of(m)));
      for (int64_t m = 0; m < count; ++m) exchange(run_backward(m, receive_gradient(pending[m], m)));
    } else {
      // 1F1B: stage s runs K-s-1 forwards ahead, then alternates one forward
      // and one backward, then drains; at most K micro-batches are in flight.
      const int64_t warmup = std::min<int64_t>(stages_ - stage_ - 1, count);
      for (int64_t m = 0; m < warmup; ++m) exchange(run_forward(m, input_of(m)));
      Activations input;
      if (warmup < count) input = input_of(warmup);
      for (int64_t m = warmup; m < count; ++m) {
        const int64_t b = m - warmup;
        // Send activation m, receive gradient b: one exchange.
        torch::Tensor grad = receive_gradient(pending[b], b, run_forward(m, std::move(input)));
        std::vector<P2POp> sends = run_backward(b, std::move(grad));
        if (m + 1 < count) {
          input = input_of(m + 1, std::move(sends));  // send gradient b, receive activation m + 1
        } else {
          exchange(std::move(sends));
        }
      }
      for (int64_t b = count - warmup; b < count; ++b) exchange(run_backward(b, receive_gradient(pending[b], b)));
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
      const int64_t index = static_cast<int64_t>(m);
      MicroBatch& micro = micro_batches[m];
      Activations input = !first() ? receive_activation(index)
                          : micro.produce_input ? micro.produce_input() : micro.input;
      torch::Tensor out;
      const Activations result = forward(micro, index, std::move(input), /*keep_graph=*/false, nullptr, &out);
      if (last()) {
        logits.push_back(out);
      } else {
        exchange(activation_sends(result, index));
      }
    }
    wait_sends();
  } catch (...) {
    sends_.clear();
    throw;
  }
  return logits;
}

}  // namespace pipet
