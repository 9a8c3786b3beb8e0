#include "runtime/core/config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>
#include <variant>

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/strings.h"

namespace pipet {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------
// Schema machinery
// ---------------------------------------------------------------------------

// Typed access to one TrainConfig member. The value type T (int64_t, double,
// ...) decides how the key is parsed, checked, printed and documented.
template <class T>
struct Access {
  T& (*mut)(TrainConfig&);
  const T& (*get)(const TrainConfig&);
};

using AnyAccess = std::variant<Access<int64_t>, Access<double>, Access<bool>, Access<std::string>,
                               Access<std::optional<int64_t>>, Access<std::optional<double>>,
                               Access<std::vector<double>>, Access<uint64_t>>;

struct Bound {
  double value;
  bool inclusive;
};

// One configuration key. Defaults are not repeated here: they are the member
// initialisers of TrainConfig (config.h), read through `access`, so the
// struct and the documentation can never disagree.
struct FieldSpec {
  std::string key;  // "section.member"
  AnyAccess access;
  std::string doc;
  std::optional<Bound> min;  // numbers; for lists, every element
  std::optional<Bound> max;
  std::vector<std::string> choices;  // strings: the allowed values (an enum)
  bool non_empty = false;            // strings: "" is rejected

  FieldSpec& at_least(double v) {
    min = Bound{v, true};
    return *this;
  }
  FieldSpec& greater_than(double v) {
    min = Bound{v, false};
    return *this;
  }
  FieldSpec& at_most(double v) {
    max = Bound{v, true};
    return *this;
  }
  FieldSpec& below(double v) {
    max = Bound{v, false};
    return *this;
  }
  FieldSpec& one_of(std::vector<std::string> allowed) {
    choices = std::move(allowed);
    return *this;
  }
  FieldSpec& required() {
    non_empty = true;
    return *this;
  }

