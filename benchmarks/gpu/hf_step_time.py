#!/usr/bin/env python3
"""Training-step throughput of the transformers ViT and BERT: PyTorch eager
and torch.compile, the references for pipetransformer's GPU numbers.

One case = (model, batch, sequence length, mode). Each case builds a fresh
transformers model from a config matching our preset (runtime/model/presets.cc),
attn_implementation="sdpa", fp32 master weights on the device, and times the
step a fine-tuning user writes:

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16):      # --precision bf16
        logits = model(**inputs).logits
    loss = cross_entropy(logits.float(), labels)
    loss.backward()
    clip_grad_norm_(parameters, 1.0)
    AdamW(fused=True on CUDA; weight decay 0.01 on tensors with >= 2 dims,
          none on biases and LayerNorm, as our optimizer).step()

Inputs are random and stay on the device (no data loader). BERT rows hold a
random 50-100 % of tokens and padding after them (attention_mask 0), the
second half of the tokens in segment 1, as bench_step_time draws them; the
model computes every padded position, so FLOPs count the full length.

Mode: eager; compile = torch.compile(model) (default mode); max-autotune =
torch.compile(model, mode="max-autotune-no-cudagraphs"). The optimizer step
is not compiled in any mode. Each case runs --warmup untimed steps (the first
one compiles), then --iterations timed steps. On CUDA each step is bracketed
by CUDA events recorded on the stream, with no host synchronisation inside
the loop, so the figure is the GPU timeline, host gaps included.

Figures (one JSON line per case on stdout):
  ms_per_step       median over the timed steps
  ms_per_step_mean  (last end event - first start event) / iterations
  samples_per_s     batch / (ms_per_step / 1000)
  flops_per_sample  training FLOPs of one sample (formula below)
  achieved_tflops   flops_per_sample * samples_per_s / 1e12
  mfu               achieved_tflops / --peak-tflops (H100 SXM dense bf16: 989)
  peak_mem_gib      torch.cuda.max_memory_allocated() over the case
  first_step_s      wall time of the first warm-up step (compilation included)

FLOP formula (matmuls only; a multiply-add is 2 FLOPs; training = 3 x
forward, backward being twice the forward), per sample, with L layers,
hidden H, intermediate I, S tokens (ViT: S = (image/patch)^2 + 1):

  encoder  = L * (2*S*(4*H*H + 2*H*I) + 4*S*S*H)
             (Q, K, V, output projections and the MLP; Q.K^T and P.V)
  ViT      : + 2*(S-1)*(C*P*P)*H  patch projection, + 2*H*labels classifier
  BERT     : + 2*H*H pooler + 2*H*labels classifier (embeddings are lookups)
  training = 3 * forward
           = 6*S*L*(4H^2 + 2HI) + 12*L*S^2*H + 3*(patch/pooler + classifier)

i.e. 6 x (encoder matmul parameters) x tokens + 12 x layers x seq^2 x hidden.
ViT-B/16 at 224 px: 105.4 GFLOP per image (the usual 3 x 17.6 GMACs).

A case that runs out of memory (or fails otherwise) prints a JSON line with
"status": "oom" / "error" and the next case runs.

--profile DIR: after a case's timed steps, --profile-steps more steps run
under torch.profiler (CPU and CUDA activities); the op table (.ops.txt), its
JSON (.ops.json, the schema bench_step_time --profile writes) and a Chrome
trace (.trace.json) go to DIR/hf-<model>-b<batch>-<mode>.* (op_profile.py;
compare with compare_profiles.py). The row's "profile" field names the JSON.

    python3 benchmarks/gpu/hf_step_time.py --cases vit-b16:128,vit-b16:256 \
        --modes eager,compile --jsonl out.jsonl
    python3 benchmarks/gpu/hf_step_time.py --device cpu --tiny --precision fp32  # smoke
    python3 benchmarks/gpu/hf_step_time.py --cases vit-b16:128 --modes eager --profile prof/

Exit status: 0 every case ran (oom included), 1 some case failed with
another error or its profile failed ("profile_error"), 2 bad arguments, 3
torch or transformers cannot be imported.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

import op_profile  # benchmarks/gpu/op_profile.py, next to this script

# Our presets (runtime/model/presets.cc): family, sizes, dropout, default seq.
PRESETS = {
    "vit-b16": dict(family="vit", image_size=224, patch_size=16, num_channels=3, hidden_size=768,
                    num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "bert-base": dict(family="bert", vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                      hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1, seq=128),
    "bert-large": dict(family="bert", vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                       hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       intermediate_size=4096, hidden_dropout_prob=0.1,
                       attention_probs_dropout_prob=0.1, seq=384),
}
# --tiny: the same shapes shrunk for a CPU smoke run.
TINY = {
    "vit": dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=128),
    "bert": dict(vocab_size=100, max_position_embeddings=64, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=128, seq=16),
}
MODES = {"eager": None, "compile": "default", "max-autotune": "max-autotune-no-cudagraphs"}
DEFAULT_CASES = "vit-b16:128,vit-b16:256,bert-base:64,bert-large:32"
H100_SXM_BF16_DENSE_TFLOPS = 989.0
LAYER_NORM_EPS = 1e-12  # ours and the transformers default for both families


class CaseSpec:
    def __init__(self, model, batch, seq):
        self.model, self.batch, self.seq = model, batch, seq


def parse_cases(text, tiny):
    """'model:batch[:seq],...' -> [CaseSpec]; ValueError naming the bad entry."""
    cases = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) not in (2, 3) or parts[0] not in PRESETS:
            raise ValueError(f"--cases: '{entry}' is not MODEL:BATCH[:SEQ] with MODEL one of "
                             f"{', '.join(PRESETS)}")
        preset = PRESETS[parts[0]]
        try:
            batch = int(parts[1])
            seq = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(f"--cases: '{entry}': batch and seq must be integers") from None
        if batch < 1:
            raise ValueError(f"--cases: '{entry}': batch must be >= 1")
        if preset["family"] == "vit":
            if seq is not None:
                raise ValueError(f"--cases: '{entry}': a ViT's sequence follows from its image size")
        else:
            sizes = {**preset, **TINY["bert"]} if tiny else preset
            seq = seq if seq is not None else sizes["seq"]
            if not 2 <= seq <= sizes["max_position_embeddings"]:
                raise ValueError(f"--cases: '{entry}': seq must lie in [2, "
                                 f"{sizes['max_position_embeddings']}]")
        cases.append(CaseSpec(parts[0], batch, seq))
    if not cases:
        raise ValueError("--cases: no case given")
    return cases


def model_sizes(name, tiny):
    preset = dict(PRESETS[name])
    if tiny:
        preset.update(TINY[preset["family"]])
    return preset


def flops_per_sample(sizes, seq, labels):
    """Training FLOPs of one sample; the formula of the module docstring."""
    L, H, I = sizes["num_hidden_layers"], sizes["hidden_size"], sizes["intermediate_size"]
    S = seq
    forward = L * (2 * S * (4 * H * H + 2 * H * I) + 4 * S * S * H)
    if sizes["family"] == "vit":
        patch = sizes["patch_size"]
        forward += 2 * (S - 1) * (sizes["num_channels"] * patch * patch) * H
    else:
        forward += 2 * H * H  # pooler
    forward += 2 * H * labels
    return 3 * forward


def vit_seq(sizes):
    return (sizes["image_size"] // sizes["patch_size"]) ** 2 + 1


def build_model(torch, transformers, sizes, labels, attention, device):
    """A transformers *For*Classification model with our preset's shape."""
    fields = {k: v for k, v in sizes.items() if k not in ("family", "seq")}
    if sizes["family"] == "vit":
        config = transformers.ViTConfig(num_labels=labels, layer_norm_eps=LAYER_NORM_EPS, **fields)
        auto = transformers.AutoModelForImageClassification
    else:
        config = transformers.BertConfig(num_labels=labels, layer_norm_eps=LAYER_NORM_EPS, **fields)
        auto = transformers.AutoModelForSequenceClassification
    try:
        model = auto.from_config(config, attn_implementation=attention)
    except TypeError:  # a version whose from_config takes no attn_implementation
        model = auto.from_config(config)
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(attention)
    actual = getattr(model.config, "_attn_implementation", None)
    if isinstance(actual, str) and actual != attention:
        raise RuntimeError(f"asked transformers for attn_implementation={attention!r}, got {actual!r}")
    return model.to(device=device, dtype=torch.float32).train()


