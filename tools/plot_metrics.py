#!/usr/bin/env python3
"""Draws the curves of a vnm run directory into PNG files next to its metrics.jsonl.

usage: tools/plot_metrics.py RUN_DIR [--out FILE]

Reads RUN_DIR/metrics.jsonl (one JSON object per line, DESIGN.md "Run directory"): training and
validation loss against the step, top-1 accuracy (or perplexity) when present, and the learning
rate; stage changes are drawn as vertical lines labelled with the stage name. Writes
RUN_DIR/metrics.png (or --out). Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import os
import sys


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON object: {e.msg}")
    return rows


def series(rows, split, key):
    pts = [(r["step"], r[key]) for r in rows
           if r.get("split") == split and key in r and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def stage_starts(rows):
    starts, last = [], None
    for r in rows:
        st = r.get("stage")
        if st is not None and st != last and "step" in r:
            starts.append((r["step"], st))
            last = st
    return starts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out")
    args = ap.parse_args()
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"{path}: no such file (is {args.run_dir} a vnm run directory?)")
    rows = load(path)
    if not rows:
        sys.exit(f"{path}: empty")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "top1" if any("top1" in r for r in rows) else "ppl"
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    def draw(ax, split, key, style, label):
        xs, ys = series(rows, split, key)
        if xs:
            ax.plot(xs, ys, style, label=label, markersize=3)

    for split, style in (("train", "-"), ("val", "o-")):
        draw(axes[0], split, "loss", style, f"{split} loss")
        draw(axes[1], split, metric, style, f"{split} {metric}")
    draw(axes[2], "train", "lr", "-", "lr")
    for ax, title in zip(axes, ("loss", metric, "learning rate")):
        ax.set_ylabel(title)
        for step, name in stage_starts(rows):
            ax.axvline(step, color="grey", linestyle=":", linewidth=1)
            if ax is axes[0]:
                ax.annotate(name, (step, 1.0), xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=8, color="grey")
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("step")
    fig.suptitle(os.path.basename(os.path.normpath(args.run_dir)))
    fig.tight_layout()
    out = args.out or os.path.join(args.run_dir, "metrics.png")
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
