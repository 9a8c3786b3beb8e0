// One rank's part of a pipeline: the sub-layers [begin, end) of the model,
// the micro-batch schedule (GPipe or 1F1B), activations and activation
// gradients to and from the neighbouring stages, the loss on the last stage,
// and the data-parallel gradient all-reduce started while the last
// micro-batch's backward is still running.
//
// Backward runs sub-layer by sub-layer (each sub-layer's input is a leaf of
// its own graph segment), so the gradients of a sub-layer are final as soon as
// its segment is done: that is when its bucket can start its all-reduce.
#pragma once

#include "runtime/comm/communicator.h"
#include "runtime/core/torch_pch.h"
#include "runtime/model/counter_dropout.h"
#include "runtime/model/sublayer.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

class Communicator;
class Task;
class TransformerModel;
class Work;

struct Batch;

// A dataset batch as the embedding's input: pixel values (ViT), or token ids
// with their attention mask and token types (BERT).
Activations batch_inputs(const Batch& batch);

enum class PipelineSchedule { kGpipe, kOneFOneB };
PipelineSchedule parse_pipeline_schedule(const std::string& name);

// The inputs one stage needs for one micro-batch.
struct MicroBatch {
  Activations input;      // first stage: the embedding inputs, or the output of
                          // sub-layers [0, input_depth) when served from AutoCache
  // First stage, instead of `input`: called right before this micro-batch's
  // forward. AutoCache serves the frozen prefix this way, so computing one
  // micro-batch's misses overlaps the later stages' work on the ones before
  // it instead of delaying the whole schedule.
  std::function<Activations()> produce_input;
  size_t input_depth = 0; // first stage: the sub-layer `input` is for
  torch::Tensor labels;   // last stage
  double loss_weight = 1; // rows / global batch: the micro-batch's share of the mean loss
  DropoutKey dropout;     // every stage: the rows' draw (sample_ids undefined: torch's dropout)
};

// Sums gradients over a stage's data-parallel group in buckets of whole
// sub-layers, launched in backward order as sub-layers finish.
class GradientBuckets {
 public:
  // `sublayers` in model order; `group` may have size 1 (then nothing is sent).
  GradientBuckets(const std::vector<std::shared_ptr<SubLayer>>& sublayers, size_t begin,
                  size_t end, Communicator& group, int64_t bucket_bytes);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Sub-layer `index`'s gradients are final for this step.
  void sublayer_done(size_t index);
  // Launches what is left, waits for every bucket and writes the sums back
  // into the gradients. Ready for the next step afterwards.
  void finish(std::chrono::milliseconds timeout);
  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket;
  void launch(Bucket& bucket);
  Communicator& group_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<int> bucket_of_;  // by sub-layer index - begin; -1 = no trainable parameters
  size_t begin_;
};

class StageExecutor {
 public:
  // `pipeline` is this rank's pipeline group; its rank is the stage. The
  // model must outlive the executor. Sub-layers below `frozen_end` are frozen:
  // they run forward without autograd and backward stops above them. Any
  // stage but the last may hold them, or be frozen through (then it only
  // runs forwards, and the stage after it sends no gradient back).
  StageExecutor(TransformerModel& model, size_t begin, size_t end, Communicator& pipeline,
                const Task& task, std::chrono::milliseconds timeout, size_t frozen_end = 0);

  int stage() const { return stage_; }
  int stages() const { return stages_; }
  bool first() const { return stage_ == 0; }
  bool last() const { return stage_ == stages_ - 1; }
  // Some sub-layer of this stage trains (else it runs forwards only).
  bool trains() const { return first_active_ < end_; }
  size_t begin() const { return begin_; }
  size_t end() const { return end_; }

  // Forward passes (and the loss) under autocast to `dtype` (bf16) on the
  // stage's device; kFloat turns it off. Backward follows forward's dtypes.
  void use_autocast(c10::ScalarType dtype) { autocast_dtype_ = dtype; }

  // Forward and backward of every micro-batch in `schedule` order. Returns
  // the sum over micro-batches of (mean loss x rows) on the last stage, as a
  // one-element double tensor on the stage's device that the caller reads
  // (so the read can share the step's one copy to the host); undefined
  // elsewhere. Non-finite when the loss is. `sync` (optional) receives
  // sub-layer completions during the last micro-batch's backward.
  torch::Tensor train(std::vector<MicroBatch>& micro_batches, PipelineSchedule schedule,
               GradientBuckets* sync);

  // Forward only (no autograd); the last stage returns the logits of every
  // micro-batch, the other stages an empty vector.
  std::vector<torch::Tensor> forward_only(std::vector<MicroBatch>& micro_batches);

  // Seconds the last train() spent blocked receiving from a neighbour (the
  // pipeline bubble plus transfer time) and in total.
  double last_wait_seconds() const { return wait_seconds_; }
  double last_busy_seconds() const { return total_seconds_ - wait_seconds_; }

 private:
  struct Pending;  // what backward of one micro-batch needs
  // Forward of micro-batch `index` from `input` (the first stage's inputs, or
  // the previous stage's activation); returns the output.
  Activations forward(MicroBatch& micro, int64_t index, Activations input, bool keep_graph, Pending* pending,
                      torch::Tensor* logits);
  // Backward of micro-batch `index` from `grad` (the next stage's gradient;
  // undefined on the last stage); returns this stage's input gradient when
  // the previous stage takes one, else an undefined tensor.
  torch::Tensor backward(Pending& pending, int64_t index, torch::Tensor grad, GradientBuckets* sync);

  // The point-to-point traffic, as exchanges (Communicator::exchange_async):
  // an exchange that receives is waited for (the wait is this stage's
  // bubble); sends alone are waited for at the end of the schedule.
  void exchange(std::vector<P2POp> ops);
  // "stage 1 -> 2, activation of micro-batch 3", the name errors carry.
  std::string link(int from, int to, const char* what, int64_t micro_batch) const;
  std::vector<P2POp> activation_sends(const Activations& out, int64_t micro_batch) const;
  std::vector<P2POp> gradient_send(const torch::Tensor& grad, int64_t micro_batch) const;
  // The activation of `micro_batch` from the previous stage: its header in
  // one exchange with `with`, then the tensors it describes.
  Activations receive_activation(int64_t micro_batch, std::vector<P2POp> with = {});
  // `with`, and the gradient of `micro_batch` from the next stage when this
  // stage takes one (undefined otherwise), in one exchange.
  bool receives_gradient() const;
  torch::Tensor receive_gradient(const Pending& pending, int64_t micro_batch, std::vector<P2POp> with = {});
  void wait_sends();

  TransformerModel& model_;
  size_t begin_;
  size_t end_;
  size_t first_active_;  // first sub-layer of this stage that trains (end_ when none)
  bool previous_trains_; // an earlier stage holds a trainable sub-layer
  Communicator& pipeline_;
  const Task& task_;
  std::chrono::milliseconds timeout_;
  int stage_;
  int stages_;
  torch::Device device_;  // where the stage's parameters live; activations are received there
  c10::ScalarType autocast_dtype_ = c10::ScalarType::Float;
  std::vector<std::unique_ptr<Work>> sends_;
  double wait_seconds_ = 0.0;
  double total_seconds_ = 0.0;
};

}  // namespace pipet
