// bench_dropout: what counter-based dropout (runtime/model/counter_dropout.h,
// masks keyed by (seed, epoch, site, sample)) costs against torch's
// per-rank generator (torch::dropout, a bernoulli_ mask), on bert-tiny:
//   mask rows   dropout of one tensor, forward only: the attention
//               probabilities [B*heads, S, S] and a hidden state [B, S, H];
//   step rows   one training forward + backward of the whole model.
// The two sides alternate inside every iteration (same machine noise);
// each row reports the median, min and max of its own samples and the
// counter/torch ratio of the medians.
#include "benchmarks/harness.h"
#include "runtime/core/config.h"
#include "runtime/core/tensor_names.h"
#include "runtime/model/counter_dropout.h"
#include "runtime/model/model.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <numeric>

namespace pipet::bench {
namespace {

struct DropoutBenchOptions {
  HarnessOptions harness;
  int64_t batch = 32;
  int64_t seq = 128;
  double p = 0.1;
  int threads = 2;
};

struct Pair {
  std::string what;
  std::vector<double> torch_ms, counter_ms;
};

// Runs each side `warmup` times, then alternates them `iterations` times.
Pair alternate(const std::string& what, const HarnessOptions& h, const std::function<void()>& torch_side,
               const std::function<void()>& counter_side) {
  Pair out{what, {}, {}};
  for (int i = 0; i < h.warmup; ++i) torch_side(), counter_side();
  for (int i = 0; i < h.iterations; ++i) {
    const bool torch_first = i % 2 == 0;
    for (int side = 0; side < 2; ++side) {
      const bool torch_now = (side == 0) == torch_first;
      const double start = now_ms();
      (torch_now ? torch_side : counter_side)();
      (torch_now ? out.torch_ms : out.counter_ms).push_back(now_ms() - start);
    }
  }
  return out;
}

int run(const DropoutBenchOptions& options) {
  validate_harness_options(options.harness);
  torch::set_num_threads(options.threads);
  torch::manual_seed(0);
  ModelConfig config;
  config.preset = "bert-tiny";
  config.vocab_size = 30522;
  ModelSpec spec = resolve_model_spec(config, 2);
  spec.hidden_dropout = options.p;
  spec.attention_dropout = options.p;
  spec.max_position_embeddings = std::max<int64_t>(spec.max_position_embeddings, options.seq);
  TransformerModel model(spec);
  model.train();

  const int64_t b = options.batch, s = options.seq;
  std::vector<int64_t> ids(static_cast<size_t>(b));
  std::iota(ids.begin(), ids.end(), int64_t{1000});
  const DropoutKey key{42, 3, torch::tensor(ids, torch::kInt64)};
  const auto scoped = [&](const std::function<void()>& body) {
    DropoutScope scope(key);
    body();
  };

  std::vector<Pair> pairs;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor probs = torch::rand({b * spec.num_heads, s, s});
    const torch::Tensor hidden = torch::randn({b, s, spec.hidden_size});
    for (const auto& [what, x] : {std::pair<std::string, torch::Tensor>{"mask: attention probs", probs},
                                  std::pair<std::string, torch::Tensor>{"mask: hidden state", hidden}}) {
      const torch::Tensor input = x;
      pairs.push_back(alternate(
          what + " " + shape_string(input.sizes()), options.harness,
          [&] { torch::dropout(input, options.p, true); },
          [&] { scoped([&] { dropout_at(input, options.p, true, 7); }); }));
    }
  }
  Activations inputs;
  inputs.hidden = torch::randint(1, spec.vocab_size, {b, s}, torch::kInt64);
  inputs.attention_mask = torch::ones({b, s}, torch::kInt64);
  inputs.token_type_ids = torch::zeros({b, s}, torch::kInt64);
  const torch::Tensor labels = torch::randint(0, 2, {b}, torch::kInt64);
  const auto step = [&] {
    const torch::Tensor logits = model.forward_range(inputs, 0, model.num_sublayers()).hidden;
    torch::nll_loss(torch::log_softmax(logits, -1), labels).backward();
    for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  };
  pairs.push_back(alternate("step: bert-tiny forward+backward", options.harness, step, [&] { scoped(step); }));

  std::cout << "bench_dropout: bert-tiny, batch " << b << ", seq " << s << ", p " << options.p << ", "
            << options.threads << " threads, " << options.harness.iterations << " alternating iterations\n";
  ResultTable table({"what", "torch median ms", "torch min-max", "counter median ms", "counter min-max", "ratio"});
  nlohmann::json rows = nlohmann::json::array();
  for (const Pair& pair : pairs) {
    const TimingStats t = summarize(pair.torch_ms), c = summarize(pair.counter_ms);
    table.add_row({pair.what, format_fixed(t.median_ms, 3), format_fixed(t.min_ms, 3) + "-" + format_fixed(t.max_ms, 3),
                   format_fixed(c.median_ms, 3), format_fixed(c.min_ms, 3) + "-" + format_fixed(c.max_ms, 3),
                   format_fixed(c.median_ms / t.median_ms, 3)});
    rows.push_back({{"what", pair.what}, {"torch", t.to_json()}, {"counter", c.to_json()},
                    {"ratio", c.median_ms / t.median_ms}});
  }
  table.print(std::cout);
  if (!options.harness.json_path.empty()) {
    std::ofstream out(options.harness.json_path);
    out << nlohmann::json{{"benchmark", "dropout"}, {"batch", b}, {"seq", s}, {"p", options.p},
                          {"threads", options.threads}, {"rows", rows}}
               .dump(2)
        << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace pipet::bench

int main(int argc, char** argv) {
  pipet::bench::DropoutBenchOptions options;
  CLI::App app{"Counter-based dropout vs torch's bernoulli_ dropout on bert-tiny (see benchmarks/README.md)",
               "bench_dropout"};
  pipet::bench::add_harness_flags(app, options.harness);
  app.add_option("--batch", options.batch, "Batch size")->capture_default_str();
  app.add_option("--seq", options.seq, "Sequence length")->capture_default_str();
  app.add_option("--p", options.p, "Dropout probability")->capture_default_str();
  app.add_option("--threads", options.threads, "Intra-op threads")->capture_default_str();
  return pipet::bench::run_benchmark(app, argc, argv, [&] { return pipet::bench::run(options); });
}