def make_batch(torch, sizes, batch, seq, labels, device, padding):
    """Random inputs and labels, created on the device."""
    generator = torch.Generator(device=device).manual_seed(1234)
    if sizes["family"] == "vit":
        size, channels = sizes["image_size"], sizes["num_channels"]
        inputs = {"pixel_values": torch.randn(batch, channels, size, size, device=device,
                                              generator=generator)}
    else:
        positions = torch.arange(seq, device=device).unsqueeze(0)
        if padding:
            low = max(1, seq // 2)
            lengths = torch.randint(low, seq + 1, (batch, 1), device=device, generator=generator)
        else:
            lengths = torch.full((batch, 1), seq, device=device)
        mask = (positions < lengths).long()
        ids = torch.randint(1, sizes["vocab_size"], (batch, seq), device=device,
                            generator=generator) * mask
        types = (positions >= lengths // 2).long() * mask
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    targets = torch.randint(0, labels, (batch,), device=device, generator=generator)
    return inputs, targets


def build_optimizer(torch, model, args, device):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel for all parameters on CUDA; PyTorch's default elsewhere.
    extra = {"fused": True} if device == "cuda" else {}
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, **extra)


def is_out_of_memory(error):
    """True when `error` or an exception it wraps is a device OOM."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError":
            return True
        error = error.__cause__ or error.__context__
    return False


class Timer:
    """Per-step times: CUDA events on CUDA, the host clock elsewhere."""

    def __init__(self, torch, device):
        self.torch = torch
        self.cuda = device == "cuda"
        self.marks = []

    def start(self):
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append([event, None])
        else:
            self.marks.append([time.perf_counter(), None])

    def stop(self):
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[-1][1] = event
        else:
            self.marks[-1][1] = time.perf_counter()

    def milliseconds(self):
        """(per-step ms, first start to last end ms); synchronises once."""
        if self.cuda:
            self.torch.cuda.synchronize()
            steps = [begin.elapsed_time(end) for begin, end in self.marks]
            span = self.marks[0][0].elapsed_time(self.marks[-1][1])
        else:
            steps = [(end - begin) * 1000.0 for begin, end in self.marks]
            span = (self.marks[-1][1] - self.marks[0][0]) * 1000.0
        return steps, span


def run_case(torch, transformers, args, case, mode, environment):
    sizes = model_sizes(case.model, args.tiny)
    vit = sizes["family"] == "vit"
    labels = args.vit_labels if vit else args.bert_labels
    seq = vit_seq(sizes) if vit else case.seq
    flops = flops_per_sample(sizes, seq, labels)
    row = dict(model=case.model + ("-tiny" if args.tiny else ""), batch=case.batch, seq=seq, mode=mode,
               precision=args.precision, attn_implementation="sdpa", labels=labels,
               padding=(not vit and args.padding), **environment)
    device = args.device
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        model = build_model(torch, transformers, sizes, labels, "sdpa", device)
        row["params"] = sum(p.numel() for p in model.parameters())
        optimizer = build_optimizer(torch, model, args, device)
        inputs, targets = make_batch(torch, sizes, case.batch, seq, labels, device, args.padding)
        forward = model if MODES[mode] is None else torch.compile(model, mode=MODES[mode])
        parameters = list(model.parameters())
        autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
        cross_entropy = torch.nn.functional.cross_entropy

        def step():
            optimizer.zero_grad(set_to_none=True)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device, dtype=autocast_dtype):
                    logits = forward(**inputs).logits
            else:
                logits = forward(**inputs).logits
            loss = cross_entropy(logits.float(), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, args.clip_norm)
            optimizer.step()

        started = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        row["first_step_s"] = round(time.perf_counter() - started, 3)
        for _ in range(max(0, args.warmup - 1)):
            step()
        timer = Timer(torch, device)
        for _ in range(args.iterations):
            timer.start()
            step()
            timer.stop()
        steps, span = timer.milliseconds()
        median = statistics.median(steps)
        samples_per_s = case.batch * 1000.0 / median
        achieved = flops * samples_per_s / 1e12
        row.update(
            status="ok",
            ms_per_step=round(median, 3),
            ms_per_step_min=round(min(steps), 3),
            ms_per_step_max=round(max(steps), 3),
            ms_per_step_mean=round(span / len(steps), 3),
            samples_per_s=round(samples_per_s, 2),
            tokens_per_s=round(samples_per_s * seq, 1),
            flops_per_sample=flops,
            achieved_tflops=round(achieved, 2),
            mfu=(round(achieved / args.peak_tflops, 4) if args.peak_tflops else None),
            peak_mem_gib=(round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None),
            warmup=args.warmup, iterations=args.iterations)
    except Exception as error:  # one case fails; the others still run
        return failed_row(torch, row, error, flops, cuda)
    if not args.profile:
        return row, True
    # After the timed steps, so their figures carry no profiler overhead.
    prefix = os.path.join(args.profile, f"hf-{row['model']}-b{case.batch}-{mode}")
    try:
        op_profile.profile_step(torch, step, args.profile_steps, device, prefix, source="pytorch",
                                label=f"transformers {row['model']} batch {case.batch} "
                                      f"{args.precision} {mode}")
        row["profile"] = prefix + ".ops.json"
        return row, True
    except Exception as error:  # the timings stand; the profile is reported missing
        lines = str(error).strip().splitlines()
        row["profile_error"] = f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
        return row, False


def failed_row(torch, row, error, flops, cuda):
    """The case's row marked oom/error; (row, acceptable) with acceptable = oom."""
    oom = is_out_of_memory(error)
    lines = str(error).strip().splitlines()
    row.update(status="oom" if oom else "error",
               error=f"{type(error).__name__}: {lines[0][:300] if lines else ''}",
               flops_per_sample=flops,
               peak_mem_gib=(round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None))
    return row, oom


def release(torch, device):
    """Frees what the last case left: its tensors, compiled graphs, cached blocks."""
    gc.collect()
    dynamo = getattr(torch, "_dynamo", None)
    if dynamo is not None and hasattr(dynamo, "reset"):
        dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help=f"MODEL:BATCH[:SEQ],... with MODEL in {', '.join(PRESETS)} "
                             f"(default {DEFAULT_CASES}; BERT seq defaults: base 128, large 384)")
    parser.add_argument("--modes", default="eager,compile",
                        help=f"comma-separated, of {', '.join(MODES)} (default eager,compile)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="bf16: autocast to bfloat16 over fp32 weights; fp32: no autocast")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (>= 1; the first compiles)")
    parser.add_argument("--iterations", type=int, default=30, help="timed steps")
    parser.add_argument("--vit-labels", type=int, default=1000, help="ViT classes (ImageNet: 1000)")
    parser.add_argument("--bert-labels", type=int, default=2, help="BERT classes")
    parser.add_argument("--no-padding", dest="padding", action="store_false",
                        help="BERT rows all tokens (default: 50-100%% tokens, then padding)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"peak for MFU (default {H100_SXM_BF16_DENSE_TFLOPS:g} on cuda "
                             "with bf16, none otherwise)")
    parser.add_argument("--tiny", action="store_true", help="shrunk models for a smoke run")
    parser.add_argument("--jsonl", help="also append every JSON line to this file")
    parser.add_argument("--profile", metavar="DIR",
                        help="after each case's timed steps, profile --profile-steps more steps "
                             "with torch.profiler; op table, JSON and Chrome trace go to DIR")
    parser.add_argument("--profile-steps", type=int, default=5,
                        help="steps the op profile sums over (default 5)")
    args = parser.parse_args(argv)
    try:
        args.case_list = parse_cases(args.cases, args.tiny)
    except ValueError as error:
        parser.error(str(error))
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.mode_list if m not in MODES]
    if not args.mode_list or unknown:
        parser.error(f"--modes: expected some of {', '.join(MODES)}, got '{args.modes}'")
    if args.warmup < 1 or args.iterations < 1:
        parser.error("--warmup and --iterations must be >= 1")
    if args.vit_labels < 1 or args.bert_labels < 1:
        parser.error("--vit-labels and --bert-labels must be >= 1")
    if args.profile_steps < 1:
        parser.error("--profile-steps must be >= 1")
    if args.profile:
        try:
            os.makedirs(args.profile, exist_ok=True)
        except OSError as error:
            parser.error(f"--profile: cannot create directory '{args.profile}': {error.strerror}")
    if args.peak_tflops is None and args.device == "cuda" and args.precision == "bf16":
        args.peak_tflops = H100_SXM_BF16_DENSE_TFLOPS
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
        import transformers
    except ImportError as error:
        print(f"hf_step_time: {error} (interpreter {sys.executable}); run it with a Python that has "
              "torch and transformers, e.g. /opt/torch/.venv/bin/python3 on the GPU machine",
              file=sys.stderr)
        return 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("hf_step_time: --device cuda but this PyTorch sees no CUDA device "
              f"(torch {torch.__version__}); use --device cpu for a smoke run", file=sys.stderr)
        return 2
    environment = dict(device=args.device, torch=torch.__version__,
                       transformers=transformers.__version__)
    if args.device == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(0)
    print(f"hf_step_time: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{environment.get('gpu', 'cpu')}; {len(args.case_list)} cases x {len(args.mode_list)} modes",
          file=sys.stderr, flush=True)

    failed = 0
    sink = open(args.jsonl, "a", encoding="utf-8") if args.jsonl else None
    try:
        for case in args.case_list:
            for mode in args.mode_list:
                row, acceptable = run_case(torch, transformers, args, case, mode, environment)
                release(torch, args.device)
                failed += 0 if acceptable else 1
                line = json.dumps(row)
                print(line, flush=True)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
                summary = (f"{row['ms_per_step']:.2f} ms/step, {row['samples_per_s']:.1f} samples/s, "
                           f"MFU {row['mfu'] if row['mfu'] is not None else '-'}"
                           if row["status"] == "ok" else f"{row['status']}: {row.get('error', '')}")
                print(f"hf_step_time: {row['model']} batch {row['batch']} seq {row['seq']} {mode}: "
                      f"{summary}", file=sys.stderr, flush=True)
                if "profile" in row or "profile_error" in row:
                    print(f"hf_step_time: op profile: {row.get('profile') or row['profile_error']}",
                          file=sys.stderr, flush=True)
    finally:
        if sink:
            sink.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
