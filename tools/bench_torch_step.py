#!/usr/bin/env python3
"""PyTorch eager reference for `vnm bench train`: the same ViT training step (forward,
cross-entropy, zero-grad + backward, clip_grad_norm_ when the recipe clips, AdamW with timm's
weight-decay groups) with timm's VisionTransformer, on one fixed synthetic batch, with the same
protocol: warm-up steps, then `reps` timed windows of `steps` steps, the best window reported;
each window ends with loss.item(), which waits for the device.

The model comes from the same places: a recipe's model/data/optim sections (quickstart =
recipes/quickstart.yaml) or the timm DeiT presets (224x224x3, 1000 classes, AdamW lr 5e-4, weight
decay 0.05). It prints the same `config:` line as vnm on stderr (tools/bench_vs_torch.sh checks
that they agree) and JSON lines on stdout with the same case names as vnm, bench "torch_train".
Nothing is downloaded (pretrained=False: the model is built from its class).

    python3 tools/bench_torch_step.py [--model quickstart] [--threads 2] [--reps 3] ...
"""
import argparse
import json
import os
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    import timm
    from timm.models.vision_transformer import VisionTransformer
    from timm.optim import param_groups_weight_decay
    import yaml
except ImportError as e:  # tools/bench_vs_torch.sh looks for a python3 that has these
    sys.stderr.write(f"bench_torch_step.py: {e}; install with: pip install torch timm\n")
    sys.exit(2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# recipe.c's schema defaults and size presets, for keys a recipe leaves out
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


def die(msg):  # bad input: exit 2, as vnm does
    sys.stderr.write(f"bench_torch_step.py: {msg}\n")
    sys.exit(2)


def setup_from_recipe(path):
    with open(path) as f:
        r = yaml.safe_load(f)
    m, d, o = r.get("model", {}), r.get("data", {}), r.get("optim", {})
    if m.get("arch", "vit") != "vit":
        die(f"{path}: model.arch: only vit is benchmarked")
    if o.get("name", "adamw") != "adamw":
        die(f"{path}: optim.name: only adamw is compared")
    dim, depth, heads = SIZES.get(m.get("size", "tiny"), SIZES["tiny"])
    vit = dict(img_size=m["image_size"], patch_size=m["patch"], in_chans=m["in_chans"],
               num_classes=m["num_classes"], embed_dim=m.get("embed_dim", dim),
               depth=m.get("depth", depth), num_heads=m.get("heads", heads),
               mlp_ratio=float(m.get("mlp_ratio", 4.0)), qkv_bias=True,
               drop_path_rate=float(m.get("drop_path", 0.0)))
    betas = o.get("betas", [0.9, 0.999])
    opt = dict(lr=float(o.get("lr", 1e-3)), weight_decay=float(o.get("weight_decay", 0.05)),
               betas=(float(betas[0]), float(betas[1])), eps=float(o.get("eps", 1e-8)))
    return vit, d["batch_size"], opt, float(o.get("clip_grad_norm", 0.0)), \
        r.get("run", {}).get("seed", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="quickstart",
                    help="quickstart, deit_small, deit_tiny or a recipe file")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="default 10; deit on cpu: 2")
    ap.add_argument("--warmup", type=int, default=-1, help="default 3; deit on cpu: 1")
    a = ap.parse_args()

    deit = a.model in ("deit_small", "deit_tiny")
    if deit:
        dim, depth, heads = SIZES[a.model[5:]]
        vit = dict(img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=dim,
                   depth=depth, num_heads=heads, mlp_ratio=4.0, qkv_bias=True,
                   drop_path_rate=0.0)
        batch = 64 if a.device == "cuda" else 16
        opt_cfg = dict(lr=5e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
        clip, seed = 0.0, 0
    else:
        path = os.path.join(ROOT, "recipes/quickstart.yaml") if a.model == "quickstart" \
            else a.model
        vit, batch, opt_cfg, clip, seed = setup_from_recipe(path)
    batch = a.batch or batch
    deit_cpu = deit and a.device == "cpu"
    steps = a.steps or (2 if deit_cpu else 10)
    warmup = a.warmup if a.warmup >= 0 else (1 if deit_cpu else 3)
    if a.device == "cuda" and not torch.cuda.is_available():
        die("no CUDA device")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(seed)
    dev = torch.device(a.device)

    model = VisionTransformer(**vit).to(dev).train()
    groups = param_groups_weight_decay(model, opt_cfg["weight_decay"],
                                       no_weight_decay_list=model.no_weight_decay())
    opt = torch.optim.AdamW(groups, lr=opt_cfg["lr"], betas=opt_cfg["betas"], eps=opt_cfg["eps"])
    x = torch.randn(batch, vit["in_chans"], vit["img_size"], vit["img_size"], device=dev)
    y = torch.randint(0, vit["num_classes"], (batch,), device=dev)

    where = "cuda" if a.device == "cuda" else f"cpu {torch.get_num_threads()}t"
    sys.stderr.write(
        f"torch {torch.__version__} timm {timm.__version__}: {a.model} on {where}, best of "
        f"{a.reps} windows of {steps} steps after {warmup} warm-up steps\n"
        "config: img=%d patch=%d chans=%d classes=%d dim=%d depth=%d heads=%d mlp_ratio=%g "
        "qkv_bias=%d drop_path=%g batch=%d optim=adamw lr=%g wd=%g betas=%g,%g eps=%g clip=%g\n"
        % (vit["img_size"], vit["patch_size"], vit["in_chans"], vit["num_classes"],
           vit["embed_dim"], vit["depth"], vit["num_heads"], vit["mlp_ratio"], vit["qkv_bias"],
           vit["drop_path_rate"], batch, opt_cfg["lr"], opt_cfg["weight_decay"],
           opt_cfg["betas"][0], opt_cfg["betas"][1], opt_cfg["eps"], clip))

    def step(want_loss):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.item() if want_loss else None

    loss = float("nan")
    for i in range(warmup):
        loss = step(i == warmup - 1)
    wins = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for i in range(steps):
            out = step(i == steps - 1)
        wins.append((time.perf_counter() - t0) / steps)
        loss = out
    best = min(wins)
    for name, value, unit in (("step", best * 1e3, "ms"), ("throughput", batch / best, "img/s")):
        print(json.dumps({"bench": "torch_train",
                          "case": f"vit {a.model} B={batch} {where} {name}",
                          "value": round(value, 4), "unit": unit, "baseline": None,
                          "baseline_value": None, "ratio": None}, separators=(", ", ":")),
              flush=True)
    sys.stderr.write("       windows (ms/step): %s; last loss %.4f; %d params\n"
                     % (" ".join("%.2f" % (w * 1e3) for w in wins), loss,
                        sum(p.numel() for p in model.parameters())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