  std::string section() const { return key.substr(0, key.find('.')); }
};

template <class T>
FieldSpec field(const char* key, T& (*mut)(TrainConfig&), const T& (*get)(const TrainConfig&),
                const char* doc) {
  return FieldSpec{key, Access<T>{mut, get}, doc, std::nullopt, std::nullopt, {}, false};
}

// The key name is spelled from the member path, so the two cannot drift.
// clang-format off
#define PIPET_CONFIG_FIELD(section, member)                                    \
  #section "." #member,                                                        \
  +[](TrainConfig& c) -> auto& { return c.section.member; },                   \
  +[](const TrainConfig& c) -> const auto& { return c.section.member; }
// clang-format on

// ---------------------------------------------------------------------------
// The schema: every key of the engine, declared once.
// ---------------------------------------------------------------------------

std::vector<FieldSpec> build_schema() {
  return {
      // model
      field(PIPET_CONFIG_FIELD(model, preset),
            "Architecture preset; the overrides below change single dimensions of it.")
          .one_of({"vit-tiny", "vit-small", "vit-b16", "vit-l16", "bert-tiny", "bert-mini",
                   "bert-base", "bert-large"}),
      field(PIPET_CONFIG_FIELD(model, hidden_size),
            "Hidden (embedding) width; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, num_layers),
            "Transformer encoder layers; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, num_heads),
            "Attention heads per layer (must divide model.hidden_size); null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, intermediate_size),
            "Feed-forward (MLP) width; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, image_size),
            "ViT only: input image side in pixels; null = from the preset.")
          .at_least(1),
      field(
          PIPET_CONFIG_FIELD(model, patch_size),
          "ViT only: patch side in pixels (must divide model.image_size); null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, num_channels),
            "ViT only: input image channels; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, vocab_size),
            "BERT only: token vocabulary size; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, max_position_embeddings),
            "BERT only: longest sequence the position table holds; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, type_vocab_size),
            "BERT only: token type (segment) vocabulary size; null = from the preset.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(model, hidden_dropout),
            "Dropout probability on hidden states; null = from the preset.")
          .at_least(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(model, attention_dropout),
            "Dropout probability on attention weights; null = from the preset.")
          .at_least(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(model, layer_norm_eps),
            "Epsilon of every LayerNorm; null = from the preset.")
          .greater_than(0),
      field(PIPET_CONFIG_FIELD(model, initializer_range),
            "Standard deviation of the random weight initialisation; null = from the preset.")
          .greater_than(0),
      field(PIPET_CONFIG_FIELD(model, num_labels),
            "Classes of the task head; 0 = the dataset's class count.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(model, head),
            "Task head: classification (pooled [CLS] or image classifier) or question-answering "
            "(BertForQuestionAnswering span head; required by and only for data.dataset squad).")
          .one_of({"classification", "question-answering"}),
      field(PIPET_CONFIG_FIELD(model, init_from),
            "Pretrained weights (safetensors with Hugging Face names); empty = random init."),

      // data
      field(PIPET_CONFIG_FIELD(data, dataset), "Training and evaluation data.")
          .one_of({"synthetic-image", "synthetic-text", "cifar10", "cifar100", "image-folder", "glue",
                   "squad"}),
      field(PIPET_CONFIG_FIELD(data, dir),
            "Dataset directory in the dataset's standard layout (file datasets)."),
      field(PIPET_CONFIG_FIELD(data, train_path),
            "Training file or folder; empty = the standard name under data.dir."),
      field(PIPET_CONFIG_FIELD(data, eval_path),
            "Evaluation file or folder; empty = the standard name under data.dir."),
      field(PIPET_CONFIG_FIELD(data, eval_split),
            "Seeded fraction of the training set held out for evaluation when there is no "
            "evaluation set; 0 = none.")
          .at_least(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(data, cifar100_labels),
            "cifar100 only: fine (100 classes) or coarse (20 superclasses) labels.")
          .one_of({"fine", "coarse"}),
      field(PIPET_CONFIG_FIELD(data, train_samples), "Synthetic datasets: training samples.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(data, eval_samples),
            "Synthetic datasets: evaluation samples (0 = no evaluation set).")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(data, num_classes), "Synthetic datasets: number of classes.")
          .at_least(2),
      field(PIPET_CONFIG_FIELD(data, seq_len), "Text datasets: padded sequence length in tokens.")
          .at_least(2),
      field(PIPET_CONFIG_FIELD(data, augment),
            "Image datasets: random crop and flip augmentation during training."),
      field(PIPET_CONFIG_FIELD(data, crop_padding), "Random crop padding in pixels.").at_least(0),
      field(PIPET_CONFIG_FIELD(data, hflip), "Random horizontal flip (when data.augment)."),
      field(PIPET_CONFIG_FIELD(data, mean),
            "Per-channel normalisation mean; empty = the dataset's default."),
      field(PIPET_CONFIG_FIELD(data, std),
            "Per-channel normalisation standard deviation; empty = the dataset's default.")
          .greater_than(0),
      field(PIPET_CONFIG_FIELD(data, crop_scale_min),
            "image-folder: smallest area fraction of a random-resized crop.")
          .greater_than(0)
          .at_most(1),
      field(PIPET_CONFIG_FIELD(data, decode_threads),
            "Image decoding threads per rank; 0 = from the core count.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(data, prefetch_batches),
            "Batches prepared ahead of the training step.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(data, on_bad_sample),
            "A corrupt sample: fail the job, or skip it and report the count.")
          .one_of({"fail", "skip"}),
      field(PIPET_CONFIG_FIELD(data, vocab_file), "glue, squad: WordPiece vocab.txt."),
      field(PIPET_CONFIG_FIELD(data, lowercase),
            "glue, squad: lower-case and strip accents (uncased models)."),
      field(PIPET_CONFIG_FIELD(data, text_column), "glue: column of the first text."),
      field(PIPET_CONFIG_FIELD(data, text_pair_column),
            "glue: column of the second text; empty = single-text task."),
      field(PIPET_CONFIG_FIELD(data, label_column), "glue: column of the integer label."),
      field(PIPET_CONFIG_FIELD(data, doc_stride),
            "squad: tokens between the starts of neighbouring context windows.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(data, max_query_len), "squad: question tokens kept.").at_least(1),
      field(PIPET_CONFIG_FIELD(data, max_answer_len),
            "squad: longest predicted answer in tokens.")
          .at_least(1),

      // train
      field(PIPET_CONFIG_FIELD(train, epochs), "Passes over the training set.").at_least(1),
      field(PIPET_CONFIG_FIELD(train, max_steps),
            "Stop after this many optimizer steps; 0 = no limit (train.epochs decides).")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(train, batch_size),
            "Global batch size (summed over data-parallel replicas).")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(train, optimizer), "Optimizer.").one_of({"adamw", "sgd"}),
      field(PIPET_CONFIG_FIELD(train, lr), "Peak learning rate.").greater_than(0),
      field(PIPET_CONFIG_FIELD(train, weight_decay), "Decoupled (adamw) or L2 (sgd) weight decay.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(train, momentum), "sgd only: momentum factor.").at_least(0).below(1),
      field(PIPET_CONFIG_FIELD(train, nesterov), "sgd only: Nesterov momentum."),
      field(PIPET_CONFIG_FIELD(train, adam_beta1), "adamw only: first-moment decay.")
          .at_least(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(train, adam_beta2), "adamw only: second-moment decay.")
          .at_least(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(train, adam_eps), "adamw only: denominator epsilon.")
          .greater_than(0),
      field(PIPET_CONFIG_FIELD(train, schedule), "Learning-rate decay after warmup.")
          .one_of({"cosine", "linear", "constant"}),
      field(PIPET_CONFIG_FIELD(train, warmup_steps), "Linear warmup steps; 0 = none.").at_least(0),
      field(PIPET_CONFIG_FIELD(train, warmup_ratio),
            "Warmup as a fraction of total steps; used when train.warmup_steps is 0.")
          .at_least(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(train, min_lr_ratio),
            "Floor of the decay, as a fraction of train.lr.")
          .at_least(0)
          .at_most(1),
      field(PIPET_CONFIG_FIELD(train, grad_clip_norm),
            "Clip the global gradient L2 norm to this value; 0 = off.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(train, seed),
            "Seed of every random stream (init, sampling, augmentation, dropout)."),
      field(PIPET_CONFIG_FIELD(train, log_every_steps), "Log training metrics every N steps.")
          .at_least(1),

      // eval
      field(PIPET_CONFIG_FIELD(eval, every_steps), "Evaluate every N steps; 0 = off.").at_least(0),
      field(PIPET_CONFIG_FIELD(eval, every_epochs), "Evaluate every N epochs; 0 = off.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(eval, batch_size), "Evaluation batch size; 0 = train.batch_size.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(eval, early_stop_patience),
            "Stop after N evaluations without improvement; 0 = off.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(eval, early_stop_metric), "Metric that early stopping watches.")
          .one_of({"eval_accuracy", "eval_loss", "eval_exact_match", "eval_f1"}),
      field(PIPET_CONFIG_FIELD(eval, early_stop_min_delta),
            "Smallest change of the metric that counts as an improvement.")
          .at_least(0),

      // checkpoint
      field(PIPET_CONFIG_FIELD(checkpoint, dir), "Checkpoint directory; empty = no checkpoints."),
      field(PIPET_CONFIG_FIELD(checkpoint, every_steps), "Checkpoint every N steps; 0 = off.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(checkpoint, every_epochs), "Checkpoint every N epochs; 0 = off.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(checkpoint, keep), "Complete checkpoints kept on disk.").at_least(1),
      field(PIPET_CONFIG_FIELD(checkpoint, resume),
            "auto (latest in checkpoint.dir, if any), never, or the path of a checkpoint of any layout: a step "
            "directory, one rank's part (`rank-R/step-N`) or a checkpoint.dir.")
          .required(),

      // output
      field(PIPET_CONFIG_FIELD(output, dir),
            "Directory of the exported model, metrics and summary.")
          .required(),
      field(PIPET_CONFIG_FIELD(output, metrics_file),
            "Metrics stream (JSON lines), relative to output.dir unless absolute.")
          .required(),
      field(PIPET_CONFIG_FIELD(output, export_model),
            "Export model.safetensors and config.json (Hugging Face names) at the end."),

      // parallel
      field(PIPET_CONFIG_FIELD(parallel, pipeline_stages),
            "Pipeline stages K; the ranks form ranks/K data-parallel pipelines.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(parallel, micro_batches),
            "Micro-batches per pipeline per step; the per-pipeline batch must divide evenly.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(parallel, schedule),
            "Pipeline schedule: 1f1b (at most K micro-batches' activations in flight; the default) "
            "or gpipe (all forwards, then all backwards: the paper's schedule, M in flight).")
          .one_of({"gpipe", "1f1b"}),
      field(PIPET_CONFIG_FIELD(parallel, bucket_mb), "Gradient all-reduce bucket size in MiB.")
          .greater_than(0),
      field(PIPET_CONFIG_FIELD(parallel, comm_timeout_s),
            "Seconds a collective or point-to-point transfer may take before the job fails.")
          .greater_than(0),

      // freeze
      field(PIPET_CONFIG_FIELD(freeze, policy),
            "Freezing converged blocks: none, schedule (the alpha bound alone), paper (the "
            "paper's rule: bound and smallest gradient norm), adaptive (on evidence: the bound, and "
            "only blocks whose gradient norm has settled within freeze.tolerance) or manual "
            "(freeze.manual).")
          .one_of({"none", "schedule", "paper", "adaptive", "manual"}),
      field(PIPET_CONFIG_FIELD(freeze, alpha),
            "Fraction of the still-active blocks the bound lets freeze per decision "
            "(1/3 conservative; 2/5, 1/2 aggressive).")
          .greater_than(0)
          .at_most(1),
      field(PIPET_CONFIG_FIELD(freeze, every_steps),
            "Freeze decision interval in steps; 0 = at epoch boundaries.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(freeze, warmup_decisions),
            "Decisions that freeze nothing before the bound starts growing.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(freeze, max_fraction),
            "Never freeze more than this fraction of the blocks.")
          .at_least(0)
          .at_most(1),
      field(PIPET_CONFIG_FIELD(freeze, manual),
            "manual policy: frozen blocks after decision 1, 2, ... (whole numbers; a smaller one than "
            "the last unfreezes blocks).")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(freeze, smoothing_window),
            "paper and adaptive policies: decision intervals pooled into each block's gradient "
            "norm (RMS over all their steps); 1 = the interval since the last decision alone.")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(freeze, tolerance),
            "adaptive policy: a block has settled when its gradient norm changed by less than this "
            "fraction since the previous decision; only settled blocks freeze.")
          .greater_than(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(freeze, probe_samples),
            "Seeded training samples held out as a probe (never trained on): its loss is measured at "
            "every decision, and a freeze change after which it improves by less than before (by "
            "more than freeze.probe_tolerance) is revoked; 0 = no check.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(freeze, probe_tolerance),
            "Allowed shortfall of the probe loss's improvement after a change, as a fraction of the "
            "loss.")
          .greater_than(0)
          .below(1),
      field(PIPET_CONFIG_FIELD(freeze, cooldown),
            "Decisions after a revoked change at which nothing new freezes.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(freeze, patience),
            "adaptive policy: decisions in a row at which a block must have settled before it may "
            "freeze.")
          .at_least(1),

