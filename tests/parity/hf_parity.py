#!/usr/bin/env python3
"""Parity of pipetransformer's ViT and BERT with Hugging Face transformers.

Two directions, for ViTForImageClassification and BertForSequenceClassification,
tiny (2 layers, hidden 64) but otherwise with the library's defaults:

  hf->pipet  a random model saved with save_pretrained (safetensors) is loaded
             by the engine (pipet_logits --model: the --init-from code path)
             and gives the same logits as transformers, fp32, for attention
             implementations "eager" and "sdpa" on the transformers side.
  pipet->hf  a model the engine builds and exports (export_hf_model) loads
             with from_pretrained without missing, unexpected or mismatched
             keys and gives the same logits.

Each row compares logits on one device (cpu, and cuda when both this PyTorch
and the pipet_logits build can use one; TF32 is off on both sides) and passes
when max |ours - theirs| <= --tolerance (1e-4). Weights are widened from the
library's tiny initialisation so every tensor moves the logits, and BERT's
inputs carry padding and both token types.

    hf_parity.py --pipet-logits BUILD/tests/parity/pipet_logits [--devices auto]

--backend reference runs the same checks against the PyTorch eager reference
benchmarks/reference/torch_models.py instead of transformers (only torch
needed), which tests pipet_logits and this script where transformers is absent.

Exit status: 0 every row passed, 1 a row failed, 2 bad arguments, 77 torch or
transformers cannot be imported (CTest reports the test as skipped).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

SKIP = 77
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The tiny architectures: Hugging Face defaults except for the sizes.
VIT_SIZES = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=128)
BERT_SIZES = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=64, type_vocab_size=2)
NUM_LABELS = {"vit": 10, "bert": 3}
# Logits below this carry no information; the widened weights give O(1).
MIN_LOGIT_SCALE = 0.05


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    return SKIP


def spread_parameters(model, torch):
    """Widens every weight (the same rule as pipet_logits --spread)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            norm_weight = ("LayerNorm." in name or "layernorm" in name) and name.endswith(".weight")
            noise = 0.2 * torch.randn_like(parameter)
            parameter.copy_(1.0 + noise if norm_weight else noise)


class TransformersBackend:
    """Models from the transformers library."""

    def __init__(self, torch, transformers):
        self.torch = torch
        self.tf = transformers
        self.name = f"transformers {transformers.__version__}"
        self.implementations = ("eager", "sdpa")

    def _class(self, family):
        return self.tf.ViTForImageClassification if family == "vit" else \
            self.tf.BertForSequenceClassification

    def save_random(self, family, directory, seed):
        if family == "vit":
            config = self.tf.ViTConfig(num_labels=NUM_LABELS["vit"], **VIT_SIZES)
        else:
            config = self.tf.BertConfig(num_labels=NUM_LABELS["bert"], **BERT_SIZES)
        self.torch.manual_seed(seed)
        model = self._class(family)(config)
        spread_parameters(model, self.torch)
        try:
            model.save_pretrained(directory, safe_serialization=True)
        except TypeError:  # versions where safetensors is the only format
            model.save_pretrained(directory)
        if not os.path.exists(os.path.join(directory, "model.safetensors")):
            raise RuntimeError(f"save_pretrained wrote no model.safetensors in {directory}: "
                               f"{sorted(os.listdir(directory))}")

    def load(self, family, directory, implementation, device):
        model, info = self._class(family).from_pretrained(
            directory, attn_implementation=implementation, output_loading_info=True)
        problems = []
        # missing_keys, unexpected_keys, mismatched_keys, error_msgs, and any
        # other list a newer version adds: all must be empty.
        items = info.items() if isinstance(info, dict) else vars(info).items()
        for key, values in sorted(items):
            if values and not isinstance(values, (str, bytes)) and hasattr(values, "__iter__"):
                shown = sorted(str(v) for v in values)
                problems.append(f"{key}: {', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}")
        actual = getattr(model.config, "_attn_implementation", None)
        if isinstance(actual, str) and actual != implementation:
            problems.append(f"asked for attn_implementation={implementation!r}, the model uses {actual!r}")
        model = model.to(device=device, dtype=self.torch.float32).eval()
        return model, problems

    def logits(self, model, family, inputs):
        with self.torch.no_grad():
            if family == "vit":
                output = model(pixel_values=inputs["pixel_values"])
            else:
                output = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                               token_type_ids=inputs["token_type_ids"])
        return output.logits.float()


