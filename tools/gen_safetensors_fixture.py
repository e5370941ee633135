#!/usr/bin/env python3
"""tools/gen_safetensors_fixture.py — writes the safetensors fixtures of tests/test_safetensors.c
with the Python `safetensors` library (pip install safetensors numpy; torch for bf16):

  st_small.safetensors            f32 2-D, bf16 1-D, f16 2-D, i64 1-D, with __metadata__
  st_sharded-0000{1,2}-of-00002.safetensors + st_sharded.safetensors.index.json
  st_expected.txt                 per tensor: file name dtype ndim dims... values (%.9g of f32)
  st_written_by_python.safetensors  the tensor set the C test builds (see python_written_set());
                                  the C writer must produce the same bytes

Fixed seeds, so reruns write identical files. Run from the repository root:
  python3 tools/gen_safetensors_fixture.py [out_dir]
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures")
DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
               torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8"}


def small_set():
    g = torch.Generator().manual_seed(1234)
    return {
        "weight": torch.randn(3, 4, generator=g),
        "bias_bf16": torch.randn(5, generator=g).to(torch.bfloat16),
        "half": (torch.rand(2, 3, generator=g) * 100 - 50).to(torch.float16),
        "steps": torch.tensor([-3, 0, 7, 1 << 40], dtype=torch.int64),
    }


def sharded_sets():
    g = torch.Generator().manual_seed(99)
    return [
        {"layers.0.w": torch.randn(2, 2, generator=g), "layers.0.b": torch.randn(2, generator=g)},
        {"layers.1.w": torch.randn(2, 2, generator=g).to(torch.bfloat16),
         "head": torch.randn(3, generator=g)},
    ]


def python_written_set():
    """Mirrors build_python_set() of tests/test_safetensors.c (values exact in every dtype)."""
    return {
        "a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1,
        "a.bias": torch.arange(3, dtype=torch.float32),
        "emb": torch.arange(4, dtype=torch.float32).to(torch.bfloat16) * 0.25,
        "h": (torch.arange(4, dtype=torch.float32) * 0.125).reshape(2, 2).to(torch.float16),
        "idx": torch.tensor([0, -1, 1 << 40], dtype=torch.int64),
        "mask": torch.arange(5, dtype=torch.uint8),
        "cnt": torch.tensor([7, -7], dtype=torch.int32),
    }


def expected_lines(file, tensors):
    for name in sorted(tensors):
        t = tensors[name]
        vals = " ".join("%.9g" % v for v in t.to(torch.float32).flatten().tolist())
        dims = " ".join(str(d) for d in t.shape)
        yield f"{file} {name} {DTYPE_NAMES[t.dtype]} {t.dim()} {dims} {vals}".replace("  ", " ")


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = []
    small = small_set()
    save_file(small, os.path.join(OUT, "st_small.safetensors"),
              metadata={"format": "pt", "note": "vnm fixture"})
    lines += expected_lines("st_small.safetensors", small)

    shards = sharded_sets()
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        fname = f"st_sharded-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, os.path.join(OUT, fname), metadata={"format": "pt"})
        for name, t in s.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(OUT, "st_sharded.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    lines += expected_lines("st_sharded.safetensors.index.json",
                            {k: v for s in shards for k, v in s.items()})

    save_file(python_written_set(), os.path.join(OUT, "st_written_by_python.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(OUT, "st_expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
