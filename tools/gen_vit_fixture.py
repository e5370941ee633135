#!/usr/bin/env python3
"""tools/gen_vit_fixture.py — writes the timm conformance fixtures of tests/test_vit.c with real
timm (pip install timm; torch, numpy and safetensors installed):

  vit_small_case.safetensors      timm VisionTransformer (img 16, patch 4, 1 channel, 10 classes,
                                  embed 24, depth 2, heads 3, mlp_ratio 4, qkv_bias)
  vit_distilled_case.safetensors  the same dims as timm's VisionTransformerDistilled (dist token,
                                  head_dist; eval output = mean of the two heads)
  vit_deit_tiny_formula.txt       the real deit_tiny_patch16_224 (timm.create_model by name,
                                  pretrained=False: 5.7 M parameters, 224×224×3, 1000 classes) with
                                  weights and images from the formula below, so that no weight is
                                  stored; only logits, loss and gradient summaries are

Each safetensors file holds every parameter under its timm name, "input" [3, 1, 16, 16], "labels"
i64 [3], "logits" [3, 10], "loss" [1] (mean cross-entropy) and "grad.<name>" for every parameter,
all from one float32 forward + backward in eval mode (no dropout, no drop-path).

timm's default init leaves LayerNorms at ones/zeros, biases at zero and the cls token at ~1e-6,
which would make a conformance test blind to swapped or ignored parameters; every parameter is
therefore redrawn from a seeded normal (scale 0.2; norm weights around 1). Fixed seeds, so reruns
write identical files.

The deit_tiny formula (tests/test_vit.c recomputes it bit for bit; all arithmetic on uint32 wraps
modulo 2^32):
    fmix32(h):  h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16
    mix32(seed, k, i) = fmix32(fmix32(seed ^ (k * 0x9E3779B9)) + i)
    seed = DEIT_SEED (0x5EED7A11); k = the tensor's number in timm's state-dict order (0 ..
    151), i = the element's row-major index in timm's shape; h = mix32(seed, k, i)
    LayerNorm weights (the 1-D ".weight" tensors: norm1, norm2, norm):
                     w = 0.5 + (h >> 9) * 2^-23                  in [0.5, 1.5)
    every other parameter (weights, biases, cls_token, pos_embed, LayerNorm biases):
                     w = ((h >> 8) - 2^23) * 2^-26               in [-1/8, 1/8)
    images [2, 3, 224, 224]: k = 1000, x = ((h >> 8) - 2^23) * 2^-23   in [-1, 1)
Each value is an integer of at most 24 significant bits times a power of two, so it is exact in
float32 (checked below); numpy and C agree with no rounding. The scale ±1/8 (std 0.072) gives
attention logits of order 1 (not a uniform softmax) and logits of order 1. Labels: [7, 421].
One float32 forward + backward in eval mode, torch on one thread (the same bits on every rerun).

vit_deit_tiny_formula.txt (text, whitespace separated, '#' starts a comment that runs to the end of
the line; float32 values with %.9g, which reads back to the exact float32; norms and sums are
accumulated in float64 and written with %.17g):
    vnm-vit-formula-fixture 1
    model deit_tiny_patch16_224 seed SEED image_k 1000
    input 2 3 224 224 labels 7 421
    logits 2 1000 <2000 values, row-major>
    loss L                                   (mean cross-entropy)
    params 152, then per parameter in state-dict order:
      param NAME shape NDIM D0 .. D(NDIM-1) ln_weight 0|1
        norm L2 sum S abssum A amax M        (of the gradient)
        samples 16 <16 pairs: INDEX VALUE>   (INDEX = floor(j·(numel−1)/15), j = 0..15)

Usage, from the repository root:
  python3 tools/gen_vit_fixture.py [--only small|distilled|deit_tiny ...] [out_dir]
"""
import argparse
import os

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer

DIMS = dict(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=24, depth=2,
            num_heads=3, mlp_ratio=4.0, qkv_bias=True)

DEIT_SEED = 0x5EED7A11
DEIT_IMAGE_K = 1000
DEIT_LABELS = [7, 421]
DEIT_SAMPLES = 16


def make_case(cls, seed):
    torch.manual_seed(seed)
    model = cls(**DIMS).float().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            is_norm_weight = name.endswith(".weight") and p.ndim == 1
            p.copy_(noise + 1.0 if is_norm_weight else noise)
    x = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    labels = torch.tensor([3, 7, 0], dtype=torch.int64)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out = {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}
    out["input"] = x
    out["labels"] = labels
    out["logits"] = logits.detach().contiguous()
    out["loss"] = loss.detach().reshape(1)
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.detach().clone().contiguous()
    return out