class ReferenceBackend:
    """benchmarks/reference/torch_models.py: HF-named modules, plain torch."""

    def __init__(self, torch, torch_models):
        self.torch = torch
        self.tm = torch_models
        self.name = "torch_models.py (PyTorch eager reference)"
        self.implementations = ("eager",)

    @staticmethod
    def config(family):
        labels = {str(i): f"LABEL_{i}" for i in range(NUM_LABELS[family])}
        if family == "vit":
            return dict(architectures=["ViTForImageClassification"], model_type="vit",
                        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        layer_norm_eps=1e-12, initializer_range=0.02, qkv_bias=True,
                        id2label=labels, **VIT_SIZES)
        return dict(architectures=["BertForSequenceClassification"], model_type="bert",
                    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                    layer_norm_eps=1e-12, initializer_range=0.02, pad_token_id=0,
                    position_embedding_type="absolute", classifier_dropout=None,
                    id2label=labels, **BERT_SIZES)

    def save_random(self, family, directory, seed):
        config_path = os.path.join(directory, "config.json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(self.config(family), f, indent=2)
        self.torch.manual_seed(seed)
        model = self.tm.build_model(family, config_path)
        spread_parameters(model, self.torch)
        self.tm.save_safetensors(os.path.join(directory, "model.safetensors"), model.state_dict())

    def load(self, family, directory, implementation, device):
        model = self.tm.build_model(family, os.path.join(directory, "config.json"))
        weights = self.tm.load_safetensors(os.path.join(directory, "model.safetensors"))
        expected = model.state_dict()
        problems = []
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        mismatched = sorted(k for k in set(expected) & set(weights)
                            if tuple(expected[k].shape) != tuple(weights[k].shape))
        for key, values in (("missing_keys", missing), ("unexpected_keys", unexpected),
                            ("mismatched_keys", mismatched)):
            if values:
                problems.append(f"{key}: {', '.join(values[:5])}{', ...' if len(values) > 5 else ''}")
        if not problems:
            model.load_state_dict(weights, strict=True)
        return model.to(device).eval(), problems

    def logits(self, model, family, inputs):
        return self.tm.compute_logits(model, family, inputs).float()


def make_inputs(torch, family, config, seed):
    """CPU inputs for the model of `config` (a config.json dict)."""
    generator = torch.Generator().manual_seed(seed)
    if family == "vit":
        size, channels = config["image_size"], config.get("num_channels", 3)
        return {"pixel_values": torch.randn(3, channels, size, size, generator=generator)}
    batch, seq = 4, min(16, config["max_position_embeddings"])
    lengths = torch.tensor([seq, seq * 3 // 4, seq // 2, 2])  # rows 1-3 padded
    positions = torch.arange(seq).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    ids = torch.randint(1, config["vocab_size"], (batch, seq), generator=generator) * mask
    # Segment B is the second half of each row's tokens.
    types = ((positions >= (lengths // 2).unsqueeze(1)).long() * mask)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class Runner:
    def __init__(self, args, backend, torch, io):
        self.args = args
        self.backend = backend
        self.torch = torch
        self.io = io  # torch_models: load_safetensors / save_safetensors
        self.rows = []

    def pipet(self, *arguments):
        command = [self.args.pipet_logits, *arguments]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pipet_logits exited {result.returncode}: {' '.join(command)}\n"
                               f"{result.stderr.strip()}")
        return result.stdout

    def add(self, family, direction, device, implementation, diff, scale, problems):
        if diff is not None and diff > self.args.tolerance:
            problems = problems + [f"max |diff| {diff:.3e} exceeds the tolerance {self.args.tolerance:g}"]
        ok = not problems and diff is not None
        self.rows.append(dict(family=family, direction=direction, device=device,
                              attention=implementation, diff=diff, scale=scale,
                              result="PASS" if ok else "FAIL", problems=problems))

    def compare(self, family, direction, directory, device, inputs, ours):
        for implementation in self.backend.implementations:
            problems, diff, scale = [], None, None
            try:
                model, problems = self.backend.load(family, directory, implementation, device)
                theirs = self.backend.logits(
                    model, family, {k: v.to(device) for k, v in inputs.items()}).cpu()
                if tuple(theirs.shape) != tuple(ours.shape):
                    problems.append(f"logits shape {tuple(ours.shape)} (ours) vs "
                                    f"{tuple(theirs.shape)} ({self.backend.name})")
                else:
                    diff = (ours - theirs).abs().max().item()
                    scale = theirs.abs().max().item()
                    if scale < MIN_LOGIT_SCALE:
                        problems.append(f"logits too small to compare (max |logit| {scale:.3g})")
            except Exception as error:  # a row fails; the other rows still run
                problems.append(f"{type(error).__name__}: {error}")
            self.add(family, direction, device, implementation, diff, scale, problems)

    def family(self, family, devices, work):
        hf_dir = os.path.join(work, f"{family}-saved")
        ours_dir = os.path.join(work, f"{family}-exported")
        os.makedirs(hf_dir, exist_ok=True)
        self.backend.save_random(family, hf_dir, seed=1234)
        with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        inputs = make_inputs(self.torch, family, config, seed=99)
        inputs_path = os.path.join(work, f"{family}-inputs.safetensors")
        self.io.save_safetensors(inputs_path, inputs)
        for device in devices:
            loaded_out = os.path.join(work, f"{family}-{device}-loaded.safetensors")
            exported_out = os.path.join(work, f"{family}-{device}-exported.safetensors")
            for direction, arguments, out, directory in (
                    ("hf->pipet", ["--model", hf_dir], loaded_out, hf_dir),
                    ("pipet->hf", ["--new-model", os.path.join(hf_dir, "config.json"), "--seed", "77",
                                   "--spread", "--export", ours_dir], exported_out, ours_dir)):
                try:
                    self.pipet(*arguments, "--inputs", inputs_path, "--out", out, "--device", device)
                    ours = self.io.load_safetensors(out)["logits"].float()
                except Exception as error:
                    for implementation in self.backend.implementations:
                        self.add(family, direction, device, implementation, None, None,
                                 [f"{type(error).__name__}: {error}"])
                    continue
                self.compare(family, direction, directory, device, inputs, ours)

    def report(self):
        header = ("family", "direction", "device", "attention", "max |diff|", "max |logit|", "result")
        table = [header]
        for row in self.rows:
            table.append((row["family"], row["direction"], row["device"], row["attention"],
                          "-" if row["diff"] is None else f"{row['diff']:.3e}",
                          "-" if row["scale"] is None else f"{row['scale']:.3f}", row["result"]))
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        for row in self.rows:
            for problem in row["problems"]:
                print(f"  {row['family']} {row['direction']} {row['device']} {row['attention']}: {problem}")
        failed = sum(row["result"] == "FAIL" for row in self.rows)
        print(f"{len(self.rows) - failed} passed, {failed} failed")
        return 1 if failed else 0


def choose_devices(requested, torch, pipet_logits):
    """The devices to compare on, and notes on those left out."""
    info = json.loads(subprocess.run([pipet_logits, "--build-info"], capture_output=True, text=True,
                                     check=True).stdout)
    cuda_reason = None
    if not torch.cuda.is_available():
        cuda_reason = "this PyTorch sees no CUDA device"
    elif not info.get("cuda_built"):
        cuda_reason = "pipet_logits was built without PIPET_WITH_CUDA"
    elif info.get("cuda_devices", 0) < 1:
        cuda_reason = "pipet_logits sees no CUDA device"
    if requested == "auto":
        return (["cpu"] if cuda_reason else ["cpu", "cuda"]), ([f"cuda skipped: {cuda_reason}"]
                                                             if cuda_reason else [])
    devices = [d.strip() for d in requested.split(",") if d.strip()]
    for device in devices:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"--devices: '{device}' is not cpu or cuda")
        if device == "cuda" and cuda_reason:
            raise ValueError(f"--devices cuda: {cuda_reason}")
    return devices, []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipet-logits", required=True, help="path of the pipet_logits program")
    parser.add_argument("--backend", choices=("transformers", "reference"), default="transformers")
    parser.add_argument("--devices", default="auto",
                        help="auto (cpu, plus cuda when usable), or a list: cpu,cuda")
    parser.add_argument("--families", default="vit,bert", help="vit, bert or both (comma-separated)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest max |diff| accepted")
    parser.add_argument("--keep", help="work in this directory and keep it (default: a temp dir)")
    args = parser.parse_args(argv)

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if not families or any(f not in ("vit", "bert") for f in families):
        parser.error(f"--families: expected vit and/or bert, got '{args.families}'")
    if not os.access(args.pipet_logits, os.X_OK):
        parser.error(f"--pipet-logits: {args.pipet_logits} is not an executable file")

    try:
        import torch
    except ImportError as error:
        return skip(f"torch cannot be imported by {sys.executable} ({error})")
    sys.path.insert(0, os.path.join(REPO, "benchmarks", "reference"))
    import torch_models  # safetensors I/O and the reference models; needs only torch

    if args.backend == "transformers":
        try:
            import transformers
        except ImportError as error:
            return skip(f"transformers cannot be imported by {sys.executable} ({error})")
        backend = TransformersBackend(torch, transformers)
    else:
        backend = ReferenceBackend(torch, torch_models)

    try:
        devices, notes = choose_devices(args.devices, torch, args.pipet_logits)
    except (ValueError, subprocess.CalledProcessError, json.JSONDecodeError) as error:
        print(f"hf_parity: {error}", file=sys.stderr)
        return 2
    if "cuda" in devices:
        # fp32 parity: no TF32 in matmuls or convolutions (pipet_logits does the same).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    print(f"parity: pipetransformer vs {backend.name}, torch {torch.__version__}, "
          f"devices {','.join(devices)}, tolerance {args.tolerance:g}", flush=True)
    for note in notes:
        print(f"note: {note}", flush=True)
    runner = Runner(args, backend, torch, torch_models)

    def run_all(work):
        for family in families:
            try:
                runner.family(family, devices, work)
            except Exception as error:  # setup failed (saving, inputs): one row says why
                runner.add(family, "setup", "-", "-", None, None, [f"{type(error).__name__}: {error}"])

    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        run_all(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="hf_parity_") as work:
            run_all(work)
    return runner.report()


if __name__ == "__main__":
    sys.exit(main())