      // autopipe
      field(PIPET_CONFIG_FIELD(autopipe, enabled),
            "Adapt the pipeline as blocks freeze (compression to fewer stages, re-balanced "
            "partition); false keeps K and the starting partition (the \"freeze only\" "
            "configuration): frozen sub-layers stay on their stages and run forward only, except "
            "that with autocache.mode on or auto the frozen prefix moves to stage 0 (where the "
            "cache serves it)."),
      field(PIPET_CONFIG_FIELD(autopipe, partition),
            "Partition of the sub-layers over stages: optimal (minimises the largest stage) or "
            "greedy (the paper's balance).")
          .one_of({"optimal", "greedy"}),
      field(PIPET_CONFIG_FIELD(autopipe, cost),
            "Balance cost of a sub-layer: parameters (the paper's proxy) or measured (forward and "
            "backward time profiled at start-up on one micro-batch, averaged over the ranks).")
          .one_of({"parameters", "measured"}),
      field(PIPET_CONFIG_FIELD(autopipe, frozen_cost),
            "lambda_frozen: a frozen sub-layer's cost relative to an active one (parameter-count "
            "model) in the compression criterion, and in the partition with "
            "autopipe.frozen_balance=lambda.")
          .at_least(0)
          .at_most(1),
      field(PIPET_CONFIG_FIELD(autopipe, frozen_balance),
            "How the partition counts a frozen sub-layer: lambda (autopipe.frozen_cost, as the "
            "compression criterion always does; the paper), forward (its forward pass on the share "
            "of samples the cache will not serve: the time it adds to its stage), or auto (forward "
            "with the 1f1b schedule, where a stage's step is its forward plus backward time; lambda "
            "with gpipe, where a forward-heavy first stage does not balance backward-heavy later "
            "ones).")
          .one_of({"auto", "lambda", "forward"}),
      field(PIPET_CONFIG_FIELD(autopipe, compression),
            "Shorter pipelines tried after a freeze: halve (K/2, the paper) or divisors (every K "
            "dividing the rank count).")
          .one_of({"halve", "divisors"}),
      field(PIPET_CONFIG_FIELD(autopipe, tune_micro_batches),
            "For each new pipeline length, train a few steps with each candidate micro-batch count "
            "(K, 2K, 4K, 8K dividing the batch) and keep the fastest."),
      field(PIPET_CONFIG_FIELD(autopipe, micro_batch_file),
            "Micro-batch measurements kept for the next run (relative to output.dir unless "
            "absolute); empty = not kept."),

      // autocache
      field(PIPET_CONFIG_FIELD(autocache, mode),
            "Serve the frozen prefix's output from a node-wide cache: off, on, or auto (enabled "
            "when reading measures faster than recomputing).")
          .one_of({"off", "on", "auto"}),
      field(PIPET_CONFIG_FIELD(autocache, shm_mb), "Shared-memory tier per node in MiB.")
          .greater_than(0),
      field(PIPET_CONFIG_FIELD(autocache, disk_dir), "Disk tier directory; empty = no disk tier."),
      field(PIPET_CONFIG_FIELD(autocache, disk_mb), "Disk tier size in MiB; 0 = no disk tier.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(autocache, dtype),
            "Stored precision: f32 (bit-exact), bf16 or f16 (half the memory, changes the numerics).")
          .one_of({"f32", "bf16", "f16"}),
      field(PIPET_CONFIG_FIELD(autocache, views),
            "Augmented views cached per sample; 1 = the frozen prefix always sees one fixed view of "
            "a sample (cheapest, least augmentation).")
          .at_least(1),
      field(PIPET_CONFIG_FIELD(autocache, margin), "auto: hysteresis margin on the measured times.")
          .at_least(0)
          .below(1),

      // autodp
      field(PIPET_CONFIG_FIELD(autodp, enabled),
            "Fill the ranks a compressed pipeline frees with new replicas; false keeps the "
            "starting replica count and leaves those ranks idle (they only join world "
            "collectives): the paper's \"freeze + AutoPipe\" configuration."),
      field(PIPET_CONFIG_FIELD(autodp, batch_policy),
            "When the replica count grows: keep_global_batch (train.batch_size split over the "
            "replicas, the optimisation unchanged) or scale_lr (the per-replica batch stays "
            "train.batch_size / starting replicas, so the global batch and the LR grow by R / R0; "
            "the LR schedule and train.max_steps count steps of train.batch_size samples).")
          .one_of({"keep_global_batch", "scale_lr"}),

      // runtime
      field(PIPET_CONFIG_FIELD(runtime, threads),
            "Intra-op threads per rank; 0 = cores divided by local ranks.")
          .at_least(0),
      field(PIPET_CONFIG_FIELD(runtime, device),
            "Device of each rank; cuda takes local rank modulo the visible GPUs (needs a "
            "PIPET_WITH_CUDA build).")
          .one_of({"cpu", "cuda"}),
      field(PIPET_CONFIG_FIELD(runtime, precision),
            "Arithmetic of forward passes: bf16 runs matrix products and attention in bfloat16 "
            "under autocast, with fp32 weights, gradients and optimizer state.")
          .one_of({"fp32", "bf16"}),
      field(PIPET_CONFIG_FIELD(runtime, log_level),
            "Log level; empty = info on rank 0 and warn on the others.")
          .one_of({"", "debug", "info", "warn", "error"}),
  };
}

#undef PIPET_CONFIG_FIELD

