// TrainConfig: the one configuration schema of the engine. Loaded from a JSON
// file (nested sections or dotted keys), overridden by `--set key=value`, and
// by the container adapter from SageMaker hyperparameters (same keys, same
// validation). Every key is declared once in config.cc with its type, default,
// range and documentation; `pipetransformer config --describe` prints them.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pipet {

struct ModelConfig {
  // vit-tiny | vit-small | vit-b16 | vit-l16 | bert-tiny | bert-mini | bert-base | bert-large
  std::string preset = "vit-tiny";
  // Architecture overrides; unset means "from the preset".
  std::optional<int64_t> hidden_size;
  std::optional<int64_t> num_layers;
  std::optional<int64_t> num_heads;
  std::optional<int64_t> intermediate_size;
  std::optional<int64_t> image_size;    // ViT
  std::optional<int64_t> patch_size;    // ViT
  std::optional<int64_t> num_channels;  // ViT
  std::optional<int64_t> vocab_size;               // BERT
  std::optional<int64_t> max_position_embeddings;  // BERT
  std::optional<int64_t> type_vocab_size;          // BERT
  std::optional<double> hidden_dropout;
  std::optional<double> attention_dropout;
  std::optional<double> layer_norm_eps;
  std::optional<double> initializer_range;
  // Classes of the task head; 0 means "from the dataset".
  int64_t num_labels = 0;
  // classification | question-answering (BertForQuestionAnswering, for squad)
  std::string head = "classification";
  // Pretrained weights (safetensors, Hugging Face names); empty = random init.
  std::string init_from;
};

struct DataConfig {
  // synthetic-image | synthetic-text | cifar10 | cifar100 | image-folder | glue | squad
  std::string dataset = "synthetic-image";
  std::string dir;                        // dataset directory (file datasets)
  std::string train_path;                 // overrides the standard train file/folder under dir
  std::string eval_path;                  // overrides the standard eval file/folder under dir
  double eval_split = 0.0;                // seeded hold-out fraction when there is no eval set
  std::string cifar100_labels = "fine";   // fine | coarse
  int64_t train_samples = 2048;           // synthetic datasets
  int64_t eval_samples = 512;             // synthetic datasets
  int64_t num_classes = 10;               // synthetic datasets
  int64_t seq_len = 64;                   // text datasets: padded length
  bool augment = true;                    // image datasets: crop + flip
  int64_t crop_padding = 4;               // random crop padding in pixels
  bool hflip = true;                      // random horizontal flip
  std::vector<double> mean;               // per channel; empty = dataset default
  std::vector<double> std;                // per channel; empty = dataset default
  double crop_scale_min = 0.08;           // image-folder: random-resized-crop area floor
  int64_t decode_threads = 0;             // image decoding threads; 0 = from the core count
  int64_t prefetch_batches = 2;           // batches decoded ahead of the trainer
  std::string on_bad_sample = "fail";     // fail | skip (corrupt images)
  std::string vocab_file;                 // WordPiece vocab.txt (glue, squad)
  bool lowercase = true;                  // uncased tokenizer
  std::string text_column = "sentence";   // glue: first text column
  std::string text_pair_column;           // glue: second text column; empty = single text
  std::string label_column = "label";     // glue
  int64_t doc_stride = 128;               // squad: overlap between context windows
  int64_t max_query_len = 64;             // squad: question tokens kept
  int64_t max_answer_len = 30;            // squad: longest predicted answer in tokens
};

struct TrainLoopConfig {
  int64_t epochs = 3;
  int64_t max_steps = 0;           // 0 = no limit (epochs decide)
  int64_t batch_size = 32;         // global batch
  std::string optimizer = "adamw"; // adamw | sgd
  double lr = 1e-3;
  double weight_decay = 0.01;
  double momentum = 0.9;           // sgd
  bool nesterov = false;           // sgd
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  std::string schedule = "cosine"; // cosine | linear | constant
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;       // of total steps; used when warmup_steps is 0
  double min_lr_ratio = 0.0;       // floor of the decay, as a fraction of lr
  double grad_clip_norm = 1.0;     // global L2 norm; 0 = off
  uint64_t seed = 42;
  int64_t log_every_steps = 10;
};

struct EvalConfig {
  int64_t every_steps = 0;         // 0 = off
  int64_t every_epochs = 1;        // 0 = off
  int64_t batch_size = 0;          // 0 = train.batch_size
  int64_t early_stop_patience = 0; // evaluations without improvement; 0 = off
  std::string early_stop_metric = "eval_accuracy";  // eval_accuracy | eval_loss | eval_exact_match | eval_f1
  double early_stop_min_delta = 0.0;
};

struct CheckpointConfig {
  std::string dir;                 // empty = no checkpoints
  int64_t every_steps = 0;         // 0 = off
  int64_t every_epochs = 1;        // 0 = off
  int64_t keep = 2;                // complete checkpoints kept (>= 1)
  std::string resume = "auto";     // auto | never | PATH of a checkpoint
};

struct OutputConfig {
  std::string dir = "output";      // exported model, metrics, summary
  std::string metrics_file = "metrics.jsonl";  // relative to dir unless absolute
  bool export_model = true;
};

// Static layout of the ranks: K pipeline stages x R = ranks / K replicas.
struct ParallelConfig {
  int64_t pipeline_stages = 1;       // K; must divide the number of ranks
  int64_t micro_batches = 1;         // M per pipeline per step
  std::string schedule = "1f1b";     // 1f1b | gpipe
  double bucket_mb = 25.0;           // gradient all-reduce bucket size in MiB
  double comm_timeout_s = 300.0;     // a collective or p2p op slower than this fails the job
};

