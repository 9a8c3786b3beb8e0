#!/usr/bin/env python3
"""Fashion-MNIST (Debian's dataset-fashion-mnist) in the CIFAR-10 binary layout.

The engine reads CIFAR-10's binary version (data.dataset=cifar10): records of
1 label byte + 3072 pixel bytes (32x32, red plane, green plane, blue plane),
five training files and one test file. Fashion-MNIST's 28x28 grey images are
centred on a 32x32 black canvas and repeated in the three planes; labels stay
0-9 and batches.meta.txt holds the class names.

  scripts/fashion_mnist_to_cifar.py --out data/fashion
  scripts/fashion_mnist_to_cifar.py --out data/fashion-a --classes 0,1,2,3,4 \\
      --train-samples 12000 --eval-samples 2000 --seed 1

--classes keeps those labels only (a pretraining or fine-tuning half);
--train-samples / --eval-samples take a seeded random subset of what is left.
Idempotent: the output is rewritten only when the request (recorded in
fashion-mnist.json next to the files) changes. Exit 2 on bad arguments, 3 when
the source files are missing or malformed.
"""

import argparse
import gzip
import json
import os
import random
import struct
import sys

SOURCE = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SIDE, PAD = 28, 2
PIXELS = 32 * 32


def fail(code, message):
    print(f"fashion_mnist_to_cifar: error: {message}", file=sys.stderr)
    sys.exit(code)


def read_idx(path, magic, dims):
    """The payload of an idx file with `magic` and `dims` dimensions, and its sizes."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(3, f"cannot read {path}: {e} (install dataset-fashion-mnist: scripts/setup.sh)")
    header = 4 + 4 * dims
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        fail(3, f"{path} is not an idx file with magic {magic:#x}")
    sizes = struct.unpack(">" + "I" * dims, data[4:header])
    count = 1
    for s in sizes:
        count *= s
    if len(data) != header + count:
        fail(3, f"{path} holds {len(data) - header} bytes of data, its header says {count}")
    return data[header:], sizes


def load(split):
    prefix = "train" if split == "train" else "t10k"
    images, isizes = read_idx(os.path.join(SOURCE, f"{prefix}-images-idx3-ubyte.gz"), 0x803, 3)
    labels, lsizes = read_idx(os.path.join(SOURCE, f"{prefix}-labels-idx1-ubyte.gz"), 0x801, 1)
    if isizes[1:] != (SIDE, SIDE) or isizes[0] != lsizes[0]:
        fail(3, f"{split}: {isizes} images for {lsizes[0]} labels; expected n x {SIDE} x {SIDE}")
    return images, labels


def record(images, labels, i):
    plane = bytearray(PIXELS)
    image = images[i * SIDE * SIDE:(i + 1) * SIDE * SIDE]
    for row in range(SIDE):
        start = (row + PAD) * 32 + PAD
        plane[start:start + SIDE] = image[row * SIDE:(row + 1) * SIDE]
    return bytes([labels[i]]) + bytes(plane) * 3


def pick(labels, classes, count, rng, what):
    keep = [i for i in range(len(labels)) if labels[i] in classes]
    if count:
        if count > len(keep):
            fail(2, f"--{what}-samples {count}: only {len(keep)} {what} images have the classes asked for")
        keep = sorted(rng.sample(keep, count))
    return keep


def write_atomic(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="labels to keep, comma-separated")
    p.add_argument("--train-samples", type=int, default=0, help="random subset of the training images (0 = all)")
    p.add_argument("--eval-samples", type=int, default=0, help="random subset of the test images (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets")
    args = p.parse_args()
    try:
        classes = sorted({int(c) for c in args.classes.split(",") if c.strip()})
    except ValueError:
        fail(2, f"--classes '{args.classes}': not comma-separated integers")
    if not classes or any(c < 0 or c > 9 for c in classes):
        fail(2, f"--classes '{args.classes}': labels are 0-9")
    if args.train_samples < 0 or args.eval_samples < 0:
        fail(2, "--train-samples and --eval-samples must be >= 0")

    request = {"source": SOURCE, "classes": classes, "train_samples": args.train_samples,
               "eval_samples": args.eval_samples, "seed": args.seed, "layout": "cifar-10-binary, 28 px centred in 32"}
    stamp = os.path.join(args.out, "fashion-mnist.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == request:
                print(f"fashion_mnist_to_cifar: {args.out} is up to date")
                return
    rng = random.Random(args.seed)
    train_images, train_labels = load("train")
    test_images, test_labels = load("test")
    train = pick(train_labels, classes, args.train_samples, rng, "train")
    test = pick(test_labels, classes, args.eval_samples, rng, "eval")
    os.makedirs(args.out, exist_ok=True)
    # Five training files, as CIFAR-10 has (the reader wants all five).
    for b in range(5):
        part = train[b * len(train) // 5:(b + 1) * len(train) // 5]
        write_atomic(os.path.join(args.out, f"data_batch_{b + 1}.bin"),
                     b"".join(record(train_images, train_labels, i) for i in part))
    write_atomic(os.path.join(args.out, "test_batch.bin"),
                 b"".join(record(test_images, test_labels, i) for i in test))
    write_atomic(os.path.join(args.out, "batches.meta.txt"), ("\n".join(CLASSES) + "\n").encode())
    write_atomic(stamp, (json.dumps(request, indent=2) + "\n").encode())
    print(f"fashion_mnist_to_cifar: {args.out}: {len(train)} train, {len(test)} test images of classes {classes}")


if __name__ == "__main__":
    main()