// Catches a malformed schema entry on first use: a range on a key that is
// not numeric, choices on a key that is not a string, a key without section.
void check_declaration(const FieldSpec& spec) {
  const AnyAccess& a = spec.access;
  const bool numeric = std::holds_alternative<Access<int64_t>>(a) ||
                       std::holds_alternative<Access<double>>(a) ||
                       std::holds_alternative<Access<std::optional<int64_t>>>(a) ||
                       std::holds_alternative<Access<std::optional<double>>>(a) ||
                       std::holds_alternative<Access<std::vector<double>>>(a);
  const bool text = std::holds_alternative<Access<std::string>>(a);
  const size_t dot = spec.key.find('.');
  PIPET_CHECK(dot != std::string::npos && dot > 0 && dot == spec.key.rfind('.'),
              "config key must be section.member: " + spec.key);
  PIPET_CHECK(numeric || (!spec.min && !spec.max), "range on a non-numeric key: " + spec.key);
  PIPET_CHECK(text || (spec.choices.empty() && !spec.non_empty),
              "string constraint on a non-string key: " + spec.key);
}

const std::vector<FieldSpec>& schema() {
  static const std::vector<FieldSpec> specs = [] {
    std::vector<FieldSpec> built = build_schema();
    std::set<std::string> unique;
    for (const FieldSpec& spec : built) {
      check_declaration(spec);
      PIPET_CHECK(unique.insert(spec.key).second, "config key declared twice: " + spec.key);
    }
    return built;
  }();
  return specs;
}

const FieldSpec* find_field(const std::string& key) {
  for (const FieldSpec& spec : schema())
    if (spec.key == key) return &spec;
  return nullptr;
}

// Sections in schema order.
std::vector<std::string> section_names() {
  std::vector<std::string> names;
  for (const FieldSpec& spec : schema()) {
    const std::string section = spec.section();
    if (std::find(names.begin(), names.end(), section) == names.end()) names.push_back(section);
  }
  return names;
}

std::vector<std::string> keys_of_section(const std::string& section) {
  std::vector<std::string> keys;
  for (const FieldSpec& spec : schema())
    if (spec.section() == section) keys.push_back(spec.key);
  return keys;
}

// ---------------------------------------------------------------------------
// Printing values, ranges and expectations
// ---------------------------------------------------------------------------

// JSON text of a value; invalid UTF-8 is replaced rather than thrown on, long
// values are shortened so a message stays one readable line.
std::string shown(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  constexpr size_t kMaxShown = 80;
  if (text.size() > kMaxShown) text = text.substr(0, kMaxShown) + "...";
  return text;
}

std::string json_kind(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported JSON value";
  }
}

std::string format_bound(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  return json(v).dump();
}

// "> 0", ">= 1", "in [0, 1)", or "" when unbounded.
std::string range_text(const FieldSpec& spec) {
  if (spec.min && spec.max) {
    return "in " + std::string(spec.min->inclusive ? "[" : "(") + format_bound(spec.min->value) +
           ", " + format_bound(spec.max->value) + (spec.max->inclusive ? "]" : ")");
  }
  if (spec.min) return (spec.min->inclusive ? ">= " : "> ") + format_bound(spec.min->value);
  if (spec.max) return (spec.max->inclusive ? "<= " : "< ") + format_bound(spec.max->value);
  return "";
}

std::string with_range(const std::string& what, const FieldSpec& spec) {
  const std::string range = range_text(spec);
  return range.empty() ? what : what + " " + range;
}

std::string quoted_choices(const std::vector<std::string>& choices) {
  std::vector<std::string> quoted;
  for (const std::string& choice : choices) quoted.push_back(json(choice).dump());
  return join(quoted, ", ");
}

template <class T>
struct Tag {};

std::string expectation_of(Tag<int64_t>, const FieldSpec& s) { return with_range("an integer", s); }
std::string expectation_of(Tag<double>, const FieldSpec& s) { return with_range("a number", s); }
std::string expectation_of(Tag<bool>, const FieldSpec&) { return "a boolean (true or false)"; }
std::string expectation_of(Tag<std::string>, const FieldSpec& s) {
  if (!s.choices.empty()) return "one of " + quoted_choices(s.choices);
  return s.non_empty ? "a non-empty string" : "a string";
}
std::string expectation_of(Tag<std::optional<int64_t>>, const FieldSpec& s) {
  return with_range("an integer", s) + " or null";
}
std::string expectation_of(Tag<std::optional<double>>, const FieldSpec& s) {
  return with_range("a number", s) + " or null";
}
std::string expectation_of(Tag<std::vector<double>>, const FieldSpec& s) {
  const std::string range = range_text(s);
  return range.empty() ? "a list of numbers" : "a list of numbers, each " + range;
}
std::string expectation_of(Tag<uint64_t>, const FieldSpec&) {
  return "an integer in [0, 18446744073709551615]";
}

template <class T>
using ValueOf = std::decay_t<decltype(std::declval<T>().get(std::declval<const TrainConfig&>()))>;

std::string expectation(const FieldSpec& spec) {
  return std::visit(
      [&](const auto& access) { return expectation_of(Tag<ValueOf<decltype(access)>>{}, spec); },
      spec.access);
}

// ---------------------------------------------------------------------------
// Converting JSON values to member values (shared by files and text)
// ---------------------------------------------------------------------------

// Where a value came from. `text` is the raw string of a --set or
// hyperparameter value; errors then show it instead of the converted JSON.
struct Origin {
  const std::string& source;
  const std::string* text = nullptr;
};

[[noreturn]] void fail(const Origin& origin, const std::string& key, const std::string& what) {
  throw ConfigError(origin.source + ": key '" + key + "': " + what);
}

std::string got(const json& value, const Origin& origin) {
  if (origin.text) return shown(json(*origin.text));
  return shown(value) + " (" + json_kind(value) + ")";
}

[[noreturn]] void fail_type(const FieldSpec& spec, const json& value, const Origin& origin) {
  fail(origin, spec.key, "expected " + expectation(spec) + ", got " + got(value, origin));
}

bool in_range(const FieldSpec& spec, double v) {
  if (spec.min && (spec.min->inclusive ? v < spec.min->value : v <= spec.min->value)) return false;
  if (spec.max && (spec.max->inclusive ? v > spec.max->value : v >= spec.max->value)) return false;
  return true;
}

// `label` is the key, or "key[i]" for a list element.
void check_range(const FieldSpec& spec, const std::string& label, double v,
                 const std::string& shown_value, const std::string& expected,
                 const Origin& origin) {
  if (!in_range(spec, v))
    fail(origin, label, "value " + shown_value + " is out of range; expected " + expected);
}

std::string shown_scalar(const json& value, const Origin& origin) {
  return origin.text ? trim(*origin.text) : shown(value);
}