def fmix32(h):
    """murmur3's finaliser on a uint32 array (multiplications wrap modulo 2^32)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def mix32(seed, k, n):
    """mix32(seed, k, i) for i = 0 .. n-1, as uint32."""
    key = fmix32(np.array([(seed ^ (k * 0x9E3779B9)) & 0xFFFFFFFF], dtype=np.uint32))
    return fmix32(key + np.arange(n, dtype=np.uint32))


def exact_f32(v):
    f = v.astype(np.float32)
    assert np.array_equal(f.astype(np.float64), v), "formula value not exact in float32"
    return f


def formula_param(k, shape, ln_weight):
    h = mix32(DEIT_SEED, k, int(np.prod(shape)))
    if ln_weight:
        v = 0.5 + (h >> np.uint32(9)).astype(np.float64) * 2.0 ** -23
    else:
        v = ((h >> np.uint32(8)).astype(np.float64) - 2.0 ** 23) * 2.0 ** -26
    return exact_f32(v).reshape(shape)


def formula_images(shape):
    h = mix32(DEIT_SEED, DEIT_IMAGE_K, int(np.prod(shape)))
    v = ((h >> np.uint32(8)).astype(np.float64) - 2.0 ** 23) * 2.0 ** -23
    return exact_f32(v).reshape(shape)


def is_ln_weight(name, p):
    return name.endswith(".weight") and p.ndim == 1


def g9(v):
    return "%.9g" % v


def make_deit_tiny():
    torch.set_num_threads(1)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).float().eval()
    names = list(model.state_dict().keys())
    params = dict(model.named_parameters())
    assert names == list(params), "state dict holds more than the parameters"
    with torch.no_grad():
        for k, name in enumerate(names):
            p = params[name]
            p.copy_(torch.from_numpy(formula_param(k, tuple(p.shape), is_ln_weight(name, p))))
    x = torch.from_numpy(formula_images((2, 3, 224, 224)))
    labels = torch.tensor(DEIT_LABELS, dtype=torch.int64)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    lines = [f"# written by tools/gen_vit_fixture.py with timm {timm.__version__}, torch "
             f"{torch.__version__}, numpy {np.__version__}; format in that script's docstring",
             "vnm-vit-formula-fixture 1",
             f"model deit_tiny_patch16_224 seed {DEIT_SEED} image_k {DEIT_IMAGE_K}",
             "input 2 3 224 224 labels " + " ".join(str(v) for v in DEIT_LABELS),
             "logits 2 1000"]
    lv = logits.detach().numpy().reshape(-1)
    for r in range(0, lv.size, 10):
        lines.append(" ".join(g9(v) for v in lv[r:r + 10]))
    lines.append("loss " + g9(loss.item()))
    lines.append(f"params {len(names)}")
    for name in names:
        p = params[name]
        g = p.grad.detach().numpy().reshape(-1).astype(np.float64)
        n = g.size
        idx = [j * (n - 1) // (DEIT_SAMPLES - 1) for j in range(DEIT_SAMPLES)]
        lines.append(f"param {name} shape {p.ndim} " + " ".join(str(d) for d in p.shape)
                     + f" ln_weight {int(is_ln_weight(name, p))}")
        lines.append("  norm %.17g sum %.17g abssum %.17g amax %s"
                     % (np.sqrt(np.dot(g, g)), g.sum(), np.abs(g).sum(), g9(np.abs(g).max())))
        lines.append(f"  samples {DEIT_SAMPLES} " + " ".join(f"{i} {g9(g[i])}" for i in idx))
    return "\n".join(lines) + "\n"


CASES = ("small", "distilled", "deit_tiny")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join("tests", "fixtures"))
    ap.add_argument("--only", action="append", choices=CASES,
                    help="write only this fixture (repeatable); default: all")
    args = ap.parse_args()
    only = set(args.only or CASES)
    os.makedirs(args.out_dir, exist_ok=True)
    if "small" in only:
        save_file(make_case(VisionTransformer, 4321),
                  os.path.join(args.out_dir, "vit_small_case.safetensors"))
    if "distilled" in only:
        save_file(make_case(VisionTransformerDistilled, 8765),
                  os.path.join(args.out_dir, "vit_distilled_case.safetensors"))
    if "deit_tiny" in only:
        with open(os.path.join(args.out_dir, "vit_deit_tiny_formula.txt"), "w") as f:
            f.write(make_deit_tiny())


if __name__ == "__main__":
    main()
