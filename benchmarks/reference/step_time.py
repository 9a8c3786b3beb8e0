#!/usr/bin/python3
"""PyTorch eager side of bench_step_time: one training step, timed.

Loads the model the C++ benchmark saved (config.json + model.safetensors with
Hugging Face names, built by torch_models.py), the same batch and the same
optimizer settings, runs the correctness steps and then the timed steps, and
prints one JSON object on stdout:

    {"torch_version": "1.13.1", "threads": 1, "check_losses": [...],
     "check_grad_norms": [...], "samples_ms": [...], "median_ms": ...,
     "min_ms": ..., "max_ms": ...,
     "phases_ms": {"forward_loss": [...], "backward": [...], ...}}

(phases_ms: each part's milliseconds in every timed step.)

The step is the one the engine's trainer runs, written as PyTorch users write
it: forward, cross-entropy, backward, clip_grad_norm_(max_norm), AdamW step
(no weight decay for 1-D parameters), zero_grad(). Everything is PyTorch's
default (single-tensor AdamW, zero_grad keeping the gradient buffers).

Correctness steps run with dropout off (model.eval()) so both implementations
compute the same numbers; timed steps run in training mode.

Thread counts must be fixed before torch starts its pools, so the caller sets
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS in the environment;
--threads is also passed to torch.set_num_threads.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402  (needs the path above)


def build_optimizer(model, lr, betas, eps, weight_decay):
    """AdamW with the Hugging Face Trainer's grouping: no decay for 1-D parameters."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


PHASES = ("forward_loss", "backward", "clip", "optimizer_zero_grad")


def make_step(model, optimizer, family, batch, clip_norm):
    """A closure running one full training step; returns (loss, grad_norm).

    With a `phases` dict of lists, it appends each part's milliseconds, the
    same parts bench_step_time times on its side.
    """
    parameters = list(model.parameters())
    labels = batch["labels"]
    if family == "vit":
        inputs = (batch["pixel_values"],)
    else:
        inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    def step(phases=None):
        t0 = time.perf_counter()
        logits = model(*inputs)
        loss = F.cross_entropy(logits, labels)
        loss_value = loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t4 = time.perf_counter()
        if phases is not None:
            for name, begin, end in zip(PHASES, (t0, t1, t2, t3), (t1, t2, t3, t4)):
                phases[name].append((end - begin) * 1e3)
        return loss_value, grad_norm.item()

    return step


def require_batch(batch, family, path):
    needed = ["labels"] + (["pixel_values"] if family == "vit"
                           else ["input_ids", "attention_mask", "token_type_ids"])
    missing = [name for name in needed if name not in batch]
    if missing:
        raise SystemExit(f"{path}: missing tensors {', '.join(missing)} for a {family} batch")


def main(argv=None):
    parser = argparse.ArgumentParser(description="PyTorch eager training-step timing")
    parser.add_argument("--family", choices=sorted(torch_models.MODEL_CLASSES), required=True)
    parser.add_argument("--config", required=True, help="Hugging Face config.json")
    parser.add_argument("--weights", required=True, help="initial weights (safetensors, HF names)")
    parser.add_argument("--batch", required=True, help="safetensors with the inputs and labels")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (default 3)")
    parser.add_argument("--iterations", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--check-steps", type=int, default=2,
                        help="dropout-off steps whose losses are reported (default 2)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.999)
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or args.warmup < 0 or args.check_steps < 1:
        raise SystemExit("--threads, --iterations and --check-steps must be >= 1, --warmup >= 0")

    torch.set_num_threads(args.threads)
    model = torch_models.build_model(args.family, args.config, args.weights)
    batch = torch_models.load_safetensors(args.batch)
    require_batch(batch, args.family, args.batch)
    optimizer = build_optimizer(model, args.lr, (args.beta1, args.beta2), args.eps,
                                args.weight_decay)
    step = make_step(model, optimizer, args.family, batch, args.clip_norm)

    model.eval()  # dropout off: both sides compute the same losses
    check_losses, check_grad_norms = [], []
    for _ in range(args.check_steps):
        loss, grad_norm = step()
        check_losses.append(loss)
        check_grad_norms.append(grad_norm)

    model.train()
    for _ in range(args.warmup):
        step()
    samples_ms = []
    phases = {name: [] for name in PHASES}
    for _ in range(args.iterations):
        start = time.perf_counter()
        step(phases)
        samples_ms.append((time.perf_counter() - start) * 1e3)

    result = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "check_losses": check_losses,
        "check_grad_norms": check_grad_norms,
        "samples_ms": samples_ms,
        "median_ms": statistics.median(samples_ms),
        "min_ms": min(samples_ms),
        "max_ms": max(samples_ms),
        "phases_ms": phases,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
