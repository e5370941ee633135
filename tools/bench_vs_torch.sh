#!/usr/bin/env bash
# vnm against PyTorch eager on the quickstart model's training step, in one run: `vnm bench train
# --model quickstart --device cpu --threads 2`, then tools/bench_torch_step.py (timm's
# VisionTransformer with the recipe's config, AdamW, torch.set_num_threads(2)) with the same batch
# and the same warm-up / best-of-reps protocol. Checks that both ran the same config, prints both
# images/s and the ratio vnm/torch (target: >= 1.5x on 2 threads), and one JSON line in the
# `vnm bench` format (value: vnm ms/step, baseline: PyTorch's; ratio > 1: vnm is faster).
# Warns when either run's timed windows differ by more than 10% (other processes took the cores).
#   tools/bench_vs_torch.sh [BUILD_DIR]        (default build/; env THREADS, REPS, STEPS, WARMUP)
# Exit codes: 0 measured (whatever the ratio), 1 a run failed, 2 missing program or PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${THREADS:-2} reps=${REPS:-3} steps=${STEPS:-10} warmup=${WARMUP:-3}
vnm=$build/train/vnm
if [ ! -x "$vnm" ]; then
  echo "bench_vs_torch: $vnm not found; build first: meson setup $build && ninja -C $build" >&2
  exit 2
fi

# a python3 that has torch and timm: $PYTHON, then python3 on PATH (pyenv), then the system's
py=
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import torch, timm, yaml' 2>/dev/null; then
    py=$cand
    break
  fi
done
if [ -z "$py" ]; then
  echo "bench_vs_torch: no python3 with torch and timm found (tried \$PYTHON, python3," \
       "/usr/bin/python3); install them with: python3 -m pip install torch timm" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
proto=(--model quickstart --device cpu --threads "$threads" --reps "$reps" --steps "$steps"
       --warmup "$warmup")
echo "== vnm ($vnm)" >&2
"$vnm" bench train "${proto[@]}" >"$tmp/vnm.jsonl" 2>"$tmp/vnm.err" || {
  cat "$tmp/vnm.err" >&2; exit 1; }
cat "$tmp/vnm.err" >&2
echo "== PyTorch eager ($py)" >&2
"$py" tools/bench_torch_step.py "${proto[@]}" >"$tmp/torch.jsonl" 2>"$tmp/torch.err" || {
  cat "$tmp/torch.err" >&2; exit 1; }
cat "$tmp/torch.err" >&2

if [ "$(grep '^config:' "$tmp/vnm.err")" != "$(grep '^config:' "$tmp/torch.err")" ]; then
  echo "bench_vs_torch: the two runs used different configs (see the config: lines above)" >&2
  exit 1
fi

"$py" - "$tmp/vnm.jsonl" "$tmp/torch.jsonl" "$tmp/vnm.err" "$tmp/torch.err" <<'PY'
import json, re, sys
import torch
def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return {r["unit"]: r for r in rows}
v, t = load(sys.argv[1]), load(sys.argv[2])
# windows that differ much mean other processes took the cores: say so rather than trust the best
for name, path in (("vnm", sys.argv[3]), ("PyTorch", sys.argv[4])):
    m = re.search(r"windows \(ms/step\):([ 0-9.]+)", open(path).read())
    w = [float(x) for x in m.group(1).split()] if m else []
    if len(w) > 1 and max(w) > 1.1 * min(w):
        print(f"warning: {name}'s windows differ by {100 * (max(w) / min(w) - 1):.0f}%: the "
              "machine was busy; rerun when it is idle", file=sys.stderr)
ratio = v["img/s"]["value"] / t["img/s"]["value"]
for name, r in (("vnm", v), ("PyTorch", t)):
    print(f"{name:<8} {r['img/s']['value']:9.1f} img/s  {r['ms']['value']:9.2f} ms/step",
          file=sys.stderr)
print(f"vnm/torch {ratio:.3f}x  ({'meets' if ratio >= 1.5 else 'BELOW'} the 1.5x target)",
      file=sys.stderr)
case = v["ms"]["case"]
print(json.dumps({"bench": "train_vs_torch", "case": case, "value": v["ms"]["value"],
                  "unit": "ms", "baseline": f"pytorch {torch.__version__} eager",
                  "baseline_value": t["ms"]["value"],
                  "ratio": round(t["ms"]["value"] / v["ms"]["value"], 3)},
                 separators=(", ", ":")))
PY
