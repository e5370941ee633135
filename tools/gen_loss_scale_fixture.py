#!/usr/bin/env python3
"""tools/gen_loss_scale_fixture.py — writes tests/fixtures/loss_scale_torch.txt, the expected
behaviour of dynamic loss scaling (optim/loss_scale.h) from torch.amp.GradScaler itself.

Written with torch 2.15.0 (CPU). Run from the repository root:
  python3 tools/gen_loss_scale_fixture.py [out_file]

A parameter p of 3 f32 values, AdamW(lr 0.1, weight_decay 0.01, torch defaults otherwise) and
GradScaler("cpu", init_scale 1024, growth_interval 3). At each of 14 steps the gradient is set to
what backward of the scaled loss would give, scale · g_k with g_k = k · (0.5, -1.25, 3.0), or to a
gradient holding inf or NaN at the steps listed in BAD; then scaler.step(opt) (which unscales and
skips a step with non-finite gradients) and scaler.update(). Each line records:
  step  bad(0/1)  scale_used  scale_after  p[0] p[1] p[2]   (floats as %.9g)
The C test replays the same sequence with vnm_loss_scaler and the AdamW of optim/ and must
reproduce the scales exactly and the parameters to f32 rounding.
"""
import sys

import torch

BAD = {4: float("inf"), 9: float("-inf"), 10: float("nan")}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/loss_scale_torch.txt"
    p = torch.nn.Parameter(torch.tensor([0.25, -0.5, 1.0], dtype=torch.float32))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    base = torch.tensor([0.5, -1.25, 3.0], dtype=torch.float32)
    lines = [f"# torch {torch.__version__}: step bad scale_used scale_after p0 p1 p2"]
    for k in range(1, 15):
        scaler.scale(torch.ones(()))  # what a training step scales its loss with (sets _scale up)
        scale = scaler.get_scale()
        g = base * float(k) * scale
        if k in BAD:
            g[1] = BAD[k]
        p.grad = g.clone()
        scaler.step(opt)
        scaler.update()
        vals = " ".join(f"{v:.9g}" for v in p.detach().tolist())
        lines.append(f"{k} {int(k in BAD)} {scale:.9g} {scaler.get_scale():.9g} {vals}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
