#!/usr/bin/python3
"""Independent safetensors reader/writer, written from the format spec with
torch only, to cross-check the C++ implementation (test_safetensors.cc).

usage: safetensors_reference.py OURS THEIRS
  Reads OURS (written by pipet::save_safetensors from reference_tensors() and
  the metadata below) and checks every byte-level rule of the format, then
  writes THEIRS from the same tensors, laid out differently (reverse order,
  unpadded header, so the data is misaligned) for the C++ side to read.
Exit status: 0 ok, 1 mismatch (details on stdout), 77 torch is missing.
"""
import json
import struct
import sys

try:
    import torch
except ImportError:
    print("torch is not importable by", sys.executable)
    sys.exit(77)

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
    "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}

OURS_METADATA = {"format": "pt", "origin": "pipet"}
THEIRS_METADATA = {"writer": "python reference", "note": "größe ✓"}


def reference_tensors():
    """Must match reference_tensors() in test_safetensors.cc value for value."""
    return {
        "f64": torch.arange(6, dtype=torch.float64).reshape(2, 3) * 0.125 - 0.25,
        "f32": ((torch.arange(6, dtype=torch.float32) - 2.5) / 4).reshape(3, 2),
        "f16": (torch.arange(8, dtype=torch.float32) * 0.5 - 2).to(torch.float16).reshape(2, 2, 2),
        "bf16": (torch.arange(4, dtype=torch.float32) * 1.5 - 3).to(torch.bfloat16),
        "i64": torch.arange(5, dtype=torch.int64) * (1 << 40) - 3,
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3) * 100000 - 250000,
        "i16": torch.arange(4, dtype=torch.int16) * 1000 - 1500,
        "i8": torch.arange(7, dtype=torch.int8) * 20 - 60,
        "u8": torch.arange(5, dtype=torch.uint8) * 50,
        "bool": torch.arange(5) % 2 == 0,
        "scalar": torch.tensor(3.25, dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "größe": torch.tensor([7, 8, 9], dtype=torch.uint8),
    }


def tensor_bytes(t):
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).tolist())


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    problems = []
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8 != 0:
        problems.append(f"header length {n} is not a multiple of 8")
    raw_header = blob[8:8 + n]
    header = json.loads(raw_header.decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", None)
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name)
                   for name, info in header.items())
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            problems.append(f"tensor {name!r} begins at {begin}, expected {cursor}")
        cursor = end
    if cursor != len(data):
        problems.append(f"tensors cover {cursor} of {len(data)} data bytes")
    tensors = {}
    for name, info in header.items():
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = info["shape"]
        chunk = data[begin:end]
        if len(chunk) == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(chunk), dtype=dtype).reshape(shape)
    return tensors, metadata, problems, [name for _, _, name in spans]


def write(path, tensors, metadata):
    # Reverse name order, compact JSON plus one space: the header length is
    # odd, so the data section (and every tensor) is misaligned on purpose.
    header = {"__metadata__": metadata}
    payload = b""
    for name in sorted(tensors, reverse=True):
        t = tensors[name]
        chunk = tensor_bytes(t)
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [len(payload), len(payload) + len(chunk)]}
        payload += chunk
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(text) % 2 == 0:
        text += b" "
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + payload)


def main():
    ours, theirs = sys.argv[1], sys.argv[2]
    expected = reference_tensors()
    tensors, metadata, problems, order = read(ours)
    if metadata != OURS_METADATA:
        problems.append(f"metadata {metadata!r} != {OURS_METADATA!r}")
    if set(tensors) != set(expected):
        problems.append(f"names {sorted(tensors)} != {sorted(expected)}")
    if order != list(expected):
        problems.append(f"data order {order} != insertion order {list(expected)}")
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None:
            continue
        if got.dtype != want.dtype or list(got.shape) != list(want.shape) or not torch.equal(got, want):
            problems.append(f"tensor {name!r}: got {got!r}, want {want!r}")
    write(theirs, expected, THEIRS_METADATA)
    for p in problems:
        print("MISMATCH:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