// An integral JSON number that fits int64, or nullopt (3.0 counts; 3.5 does not).
std::optional<int64_t> integral_int64(const json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return static_cast<int64_t>(u);
    return std::nullopt;
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    const double d = value.get<double>();
    // 2^63 is exactly representable; int64 holds [-2^63, 2^63).
    if (std::isfinite(d) && d == std::floor(d) && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0)
      return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

int64_t convert(Tag<int64_t>, const FieldSpec& spec, const json& value, const Origin& origin) {
  const std::optional<int64_t> v = integral_int64(value);
  if (!v) fail_type(spec, value, origin);
  check_range(spec, spec.key, static_cast<double>(*v), shown_scalar(value, origin),
              expectation(spec), origin);
  return *v;
}

double convert(Tag<double>, const FieldSpec& spec, const json& value, const Origin& origin) {
  if (!value.is_number()) fail_type(spec, value, origin);
  const double v = value.get<double>();
  check_range(spec, spec.key, v, shown_scalar(value, origin), expectation(spec), origin);
  return v;
}

bool convert(Tag<bool>, const FieldSpec& spec, const json& value, const Origin& origin) {
  if (!value.is_boolean()) fail_type(spec, value, origin);
  return value.get<bool>();
}

std::string convert(Tag<std::string>, const FieldSpec& spec, const json& value,
                    const Origin& origin) {
  if (!value.is_string()) fail_type(spec, value, origin);
  std::string v = value.get<std::string>();
  if (!spec.choices.empty() &&
      std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
    fail(origin, spec.key,
         "expected " + expectation(spec) + ", got " + got(value, origin) +
             did_you_mean(v, spec.choices));
  }
  if (spec.non_empty && v.empty()) fail_type(spec, value, origin);
  return v;
}

std::optional<int64_t> convert(Tag<std::optional<int64_t>>, const FieldSpec& spec,
                               const json& value, const Origin& origin) {
  if (value.is_null()) return std::nullopt;
  return convert(Tag<int64_t>{}, spec, value, origin);
}

std::optional<double> convert(Tag<std::optional<double>>, const FieldSpec& spec, const json& value,
                              const Origin& origin) {
  if (value.is_null()) return std::nullopt;
  return convert(Tag<double>{}, spec, value, origin);
}

std::vector<double> convert(Tag<std::vector<double>>, const FieldSpec& spec, const json& value,
                            const Origin& origin) {
  if (!value.is_array()) fail_type(spec, value, origin);
  const std::string range = range_text(spec);
  const std::string element_expected = range.empty() ? "a number" : "a number " + range;
  std::vector<double> out;
  for (size_t i = 0; i < value.size(); ++i) {
    const std::string label = spec.key + "[" + std::to_string(i) + "]";
    const json& element = value[i];
    if (!element.is_number())
      fail(origin, label,
           "expected " + element_expected + ", got " + shown(element) + " (" + json_kind(element) +
               ")");
    const double v = element.get<double>();
    check_range(spec, label, v, shown(element), element_expected, origin);
    out.push_back(v);
  }
  return out;
}

uint64_t convert(Tag<uint64_t>, const FieldSpec& spec, const json& value, const Origin& origin) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0)
    return static_cast<uint64_t>(value.get<int64_t>());
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= 0 && d < 18446744073709551616.0)
      return static_cast<uint64_t>(d);
  }
  fail_type(spec, value, origin);
}

// Converts and checks `value`, then stores it; `config` is untouched on error.
void store(const FieldSpec& spec, TrainConfig& config, const json& value, const Origin& origin) {
  std::visit(
      [&](const auto& access) {
        using T = ValueOf<decltype(access)>;
        T converted = convert(Tag<T>{}, spec, value, origin);
        access.mut(config) = std::move(converted);
      },
      spec.access);
}

json to_json_value(int64_t v) { return json(v); }
json to_json_value(double v) { return json(v); }
json to_json_value(bool v) { return json(v); }
json to_json_value(const std::string& v) { return json(v); }
json to_json_value(uint64_t v) { return json(v); }
json to_json_value(const std::vector<double>& v) { return json(v); }
template <class T>
json to_json_value(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

json value_as_json(const FieldSpec& spec, const TrainConfig& config) {
  return std::visit([&](const auto& access) { return to_json_value(access.get(config)); },
                    spec.access);
}

// nlohmann's message without its "[json.exception...] parse error at line L,
// column C: " prefix (we print our own position).
std::string parse_error_reason(const json::parse_error& e) {
  const std::string what = e.what();
  const size_t column = what.find("column ");
  if (column != std::string::npos) {
    const size_t colon = what.find(": ", column);
    if (colon != std::string::npos) return what.substr(colon + 2);
  }
  const size_t bracket = what.find("] ");
  return bracket == std::string::npos ? what : what.substr(bracket + 2);
}

// ---------------------------------------------------------------------------
// Text values (--set, SageMaker hyperparameters)
// ---------------------------------------------------------------------------

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// [+-]?(digits(.digits*)?|.digits)([eE][+-]?digits)? — plain decimal notation
// only: no hex, inf, nan or surrounding junk.
bool is_decimal_number(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t int_digits = 0, frac_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++int_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++frac_digits;
  }
  if (int_digits + frac_digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    return is_digits(s.substr(i));
  }
  return i == s.size();
}