// Freezing converged blocks (the paper's adaptive rule) and what the engine
// does with the freed compute (AutoPipe compression, AutoDP regrouping).
struct FreezeConfig {
  std::string policy = "none";      // none | schedule | paper | adaptive | manual
  double alpha = 1.0 / 3.0;         // fraction of active blocks the bound frees per decision
  int64_t every_steps = 0;          // decision interval; 0 = epoch boundaries
  int64_t warmup_decisions = 0;     // decisions that freeze nothing first
  double max_fraction = 1.0;        // never freeze more than this fraction of the blocks
  std::vector<double> manual;       // manual: frozen blocks after decision 1, 2, ...
  int64_t smoothing_window = 2;     // paper, adaptive: decision intervals pooled into each gradient norm
  double tolerance = 0.05;          // adaptive: relative change of a settled block's gradient norm
  int64_t patience = 2;             // adaptive: decisions in a row a block must have settled
  int64_t probe_samples = 0;        // held-out training samples that check every change; 0 = no check
  double probe_tolerance = 0.02;    // allowed shortfall of the probe loss's improvement, as a fraction of it
  int64_t cooldown = 2;             // decisions after a revoked change that freeze nothing new
};

struct AutoPipeConfig {
  // false: K stays K0 and the starting partition is kept (boundaries move only
  // as far as the frozen prefix, always on stage 0, requires): "freeze only".
  bool enabled = true;
  std::string partition = "optimal";  // optimal | greedy (the paper's)
  std::string cost = "parameters";    // parameters (the paper's proxy) | measured (profiled time)
  double frozen_cost = 1.0 / 6.0;     // lambda_frozen: a frozen sub-layer's cost relative to an active one
  // How the partition counts a frozen sub-layer: lambda (frozen_cost, as the
  // compression criterion does) | forward (its forward on the samples the
  // cache will not serve) | auto (forward under 1f1b, lambda under gpipe).
  std::string frozen_balance = "auto";
  std::string compression = "halve";  // halve (the paper) | divisors (any K dividing the ranks)
  bool tune_micro_batches = false;    // profile candidate M for each new K, keep the fastest
  std::string micro_batch_file = "micro_batches.json";  // measurements kept between runs (in output.dir unless absolute)
};

// AutoCache: the frozen prefix's output served from a node-wide cache.
struct AutoCacheConfig {
  std::string mode = "off";        // off | on | auto (measured, with hysteresis)
  double shm_mb = 1024.0;          // shared-memory tier per node
  std::string disk_dir;            // disk tier directory; empty = none
  double disk_mb = 0.0;            // disk tier size; 0 = none
  std::string dtype = "f32";       // f32 (bit-exact) | bf16 | f16
  int64_t views = 1;               // augmented views cached per sample
  double margin = 0.1;             // auto: hysteresis margin
};

// AutoDP: replicas fill the ranks a compressed pipeline frees.
struct AutoDpConfig {
  // false: a compression to K' stages keeps the starting replica count R0;
  // the ranks beyond K' x R0 sit out (no batches, only world collectives).
  bool enabled = true;
  // keep_global_batch: train.batch_size is split over the replicas (same
  // optimisation); scale_lr: the per-replica batch stays at its starting
  // size and the LR grows linearly with the replica count.
  std::string batch_policy = "keep_global_batch";
};

struct RuntimeConfig {
  int64_t threads = 0;             // intra-op threads per rank; 0 = cores / local ranks
  std::string device = "cpu";      // cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16 (autocast; fp32 weights and optimizer state)
  std::string log_level;           // debug | info | warn | error; empty = per-rank default
};

struct TrainConfig {
  ModelConfig model;
  DataConfig data;
  TrainLoopConfig train;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  OutputConfig output;
  ParallelConfig parallel;
  FreezeConfig freeze;
  AutoPipeConfig autopipe;
  AutoCacheConfig autocache;
  AutoDpConfig autodp;
  RuntimeConfig runtime;
};

// Where a value came from, for error messages: "config.json", "--set", ...
struct ConfigSource {
  std::string name;
};

// Reads a JSON config file (nested sections and/or dotted keys). Errors name
// the file, the line for syntax errors, and the key for schema errors.
TrainConfig load_config_file(const std::string& path);

// Applies a JSON object onto `config` (nested or dotted keys).
void apply_config_json(TrainConfig& config, const nlohmann::json& object,
                       const ConfigSource& source);

// Applies one `key=value` given as text (from --set or hyperparameters). The
// text is parsed by the key's type: "true"/"True"/"1"/"false"/"False"/"0" for
// booleans, JSON-encoded strings ("\"abc\"") are unquoted, lists are
// comma-separated or JSON arrays.
void apply_config_text(TrainConfig& config, const std::string& key,
                       const std::string& value, const ConfigSource& source);

// Parses "key=value" and applies it; errors name the argument.
void apply_config_assignment(TrainConfig& config, const std::string& assignment,
                             const ConfigSource& source);

// Cross-key checks (ranges that depend on other keys, dataset needs a dir,
// ...). Throws ConfigError naming the key(s).
void validate_config(const TrainConfig& config);

// Every key with its value (unset optionals as null), nested by section.
nlohmann::json config_to_json(const TrainConfig& config);

// The generated reference of every key: type, default, range, documentation.
// format: "markdown" or "text".
std::string describe_config(const std::string& format);

// All keys of the schema, dotted ("train.lr").
std::vector<std::string> config_keys();

}  // namespace pipet
