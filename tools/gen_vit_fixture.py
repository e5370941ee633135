#!/usr/bin/env python3
"""tools/gen_vit_fixture.py — writes the timm conformance fixtures of tests/test_vit.c with real
timm (pip install timm; torch and safetensors installed):

  vit_small_case.safetensors      timm VisionTransformer (img 16, patch 4, 1 channel, 10 classes,
                                  embed 24, depth 2, heads 3, mlp_ratio 4, qkv_bias)
  vit_distilled_case.safetensors  the same dims as timm's VisionTransformerDistilled (dist token,
                                  head_dist; eval output = mean of the two heads)

Each file holds every parameter under its timm name, "input" [3, 1, 16, 16], "labels" i64 [3],
"logits" [3, 10], "loss" [1] (mean cross-entropy) and "grad.<name>" for every parameter, all from
one float32 forward + backward in eval mode (no dropout, no drop-path).

timm's default init leaves LayerNorms at ones/zeros, biases at zero and the cls token at ~1e-6,
which would make a conformance test blind to swapped or ignored parameters; every parameter is
therefore redrawn from a seeded normal (scale 0.2; norm weights around 1). Fixed seeds, so reruns
write identical files. Run from the repository root:
  python3 tools/gen_vit_fixture.py [out_dir]
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures")
DIMS = dict(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=24, depth=2,
            num_heads=3, mlp_ratio=4.0, qkv_bias=True)


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


def main():
    os.makedirs(OUT, exist_ok=True)
    save_file(make_case(VisionTransformer, 4321), os.path.join(OUT, "vit_small_case.safetensors"))
    save_file(make_case(VisionTransformerDistilled, 8765),
              os.path.join(OUT, "vit_distilled_case.safetensors"))


if __name__ == "__main__":
    main()