// A whole-string number as JSON (integer when it is written as one), or
// nullopt when the text is not exactly one finite number.
std::optional<json> parse_number_text(const std::string& text) {
  std::string_view s = text;
  const bool negative = !s.empty() && s[0] == '-';
  std::string_view unsigned_part = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? s.substr(1) : s;
  if (is_digits(unsigned_part)) {
    // from_chars takes '-' but not '+'.
    std::string_view signed_part = (!s.empty() && s[0] == '+') ? s.substr(1) : s;
    int64_t i = 0;
    auto [end, ec] =
        std::from_chars(signed_part.data(), signed_part.data() + signed_part.size(), i);
    if (ec == std::errc() && end == signed_part.data() + signed_part.size()) return json(i);
    if (!negative) {
      uint64_t u = 0;
      auto [uend, uec] =
          std::from_chars(unsigned_part.data(), unsigned_part.data() + unsigned_part.size(), u);
      if (uec == std::errc() && uend == unsigned_part.data() + unsigned_part.size()) return json(u);
    }
    // Too large for any integer type: fall through to floating point.
  }
  if (!is_decimal_number(s)) return std::nullopt;
  std::string_view float_part = (s[0] == '+') ? s.substr(1) : s;
  double d = 0;
  auto [end, ec] = std::from_chars(float_part.data(), float_part.data() + float_part.size(), d);
  if (ec != std::errc() || end != float_part.data() + float_part.size() || !std::isfinite(d))
    return std::nullopt;
  return json(d);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

json number_from_text(const FieldSpec& spec, const std::string& text, const Origin& origin) {
  std::optional<json> number = parse_number_text(trim(text));
  if (!number) fail_type(spec, json(text), origin);
  return *number;
}

json text_to_json(Tag<int64_t>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  return number_from_text(spec, text, origin);
}
json text_to_json(Tag<double>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  return number_from_text(spec, text, origin);
}
json text_to_json(Tag<uint64_t>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  return number_from_text(spec, text, origin);
}

json text_to_json(Tag<bool>, const FieldSpec& spec, const std::string& text, const Origin& origin) {
  const std::string t = trim(text);
  if (t == "true" || t == "True" || t == "TRUE" || t == "1") return json(true);
  if (t == "false" || t == "False" || t == "FALSE" || t == "0") return json(false);
  fail(origin, spec.key,
       "expected a boolean (true/True/TRUE/1 or false/False/FALSE/0), got " +
           got(json(text), origin));
}

json text_to_json(Tag<std::string>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  // A json object holding invalid UTF-8 would throw later, when dumped.
  try {
    (void)json(text).dump();
  } catch (const json::type_error&) {
    fail(origin, spec.key, "value is not valid UTF-8: " + shown(json(text)));
  }
  return json(text);
}

json optional_from_text(const FieldSpec& spec, const std::string& text, const Origin& origin) {
  const std::string t = lower(trim(text));
  if (t.empty() || t == "null" || t == "none") return json(nullptr);
  return number_from_text(spec, text, origin);
}
json text_to_json(Tag<std::optional<int64_t>>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  return optional_from_text(spec, text, origin);
}
json text_to_json(Tag<std::optional<double>>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  return optional_from_text(spec, text, origin);
}

json text_to_json(Tag<std::vector<double>>, const FieldSpec& spec, const std::string& text,
                  const Origin& origin) {
  const std::string t = trim(text);
  if (t.empty()) return json::array();
  if (t.front() == '[') {
    try {
      return json::parse(t);  // element types are checked by convert()
    } catch (const json::parse_error& e) {
      fail(origin, spec.key,
           "invalid JSON list " + shown(json(*origin.text)) + ": " + parse_error_reason(e));
    }
  }
  json list = json::array();
  const std::vector<std::string> parts = split(t, ',');
  for (size_t i = 0; i < parts.size(); ++i) {
    std::optional<json> number = parse_number_text(trim(parts[i]));
    if (!number) {
      fail(origin, spec.key + "[" + std::to_string(i) + "]",
           "expected a number, got " + shown(json(trim(parts[i]))) + " in " +
               shown(json(*origin.text)));
    }
    list.push_back(*number);
  }
  return list;
}

// ---------------------------------------------------------------------------
// JSON documents
// ---------------------------------------------------------------------------

[[noreturn]] void unknown_top_level(const std::string& name, const ConfigSource& source) {
  // A bare member name ("lr") most likely lacks its section.
  std::vector<std::string> owners;
  for (const FieldSpec& spec : schema())
    if (spec.key.substr(spec.key.find('.') + 1) == name) owners.push_back("'" + spec.key + "'");
  std::string hint;
  if (owners.size() == 1) {
    hint = " (did you mean " + owners[0] + "?)";
  } else if (!owners.empty()) {
    hint = " (did you mean one of " + join(owners, ", ") + "?)";
  } else {
    hint = did_you_mean(name, section_names());
  }
  throw ConfigError(source.name + ": unknown section '" + name + "'" + hint + "; sections are " +
                    join(section_names(), ", "));
}

// 1-based line and column of the character at 1-based position `byte`.
std::pair<size_t, size_t> line_and_column(const std::string& text, size_t byte) {
  const size_t index = std::min(byte == 0 ? 0 : byte - 1, text.size());
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < index; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, index - line_start + 1};
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

void apply_config_json(TrainConfig& config, const json& object, const ConfigSource& source) {
  if (!object.is_object()) {
    throw ConfigError(source.name +
                      ": expected a JSON object of config keys at the top level, got " +
                      shown(object) + " (" + json_kind(object) + ")");
  }
  TrainConfig updated = config;
  std::set<std::string> seen;
  const Origin origin{source.name};
  auto apply_one = [&](const FieldSpec& spec, const json& value) {
    if (!seen.insert(spec.key).second) {
      throw ConfigError(source.name + ": key '" + spec.key +
                        "' is given twice (nested under its section and dotted); keep one");
    }
    store(spec, updated, value, origin);
  };

  for (const auto& [name, value] : object.items()) {
    if (name.find('.') != std::string::npos) {
      const FieldSpec* spec = find_field(name);
      if (!spec)
        throw ConfigError(source.name + ": unknown key '" + name + "'" +
                          did_you_mean(name, config_keys()));
      apply_one(*spec, value);
      continue;
    }
    const std::vector<std::string> keys = keys_of_section(name);
    if (keys.empty()) unknown_top_level(name, source);
    if (!value.is_object()) {
      throw ConfigError(source.name + ": section '" + name +
                        "' must be a JSON object of its keys, got " + shown(value) + " (" +
                        json_kind(value) + ")");
    }
    for (const auto& [member, member_value] : value.items()) {
      const std::string key = name + "." + member;
      const FieldSpec* spec = find_field(key);
      if (!spec)
        throw ConfigError(source.name + ": unknown key '" + key + "'" + did_you_mean(key, keys));
      apply_one(*spec, member_value);
    }
  }
  config = std::move(updated);
}

TrainConfig load_config_file(const std::string& path) {
  const std::string text = read_file(path, "config file");

  // nlohmann keeps the last of two equal keys in one object; a config file
  // that says the same thing twice is far more likely a mistake.
  std::vector<std::set<std::string>> open_objects;
  std::vector<std::string> key_path;
  auto reject_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string key = parsed.get<std::string>();
        key_path.resize(static_cast<size_t>(depth));
        if (!key_path.empty()) key_path.back() = key;
        if (!open_objects.empty() && !open_objects.back().insert(key).second) {
          throw ConfigError(path + ": key '" + join(key_path, ".") +
                            "' appears twice in the same JSON object");
        }
        break;
      }
      default: break;
    }
    return true;
  };

  json document;
  try {
    document =
        json::parse(text, reject_duplicates, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_and_column(text, e.byte);
    throw ConfigError(path + ":" + std::to_string(line) + ":" + std::to_string(column) +
                      ": invalid JSON: " + parse_error_reason(e));
  }
  TrainConfig config;
  apply_config_json(config, document, ConfigSource{path});
  return config;
}

void apply_config_text(TrainConfig& config, const std::string& key, const std::string& value,
                       const ConfigSource& source) {
  const FieldSpec* spec = find_field(key);
  if (!spec)
    throw ConfigError(source.name + ": unknown key '" + key + "'" +
                      did_you_mean(key, config_keys()));
  const Origin origin{source.name, &value};

  // SageMaker JSON-encodes hyperparameter values: "\"abc\"" means abc.
  std::string text = value;
  const std::string trimmed = trim(value);
  if (trimmed.size() >= 2 && trimmed.front() == '"' && trimmed.back() == '"') {
    try {
      text = json::parse(trimmed).get<std::string>();
    } catch (const json::exception&) {
      fail(origin, key, "invalid JSON-encoded string " + shown(json(value)));
    }
  }
  const json converted = std::visit(
      [&](const auto& access) {
        return text_to_json(Tag<ValueOf<decltype(access)>>{}, *spec, text, origin);
      },
      spec->access);
  store(*spec, config, converted, origin);
}

