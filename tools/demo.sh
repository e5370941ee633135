#!/usr/bin/env bash
# Installs what is missing, builds, and runs the quickstart: a small ViT trained on Fashion-MNIST,
# pruned one-shot to 64:2:5 with channel permutation and fine-tuned sparse (recipes/quickstart.yaml,
# about 6 minutes on 2 cores). Prints dense vs sparse accuracy and speed, describes the last
# checkpoint and draws the curves into the run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
VNM_BUILD_DIR=build tools/build.sh

out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
build/train/vnm train recipes/quickstart.yaml "run.output_dir=$out"

/usr/bin/python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
val = [r for r in rows if r.get("split") == "val" and "top1" in r]
train = [r for r in rows if r.get("split") == "train" and "throughput" in r]
def last(stage):
    v = [r for r in val if r.get("stage") == stage]
    return v[-1]["top1"] if v else float("nan")
def speed(stage):
    v = [r["throughput"] for r in train if r.get("stage") == stage]
    return sum(v) / len(v) if v else float("nan")
stages = []
for r in val:
    if r.get("stage") not in stages:
        stages.append(r.get("stage"))
print("\nquickstart summary (test top-1, training speed)")
for s in stages:
    sp = speed(s)
    print(f"  {s:<14} top-1 {100 * last(s):6.2f} %" + (f"   {sp:7.0f} img/s" if sp == sp else ""))
PY
build/train/vnm inspect "$out"
ckpt="$out/ckpt/$(cat "$out/ckpt/latest")"
/usr/bin/python3 tools/check_checkpoint_h5py.py "$ckpt" >"$out/h5py.txt"
echo "h5py reads $ckpt: $(wc -l <"$out/h5py.txt") attributes and datasets listed in $out/h5py.txt"
/usr/bin/python3 tools/plot_metrics.py "$out" || true
