#!/usr/bin/env python3
"""Checks that weights in a safetensors file are V:N:M sparse (METHOD §1).

    python3 tools/check_vnm_masks.py MODEL.safetensors 64:2:5 'model.layers.*_proj.weight' ...

For every 2-D f32/bf16/f16 tensor whose name matches one of the fnmatch globs: in each block of V
rows × M columns at most 4 columns hold nonzeros, and in each row at most 2 of every M weights are
nonzero. Prints one line per tensor and a summary; exit 0 when all pass, 1 otherwise, 2 for bad
input. Needs numpy only (the file format is read directly).
"""
import fnmatch
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in DTYPES:
            continue
        begin, end = info["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        yield name, a != 0  # bf16 zero is the bit pattern 0 (or 0x8000, -0.0)


def violations(nz, V, M):
    O, I = nz.shape
    G = -(-I // M)
    padded = np.zeros((-(-O // V) * V, G * M), dtype=bool)
    padded[:O, :I] = nz
    groups = padded.reshape(-1, V, G, M)            # [blocks, V, G, M]
    per_row = groups.sum(axis=3)                     # nonzeros per row and group
    cols = groups.any(axis=1).sum(axis=2)            # nonzero columns per block and group
    return int((per_row > 2).sum()), int((cols > 4).sum())


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, pattern, globs = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        V, N, M = (int(x) for x in pattern.split(":"))
    except ValueError:
        print(f"check_vnm_masks: pattern '{pattern}' is not V:N:M", file=sys.stderr)
        return 2
    if N != 2:
        print("check_vnm_masks: N must be 2", file=sys.stderr)
        return 2
    checked, bad = 0, 0
    for name, nz in tensors(path):
        if nz.ndim != 2 or not any(fnmatch.fnmatch(name, g) for g in globs):
            continue
        rows, blocks = violations(nz, V, M)
        checked += 1
        bad += rows > 0 or blocks > 0
        if rows or blocks:
            print(f"{name}: {rows} row groups with > 2 nonzeros, {blocks} blocks with > 4 columns")
    print(f"check_vnm_masks: {checked} tensors checked against {pattern}, {bad} violate it")
    return 0 if checked > 0 and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