void apply_config_assignment(TrainConfig& config, const std::string& assignment,
                             const ConfigSource& source) {
  const size_t equals = assignment.find('=');
  if (equals == std::string::npos) {
    throw ConfigError(source.name + ": expected key=value, got '" + assignment + "'");
  }
  const std::string key = trim(assignment.substr(0, equals));
  if (key.empty())
    throw ConfigError(source.name + ": missing key before '=' in '" + assignment + "'");
  apply_config_text(config, key, assignment.substr(equals + 1), source);
}

namespace {

bool is_image_dataset(const std::string& dataset) {
  return dataset == "synthetic-image" || dataset == "cifar10" || dataset == "cifar100" ||
         dataset == "image-folder";
}

bool is_file_dataset(const std::string& dataset) {
  return dataset == "cifar10" || dataset == "cifar100" || dataset == "image-folder" ||
         dataset == "glue" || dataset == "squad";
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// Classes known from the configuration alone; 0 when only the data can tell.
int64_t dataset_classes(const DataConfig& data) {
  if (data.dataset == "cifar10") return 10;
  if (data.dataset == "cifar100") return data.cifar100_labels == "coarse" ? 20 : 100;
  if (starts_with(data.dataset, "synthetic-")) return data.num_classes;
  return 0;
}

}  // namespace

void validate_config(const TrainConfig& c) {
  // Per-key types, ranges and choices first, for configs built in code rather
  // than loaded; the cross-key checks below rely on them.
  TrainConfig scratch;
  apply_config_json(scratch, config_to_json(c), ConfigSource{"configuration"});

  const ModelConfig& m = c.model;
  const DataConfig& d = c.data;
  const bool vit = starts_with(m.preset, "vit-");
  const bool image = is_image_dataset(d.dataset);

  if (vit != image) {
    throw ConfigError(
        "model.preset " + quoted(m.preset) + " is " + (vit ? "an image" : "a text") +
        " model but data.dataset " + quoted(d.dataset) + " is " + (image ? "an image" : "a text") +
        " dataset; vit-* presets take synthetic-image, cifar10, cifar100 or image-folder, bert-*"
        " presets take synthetic-text, glue or squad");
  }
  const std::pair<const char*, const std::optional<int64_t>*> vit_only[] = {
      {"model.image_size", &m.image_size},
      {"model.patch_size", &m.patch_size},
      {"model.num_channels", &m.num_channels}};
  const std::pair<const char*, const std::optional<int64_t>*> bert_only[] = {
      {"model.vocab_size", &m.vocab_size},
      {"model.max_position_embeddings", &m.max_position_embeddings},
      {"model.type_vocab_size", &m.type_vocab_size}};
  for (const auto& [key, value] : vit ? bert_only : vit_only) {
    if (value->has_value()) {
      throw ConfigError(std::string(key) + " applies to " + (vit ? "BERT" : "ViT") +
                        " presets only, but model.preset is " + quoted(m.preset) + "; remove it");
    }
  }
  if (m.hidden_size && m.num_heads && *m.hidden_size % *m.num_heads != 0) {
    throw ConfigError("model.hidden_size " + std::to_string(*m.hidden_size) +
                      " is not divisible by model.num_heads " + std::to_string(*m.num_heads));
  }
  if (m.image_size && m.patch_size && *m.image_size % *m.patch_size != 0) {
    throw ConfigError("model.image_size " + std::to_string(*m.image_size) +
                      " is not divisible by model.patch_size " + std::to_string(*m.patch_size));
  }
  if (m.max_position_embeddings && d.seq_len > *m.max_position_embeddings) {
    throw ConfigError("data.seq_len " + std::to_string(d.seq_len) +
                      " exceeds model.max_position_embeddings " +
                      std::to_string(*m.max_position_embeddings));
  }
  if (m.num_labels > 0 && m.num_labels < dataset_classes(d)) {
    throw ConfigError("model.num_labels " + std::to_string(m.num_labels) + " is smaller than the " +
                      std::to_string(dataset_classes(d)) + " classes of data.dataset " +
                      quoted(d.dataset) +
                      (starts_with(d.dataset, "synthetic-") ? " (data.num_classes)" : "") +
                      "; use 0 to take the dataset's count");
  }

  if (is_file_dataset(d.dataset) && d.dir.empty() && d.train_path.empty()) {
    throw ConfigError("data.dataset " + quoted(d.dataset) +
                      " reads files: set data.dir (the dataset's standard layout) or "
                      "data.train_path");
  }
  if (!is_file_dataset(d.dataset) &&
      !(d.train_path.empty() && d.eval_path.empty() && d.eval_split == 0)) {
    throw ConfigError("data.train_path, data.eval_path and data.eval_split apply to file datasets, "
                      "but data.dataset is " + quoted(d.dataset));
  }
  if (!d.eval_path.empty() && d.eval_split > 0) {
    throw ConfigError("data.eval_path and data.eval_split are both set; an explicit evaluation set "
                      "or a held-out split, not both");
  }
  if ((d.dataset == "glue" || d.dataset == "squad") && d.vocab_file.empty()) {
    throw ConfigError("data.dataset " + quoted(d.dataset) +
                      " needs data.vocab_file: the WordPiece vocab.txt of the model");
  }
  if ((d.dataset == "squad") != (m.head == "question-answering")) {
    throw ConfigError(d.dataset == "squad"
                          ? "data.dataset 'squad' predicts answer spans: set model.head to "
                            "'question-answering' (BertForQuestionAnswering)"
                          : "model.head 'question-answering' predicts answer spans and needs "
                            "data.dataset 'squad', but data.dataset is " + quoted(d.dataset));
  }
  if (d.dataset == "squad" && d.max_query_len + 3 >= d.seq_len) {
    throw ConfigError("data.max_query_len " + std::to_string(d.max_query_len) +
                      " leaves no room for context in data.seq_len " + std::to_string(d.seq_len) +
                      " ([CLS] question [SEP] context [SEP]); lower it or raise data.seq_len");
  }
  if (d.mean.size() != d.std.size()) {
    throw ConfigError("data.mean has " + std::to_string(d.mean.size()) +
                      " values but data.std has " + std::to_string(d.std.size()) +
                      "; give both with one value per channel");
  }
  if (!image && !d.mean.empty()) {
    throw ConfigError("data.mean and data.std apply to image datasets only, but data.dataset is " +
                      quoted(d.dataset));
  }
  if (m.num_channels && !d.mean.empty() && static_cast<int64_t>(d.mean.size()) != *m.num_channels) {
    throw ConfigError("data.mean and data.std have " + std::to_string(d.mean.size()) +
                      " values but model.num_channels is " + std::to_string(*m.num_channels));
  }

  const TrainLoopConfig& t = c.train;
  if (t.warmup_steps > 0 && t.warmup_ratio > 0) {
    throw ConfigError("train.warmup_steps (" + std::to_string(t.warmup_steps) +
                      ") and train.warmup_ratio (" + format_bound(t.warmup_ratio) +
                      ") are both set; set only one");
  }
  if (t.max_steps > 0 && t.warmup_steps > t.max_steps) {
    throw ConfigError("train.warmup_steps (" + std::to_string(t.warmup_steps) +
                      ") exceeds train.max_steps (" + std::to_string(t.max_steps) + ")");
  }
  if (t.optimizer == "sgd" && t.nesterov && t.momentum == 0) {
    throw ConfigError("train.nesterov needs train.momentum > 0");
  }

  const FreezeConfig& fz = c.freeze;
  if (fz.policy == "manual" && fz.manual.empty()) {
    throw ConfigError("freeze.policy 'manual' needs freeze.manual: the frozen block count after "
                      "each decision, e.g. [2, 4, 6]");
  }
  if (fz.policy == "none" && fz.probe_samples > 0) {
    throw ConfigError("freeze.probe_samples checks freeze decisions, but freeze.policy is 'none'");
  }
  if (fz.policy != "manual" && !fz.manual.empty()) {
    throw ConfigError("freeze.manual applies to freeze.policy 'manual' only, but freeze.policy is " +
                      quoted(fz.policy));
  }
  for (size_t i = 0; i < fz.manual.size(); ++i) {
    if (fz.manual[i] != static_cast<double>(static_cast<int64_t>(fz.manual[i]))) {
      throw ConfigError("freeze.manual[" + std::to_string(i) + "] = " + format_bound(fz.manual[i]) +
                        ": the list must hold whole numbers of blocks");
    }
  }

  const ParallelConfig& p = c.parallel;
  if (t.batch_size % p.micro_batches != 0) {
    throw ConfigError("train.batch_size " + std::to_string(t.batch_size) +
                      " is not divisible by parallel.micro_batches " +
                      std::to_string(p.micro_batches));
  }

  const EvalConfig& e = c.eval;
  if (e.early_stop_patience > 0 && e.every_steps == 0 && e.every_epochs == 0) {
    throw ConfigError("eval.early_stop_patience " + std::to_string(e.early_stop_patience) +
                      " needs evaluations: set eval.every_steps or eval.every_epochs above 0");
  }
  // checkpoint.every_* with an empty checkpoint.dir simply means "off", and an
  // explicit checkpoint.resume path needs no directory: nothing to check.
}

json config_to_json(const TrainConfig& config) {
  json out = json::object();
  for (const FieldSpec& spec : schema()) {
    const size_t dot = spec.key.find('.');
    out[spec.key.substr(0, dot)][spec.key.substr(dot + 1)] = value_as_json(spec, config);
  }
  return out;
}

namespace {

struct DescribeRow {
  std::string key, type, default_value, allowed, doc;
};

std::string type_label(const FieldSpec& spec) {
  struct Label {
    const FieldSpec& spec;
    std::string operator()(const Access<int64_t>&) const { return "int"; }
    std::string operator()(const Access<double>&) const { return "float"; }
    std::string operator()(const Access<bool>&) const { return "bool"; }
    std::string operator()(const Access<std::string>&) const {
      return spec.choices.empty() ? "string" : "enum";
    }
    std::string operator()(const Access<std::optional<int64_t>>&) const { return "int or null"; }
    std::string operator()(const Access<std::optional<double>>&) const { return "float or null"; }
    std::string operator()(const Access<std::vector<double>>&) const { return "list of float"; }
    std::string operator()(const Access<uint64_t>&) const { return "uint64"; }
  };
  return std::visit(Label{spec}, spec.access);
}

std::string allowed_text(const FieldSpec& spec) {
  struct Allowed {
    const FieldSpec& spec;
    std::string numeric(const char* fallback) const {
      const std::string range = range_text(spec);
      return range.empty() ? fallback : range;
    }
    std::string operator()(const Access<int64_t>&) const { return numeric("any integer"); }
    std::string operator()(const Access<double>&) const { return numeric("any number"); }
    std::string operator()(const Access<bool>&) const { return "true, false"; }
    std::string operator()(const Access<std::string>&) const {
      if (!spec.choices.empty()) return quoted_choices(spec.choices);
      return spec.non_empty ? "non-empty" : "any";
    }
    std::string operator()(const Access<std::optional<int64_t>>&) const {
      return numeric("any integer") + ", or null";
    }
    std::string operator()(const Access<std::optional<double>>&) const {
      return numeric("any number") + ", or null";
    }
    std::string operator()(const Access<std::vector<double>>&) const {
      const std::string range = range_text(spec);
      return range.empty() ? "any numbers" : "each " + range;
    }
    std::string operator()(const Access<uint64_t>&) const { return "0 .. 18446744073709551615"; }
  };
  return std::visit(Allowed{spec}, spec.access);
}

std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

std::string pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

}  // namespace

std::string describe_config(const std::string& format) {
  if (format != "markdown" && format != "text") {
    throw ConfigError("unknown config description format '" + format + "'" +
                      did_you_mean(format, {"markdown", "text"}) + "; expected markdown or text");
  }
  const TrainConfig defaults;
  std::map<std::string, std::vector<DescribeRow>> rows_by_section;
  for (const FieldSpec& spec : schema()) {
    rows_by_section[spec.section()].push_back(DescribeRow{spec.key, type_label(spec),
                                                          shown(value_as_json(spec, defaults)),
                                                          allowed_text(spec), spec.doc});
  }

  std::ostringstream out;
  if (format == "markdown") {
    bool first = true;
    for (const std::string& section : section_names()) {
      if (!first) out << "\n";
      first = false;
      out << "## " << section << "\n\n";
      out << "| key | type | default | allowed values / range | description |\n";
      out << "|---|---|---|---|---|\n";
      for (const DescribeRow& row : rows_by_section[section]) {
        out << "| `" << row.key << "` | " << row.type << " | `" << markdown_cell(row.default_value)
            << "` | " << markdown_cell(row.allowed) << " | " << markdown_cell(row.doc) << " |\n";
      }
    }
    return out.str();
  }

  // Plain text: one width per column across all sections, so every table lines up.
  const DescribeRow header{"KEY", "TYPE", "DEFAULT", "ALLOWED", "DESCRIPTION"};
  size_t widths[4] = {header.key.size(), header.type.size(), header.default_value.size(),
                      header.allowed.size()};
  for (const auto& [section, rows] : rows_by_section) {
    for (const DescribeRow& row : rows) {
      widths[0] = std::max(widths[0], row.key.size());
      widths[1] = std::max(widths[1], row.type.size());
      widths[2] = std::max(widths[2], row.default_value.size());
      widths[3] = std::max(widths[3], row.allowed.size());
    }
  }
  auto write_row = [&](const DescribeRow& row) {
    out << pad(row.key, widths[0]) << "  " << pad(row.type, widths[1]) << "  "
        << pad(row.default_value, widths[2]) << "  " << pad(row.allowed, widths[3]) << "  "
        << row.doc << "\n";
  };
  bool first = true;
  for (const std::string& section : section_names()) {
    if (!first) out << "\n";
    first = false;
    out << "[" << section << "]\n";
    write_row(header);
    for (const DescribeRow& row : rows_by_section[section]) write_row(row);
  }
  return out.str();
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const FieldSpec& spec : schema()) keys.push_back(spec.key);
  return keys;
}

}  // namespace pipet
