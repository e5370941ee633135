#!/usr/bin/env bash
# vnm against PyTorch eager on the LLaMA training step of recipes/quickstart_llm.yaml, in one run:
# `vnm train` of the recipe's dense stage on the fortunes byte tokens (40 steps, a progress record
# every 10: the best 10-step window after the first is taken, as the trainer times it: data
# batch, forward, loss, backward, clipping, AdamW), then tools/bench_torch_llama.py
# (transformers' LlamaForCausalLM with the same dims, AdamW, clipping, torch threads 2) on one
# fixed batch of the same shape, best of 3 windows of 10 steps after 3. Prints both tok/s, the
# ratio vnm/torch and one JSON line in the `vnm bench` format (ratio > 1: vnm is faster).
#   tools/bench_llama_vs_torch.sh [BUILD_DIR]        (default build/)
# Exit codes: 0 measured (whatever the ratio), 1 a run failed, 2 missing program, data or PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
vnm=$build/train/vnm
if [ ! -x "$vnm" ]; then
  echo "bench_llama_vs_torch: $vnm not found; build first: tools/build.sh" >&2
  exit 2
fi
py=
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import torch, transformers, yaml' 2>/dev/null; then
    py=$cand
    break
  fi
done
if [ -z "$py" ]; then
  echo "bench_llama_vs_torch: no python3 with torch, transformers and yaml; install them with:" \
       "python3 -m pip install torch transformers pyyaml" >&2
  exit 2
fi
texts=$(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort)
if [ -z "$texts" ]; then
  echo "bench_llama_vs_torch: no fortunes text; run tools/bootstrap.sh" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
"$vnm" tokenize --out "$tmp/data" --doc-sep % --val-every 50 $texts >/dev/null
echo "== vnm ($vnm)" >&2
OMP_NUM_THREADS=2 "$vnm" train recipes/quickstart_llm.yaml "run.output_dir=$tmp/run" \
  "data.path=$tmp/data" run.threads=2 stages.0.steps=40 stages.1.steps=1 stages.2.steps=1 \
  stages.3.steps=1 schedule.warmup_fraction=0 log.every=10 >"$tmp/vnm.log" 2>&1 || {
  cat "$tmp/vnm.log" >&2; exit 1; }
echo "== PyTorch eager ($py)" >&2
"$py" tools/bench_torch_llama.py recipes/quickstart_llm.yaml 258 --threads 2 \
  >"$tmp/torch.jsonl" 2>"$tmp/torch.err" || { cat "$tmp/torch.err" >&2; exit 1; }
cat "$tmp/torch.err" >&2

"$py" - "$tmp/run/metrics.jsonl" "$tmp/torch.jsonl" <<'PY'
import json, sys
import torch
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
windows = [r["throughput"] for r in rows
           if r.get("split") == "train" and r.get("stage") == "pretrain" and r["step"] > 10]
t = json.loads(open(sys.argv[2]).read())
vnm_tps = max(windows)
torch_tps = t["tok_per_s"]
tokens = 16 * 128
print(f"vnm      {vnm_tps:9.1f} tok/s  {1e3 * tokens / vnm_tps:9.2f} ms/step  "
      f"(windows: {' '.join(f'{w:.0f}' for w in windows)})", file=sys.stderr)
print(f"PyTorch  {torch_tps:9.1f} tok/s  {t['value']:9.2f} ms/step", file=sys.stderr)
print(f"vnm/torch {vnm_tps / torch_tps:.3f}x", file=sys.stderr)
print(json.dumps({"bench": "train_vs_torch", "case": "llama quickstart_llm B=16 L=128 cpu 2t",
                  "value": round(1e3 * tokens / vnm_tps, 3), "unit": "ms",
                  "baseline": f"pytorch {torch.__version__} eager",
                  "baseline_value": t["value"], "ratio": round(vnm_tps / torch_tps, 3)},
                 separators=(", ", ":")))
PY
