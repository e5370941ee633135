#!/usr/bin/env python3
"""tools/check_checkpoint_h5py.py — proof that h5py reads vnm checkpoints (train/checkpoint.c).

Usage: check_checkpoint_h5py.py CKPT.h5
Prints the root attributes, then every dataset as `<path> <shape> <numpy dtype> dtype=<tag>`.
Exits 1 if the file is not a vnm checkpoint or a string attribute is not UTF-8 read back as str,
2 on usage errors.
"""
import sys

import h5py


def main(argv):
    if len(argv) != 2:
        print("usage: check_checkpoint_h5py.py CKPT.h5", file=sys.stderr)
        return 2
    with h5py.File(argv[1], "r") as f:
        fmt = f.attrs.get("format")
        if not isinstance(fmt, str) or fmt != "vnm-checkpoint":
            print(f"{argv[1]}: not a vnm checkpoint (format = {fmt!r})", file=sys.stderr)
            return 1
        for key in sorted(f.attrs):
            value = f.attrs[key]
            if key == "recipe":
                value = f"<{len(value)} chars>"
            print(f"attr {key} = {value!r}")

        bad = []

        def check_strings(name, obj):
            for key in obj.attrs:
                info = h5py.check_string_dtype(obj.attrs.get_id(key).dtype)
                if info is not None and (info.encoding != "utf-8" or
                                         not isinstance(obj.attrs[key], str)):
                    bad.append(f"{name}@{key}")

        def visit(name, obj):
            check_strings("/" + name, obj)
            if isinstance(obj, h5py.Dataset):
                tag = obj.attrs.get("dtype", "?")
                print(f"dataset /{name} {list(obj.shape)} {obj.dtype} dtype={tag}")

        check_strings("/", f)
        f.visititems(visit)
        if bad:
            print("string attributes not UTF-8 str: " + ", ".join(bad), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
