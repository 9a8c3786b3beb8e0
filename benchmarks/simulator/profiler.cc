#include "benchmarks/simulator/profiler.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "runtime/core/errors.h"
#include "runtime/core/threads.h"
#include "runtime/core/torch_pch.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/frozen_cache.h"
#include "runtime/engine/optimizer.h"
#include "runtime/engine/pipeline.h"
#include "runtime/engine/task.h"
#include "runtime/model/model.h"

namespace pipet::sim {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <typename F>
double timed(F&& f) {
  const auto start = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

ModelProfile measure_profile(const TrainConfig& config, const ProfilerOptions& options) {
  if (options.rows.empty()) throw ConfigError("profile: --rows is empty");
  for (size_t i = 0; i < options.rows.size(); ++i)
    if (options.rows[i] < 1 || (i > 0 && options.rows[i] <= options.rows[i - 1]))
      throw ConfigError("profile: --rows must be ascending positive counts, got " + std::to_string(options.rows[i]) +
                        " at index " + std::to_string(i));
  if (options.repeats < 1) throw ConfigError("profile: --repeats must be >= 1");
  validate_config(config);
  const int threads = configure_threads(config.runtime.threads);

  const ModelSpec shape_spec = resolve_model_spec(config.model, 1);
  DataShape shape;
  shape.image_size = shape_spec.image_size;
  shape.num_channels = shape_spec.num_channels;
  shape.vocab_size = shape_spec.vocab_size;
  shape.max_seq_len = shape_spec.max_position_embeddings;
  const DatasetSplits splits = make_datasets(config.data, shape, config.train.seed);
  const ModelSpec spec = resolve_model_spec(config.model, splits.train->num_classes());
  const std::unique_ptr<Task> task = make_task(config, splits.eval);
  torch::manual_seed(config.train.seed);
  TransformerModel model(spec);
  const size_t count = model.num_sublayers();

  ModelProfile profile;
  profile.model = spec.preset;
  profile.num_blocks = static_cast<int>(spec.num_layers);
  profile.threads = threads;
  profile.source = "measured by pipet-simulate profile: " + std::to_string(threads) + " thread(s), median of " +
                   std::to_string(options.repeats);
  for (size_t j = 0; j < count; ++j) {
    SubLayerProfile s;
    s.name = model.sublayer(j).display_name();
    s.block = static_cast<int>(model.sublayer(j).block());
    s.parameters = model.sublayer(j).parameter_count();
    profile.sublayers.push_back(std::move(s));
  }

  const int64_t samples = splits.train->size();
  auto indices_for = [&](int64_t rows) {
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < rows; ++i) indices.push_back(i % samples);
    return indices;
  };
  for (int64_t rows : options.rows) {
    const std::vector<int64_t> indices = indices_for(rows);
    const Batch batch = splits.train->get_batch(indices, 0);
    const Activations inputs = batch_inputs(batch);
    const torch::Tensor labels = splits.train->labels(indices);
    std::vector<std::vector<double>> fwd(count), bwd(count), frozen(count);
    for (int run = 0; run < options.warmup + options.repeats; ++run) {
      const bool keep = run >= options.warmup;
      // Training pass, sub-layer by sub-layer as the executor runs it.
      model.train();
      Activations a = inputs;
      for (size_t j = 0; j < count; ++j) {
        if (a.hidden.is_floating_point()) a.hidden = a.hidden.detach().requires_grad_(j > 0);
        Activations out;
        torch::Tensor loss;
        const bool head = j + 1 == count;
        const double f = timed([&] {
          out = model.sublayer(j).forward(a);
          if (head) loss = task->loss(out.hidden, labels);
        });
        const torch::Tensor grad = head ? torch::Tensor() : torch::ones_like(out.hidden).mul_(1e-3);
        const double b = timed([&] {
          if (head) torch::autograd::backward({loss});
          else torch::autograd::backward({out.hidden}, {grad});
        });
        if (keep) {
          fwd[j].push_back(f);
          bwd[j].push_back(b);
        }
        profile.sublayers[j].output_bytes_per_row =
            out.hidden.numel() / rows * static_cast<int64_t>(out.hidden.element_size());
        out.hidden = out.hidden.detach();
        a = out;
      }
      // Frozen pass: no-grad, eval mode.
      {
        torch::NoGradGuard no_grad;
        model.eval();
        Activations z = inputs;
        for (size_t j = 0; j < count; ++j) {
          const double f = timed([&] { z = model.sublayer(j).forward(z); });
          if (keep) frozen[j].push_back(f);
        }
        model.train();
      }
    }
    for (size_t j = 0; j < count; ++j) {
      TimePoint t;
      t.rows = rows;
      t.forward = median(fwd[j]);
      t.backward = median(bwd[j]);
      t.frozen_forward = median(frozen[j]);
      profile.sublayers[j].times.push_back(t);
    }
  }

  // Per-parameter passes over the whole model (gradients set by the last backward).
  NamedTensors parameters = model.hf_parameters();
  int64_t total = 0;
  for (auto& [name, p] : parameters) {
    total += p.numel();
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
  }
  std::unique_ptr<Optimizer> optimizer = make_optimizer(config.train, parameters);
  // Gradient buckets as GradientBuckets forms them: sub-layers in backward
  // order, a new bucket once the open one holds parallel.bucket_mb.
  const int64_t bucket_bytes = static_cast<int64_t>(config.parallel.bucket_mb * 1024.0 * 1024.0);
  std::vector<std::vector<torch::Tensor>> grad_buckets;  // parameters, bucket by bucket
  int64_t open_bytes = 0;
  for (size_t j = count; j-- > 0;) {
    const NamedTensors own = model.sublayer(j).hf_parameters();
    if (own.empty()) continue;
    if (grad_buckets.empty() || open_bytes >= bucket_bytes) {
      grad_buckets.emplace_back();
      open_bytes = 0;
    }
    for (const auto& [name, p] : own) {
      grad_buckets.back().push_back(p);
      open_bytes += p.numel() * static_cast<int64_t>(p.element_size());
    }
  }
  std::vector<double> opt, norm, pack;
  for (int run = 0; run < options.warmup + options.repeats; ++run) {
    const bool keep = run >= options.warmup;
    for (auto& [name, p] : parameters) {
      if (p.grad().defined()) p.mutable_grad().fill_(1e-4);
      else p.mutable_grad() = torch::full_like(p, 1e-4);
    }
    // In the order of Trainer::train_step: bucket copies, norm, optimizer.
    // GradientBuckets' copies: launch() flattens each bucket of
    // parallel.bucket_mb into one tensor, finish() copies the sums back.
    // Bucket by bucket as there, not one model-sized tensor, whose size
    // would decide whether malloc maps fresh pages for it.
    const double c = timed([&] {
      torch::NoGradGuard no_grad;
      for (const std::vector<torch::Tensor>& bucket : grad_buckets) {
        std::vector<torch::Tensor> flat;
        for (const torch::Tensor& p : bucket) flat.push_back(p.grad().reshape({-1}));
        const torch::Tensor joined = torch::cat(flat);
        int64_t offset = 0;
        for (const torch::Tensor& p : bucket) {
          torch::Tensor grad = p.grad();
          grad.copy_(joined.narrow(0, offset, p.numel()).view_as(p));
          offset += p.numel();
        }
      }
    });
    // The gradient-norm pass as Trainer::train_step runs it on the CPU: one
    // double-precision sum of squares per tensor, stacked, read once.
    double sum = 0.0;
    const double n = timed([&] {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> squares;
      for (auto& [name, p] : parameters) squares.push_back(p.grad().to(torch::kDouble).pow(2).sum());
      sum = torch::stack(squares).sum().item<double>();
    });
    const double o = timed([&] {
      optimizer->step(1e-6);
      optimizer->zero_grad();
    });
    if (!(sum >= 0)) throw Error(ExitCode::kInternal, "profile: the gradient norm pass produced " + std::to_string(sum));
    if (keep) {
      opt.push_back(o);
      norm.push_back(n);
      pack.push_back(c);
    }
  }
  profile.optimizer_seconds_per_parameter = median(opt) / static_cast<double>(total);
  profile.norm_seconds_per_parameter = median(norm) / static_cast<double>(total);
  profile.bucket_copy_seconds_per_parameter = median(pack) / static_cast<double>(total);

  // The first stage's input batch, at the largest row count.
  const int64_t rows = options.rows.back();
  std::vector<double> input;
  for (int run = 0; run < options.warmup + options.repeats; ++run) {
    const double t = timed([&] { (void)batch_inputs(splits.train->get_batch(indices_for(rows), run)); });
    if (run >= options.warmup) input.push_back(t);
  }
  profile.input_seconds_per_row = median(input) / static_cast<double>(rows);
  int64_t entry = 1;
  for (int64_t d : frozen_entry_shape(spec, config.data.seq_len)) entry *= d;
  profile.cache_entry_bytes = entry * 4;  // f32 cache
  validate_profile(profile, "measured profile");
  return profile;
}

}  // namespace pipet::sim
