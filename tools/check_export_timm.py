#!/usr/bin/env python3
"""tools/check_export_timm.py — proof that `vnm export` files load into timm and compute what vnm
computes (train/export.c). Not run by the C test suite (needs torch, timm, safetensors).

Usage: check_export_timm.py PATH.safetensors
  PATH.safetensors          written by `vnm export ... --out PATH.safetensors --sample N`
  PATH.json                 its sidecar: timm_model, model_config, dtype, sparse layers
  PATH.sample.safetensors   "images" [N, C, H, W] and vnm's "logits" [N, classes]

Builds timm.create_model(timm_model, pretrained=False, **model_config minus distilled), loads the
weights with strict=True, runs the sample images in eval mode and compares the logits with vnm's
(max |diff| <= 1e-4 * max |logit| + 1e-5 for f32 exports; bf16/f16 weights are compared loosely,
1e-1), and that no row of a sparse layer holds more nonzeros than its V:N:M pattern keeps (2 per
group of M inputs; a last partial group of r inputs keeps min(r, 2)). Exits 0 when everything
matches, 1 otherwise, 2 on usage errors.
"""
import json
import sys

import timm
import torch
from safetensors.torch import load_file

SUFFIX = ".safetensors"


def main(argv):
    if len(argv) != 2 or not argv[1].endswith(SUFFIX):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path = argv[1]
    base = path[: -len(SUFFIX)]
    with open(base + ".json") as f:
        side = json.load(f)
    kwargs = dict(side["model_config"])
    kwargs.pop("distilled")
    model = timm.create_model(side["timm_model"], pretrained=False, **kwargs).float().eval()
    state = {k: v.float() for k, v in load_file(path).items()}
    model.load_state_dict(state, strict=True)
    print(f"{path}: {len(state)} tensors loaded into {side['timm_model']} {kwargs} (strict)")

    ok = True
    for name, info in side["sparse"].items():
        w = state[name]
        m = int(info["pattern"].split(":")[2])
        inputs = w.shape[1]
        keep = 2 * (inputs // m) + min(inputs % m, 2)
        most = int((w != 0).sum(dim=1).max())
        print(f"  {name} {info['pattern']} permuted={info['permuted']}: at most {most} nonzeros"
              f" per row, the pattern keeps {keep} of {inputs}")
        ok &= most <= keep

    sample = load_file(base + ".sample.safetensors")
    with torch.no_grad():
        got = model(sample["images"])
    want = sample["logits"]
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    tol = 1e-4 * scale + 1e-5 if side["dtype"] == "f32" else 1e-1 * scale
    print(f"  logits {tuple(got.shape)}: max |timm - vnm| = {diff:.3g} (max |logit| {scale:.3g},"
          f" tolerance {tol:.3g})")
    ok &= diff <= tol
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
