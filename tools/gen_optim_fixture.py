#!/usr/bin/env python3
"""tools/gen_optim_fixture.py — writes the torch.optim reference trajectories that
tests/test_optim.c replays: tests/fixtures/optim_sgd_nesterov.txt, optim_sgd_dampening.txt and
optim_adamw.txt.

Each case: three parameters (a 2-D weight, a 1-D bias, a norm weight) in two parameter groups
(timm order: group 0 without weight decay, group 1 with it, each with its own lr scale), 20 steps of
gradients drawn here, torch.nn.utils.clip_grad_norm_(max_norm=1.0) before every step (the gradient
scales are drawn so that some steps clip and some do not; the script checks both happen), and a
learning rate from a linear warm-up followed by a cosine decay to a floor, set by hand on every
group before each step. The optimisers run with foreach=False, the single-tensor CPU path that
vnm's kernels reproduce.

Usage: python3 tools/gen_optim_fixture.py [OUT_DIR]   (default: tests/fixtures next to this tool)

Format (text, whitespace separated, '#' starts a comment that runs to the end of the line; floats
are written with %.9g, which reads back to the exact float32):
    vnm-optim-fixture 1
    kind sgd|adamw
    lr BASE  momentum M  dampening D  nesterov 0|1  beta1 B1  beta2 B2  eps E  max_norm C
    schedule cosine  warmup_steps W  warmup_start_lr L0  total_steps T  min_lr LMIN
    groups G, then per group:  group INDEX weight_decay WD lr_scale S
    params P, then per param:  param NAME group INDEX shape NDIM D0 .. D(NDIM-1)
    per param:                 init NAME <numel values>
    steps N, then per step:
        step K lr LR total_norm NORM clipped 0|1
        per param: grad NAME <numel values>    (the raw gradient, before clipping)
        per param: after NAME <numel values>   (the parameter after the optimiser step)
LR is the schedule's base value for step K (counted from 0); group g steps with LR * lr_scale[g].
NORM is clip_grad_norm_'s return value (float32); clipped says whether max_norm / (NORM + 1e-6) < 1.
"""
import math
import os
import sys

import torch

STEPS = 20
MAX_NORM = 1.0
WARMUP_STEPS = 3
TOTAL_STEPS = 16  # the floor is reached inside the trajectory (steps 16..19)

PARAMS = [  # name, shape, group
    ("fc.weight", (5, 7), 1),  # 35 elements: a vectorised body and a scalar tail in torch's loops
    ("fc.bias", (7,), 0),
    ("norm.weight", (7,), 0),
]

CASES = {
    "optim_sgd_nesterov.txt": dict(
        kind="sgd", lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
        weight_decay=1e-2, lr_scales=(1.0, 0.5), seed=101),
    "optim_sgd_dampening.txt": dict(
        kind="sgd", lr=0.1, momentum=0.9, dampening=0.1, nesterov=False,
        weight_decay=1e-2, lr_scales=(1.0, 0.5), seed=202),
    "optim_adamw.txt": dict(
        kind="adamw", lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
        weight_decay=0.05, lr_scales=(1.0, 0.5), seed=303),
}


def schedule_lr(step, base, start, min_lr):
    """Linear warm-up from start to base over WARMUP_STEPS, then cosine from base to min_lr over
    the remaining TOTAL_STEPS - WARMUP_STEPS steps, then min_lr."""
    if step < WARMUP_STEPS:
        return start + (base - start) * step / WARMUP_STEPS
    if step >= TOTAL_STEPS:
        return min_lr
    t = (step - WARMUP_STEPS) / (TOTAL_STEPS - WARMUP_STEPS)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * t))


def fmt(values):
    return " ".join("%.9g" % v for v in values.reshape(-1).tolist())


def write_case(path, c):
    torch.manual_seed(c["seed"])
    params = [torch.nn.Parameter(torch.empty(shape).uniform_(-1.0, 1.0)) for _, shape, _ in PARAMS]
    init = [p.detach().clone() for p in params]
    wds = (0.0, c["weight_decay"])
    groups = [
        {"params": [p for p, (_, _, g) in zip(params, PARAMS) if g == gi],
         "weight_decay": wds[gi]}
        for gi in range(2)
    ]
    if c["kind"] == "sgd":
        opt = torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"],
                              dampening=c["dampening"], nesterov=c["nesterov"], foreach=False)
    else:
        opt = torch.optim.AdamW(groups, lr=c["lr"], betas=c["betas"], eps=c["eps"],
                                foreach=False)
    base = c["lr"]
    start, min_lr = 0.1 * base, 0.05 * base

    steps = []
    for k in range(STEPS):
        lr = schedule_lr(k, base, start, min_lr)
        for gi, group in enumerate(opt.param_groups):
            group["lr"] = lr * c["lr_scales"][gi]
        # one scale per step, log-uniform, so the total norm lands on both sides of MAX_NORM
        scale = math.exp(torch.empty(()).uniform_(math.log(0.04), math.log(0.5)).item())
        grads = [torch.randn(p.shape) * scale for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=False).item()
        clipped = MAX_NORM / (total + 1e-6) < 1.0
        opt.step()
        steps.append((lr, total, clipped, grads, [p.detach().clone() for p in params]))
    n_clipped = sum(1 for s in steps if s[2])
    assert 0 < n_clipped < STEPS, f"{path}: clipping must trigger on some steps only ({n_clipped})"

    with open(path, "w") as f:
        f.write(f"# written by tools/gen_optim_fixture.py with torch {torch.__version__}; "
                "format in that script's docstring\n")
        f.write("vnm-optim-fixture 1\n")
        f.write(f"kind {c['kind']}\n")
        betas = c.get("betas", (0.9, 0.999))
        f.write(f"lr {base!r} momentum {c.get('momentum', 0.0)!r} "
                f"dampening {c.get('dampening', 0.0)!r} nesterov {int(c.get('nesterov', False))} "
                f"beta1 {betas[0]!r} beta2 {betas[1]!r} eps {c.get('eps', 1e-8)!r} "
                f"max_norm {MAX_NORM!r}\n")
        f.write(f"schedule cosine warmup_steps {WARMUP_STEPS} warmup_start_lr {start!r} "
                f"total_steps {TOTAL_STEPS} min_lr {min_lr!r}\n")
        f.write("groups 2\n")
        for gi in range(2):
            f.write(f"group {gi} weight_decay {wds[gi]!r} lr_scale {c['lr_scales'][gi]!r}\n")
        f.write(f"params {len(PARAMS)}\n")
        for name, shape, g in PARAMS:
            f.write(f"param {name} group {g} shape {len(shape)} {' '.join(map(str, shape))}\n")
        for (name, _, _), t in zip(PARAMS, init):
            f.write(f"init {name} {fmt(t)}\n")
        f.write(f"steps {STEPS}\n")
        for k, (lr, total, clipped, grads, after) in enumerate(steps):
            f.write(f"step {k} lr {lr!r} total_norm {'%.9g' % total} clipped {int(clipped)}\n")
            for (name, _, _), g in zip(PARAMS, grads):
                f.write(f"grad {name} {fmt(g)}\n")
            for (name, _, _), p in zip(PARAMS, after):
                f.write(f"after {name} {fmt(p)}\n")
    print(f"{path}: {STEPS} steps, {n_clipped} clipped, {os.path.getsize(path)} bytes")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    for name, case in CASES.items():
        write_case(os.path.join(out, name), case)


if __name__ == "__main__":
    main()
