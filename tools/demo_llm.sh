#!/usr/bin/env bash
# The language-model quickstart: installs what is missing, builds, tokenizes the English text of
# the Debian fortunes package (byte level), trains a small LLaMA from scratch and takes it to
# 64:2:5 with the three-stage LoRA schedule (recipes/quickstart_llm.yaml, under 10 minutes on 2
# cores). Prints perplexity dense / one-shot pruned / after each stage, checks that the final
# weights are 64:2:5, exports a transformers folder and continues a prompt with it.
set -euo pipefail
cd "$(dirname "$0")/.."
VNM_BUILD_DIR=build tools/build.sh

data=runs/data/fortunes
texts=$(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort)
# shellcheck disable=SC2086
build/train/vnm tokenize --out "$data" --doc-sep % --val-every 50 $texts

out="runs/quickstart_llm-$(date +%Y%m%d-%H%M%S)"
build/train/vnm train recipes/quickstart_llm.yaml "run.output_dir=$out" "data.path=$data"

/usr/bin/python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
val = [r for r in rows if r.get("split") == "val"]
print("\nquickstart_llm summary (validation perplexity)")
for r in val:
    print(f"  step {r['step']:5d}  {r['stage']:<22} ppl {r['ppl']:7.3f}")
PY
build/train/vnm inspect "$out"
build/train/vnm export "$out" --out "$out/export" --sample 32 "data.path=$data"
/usr/bin/python3 tools/check_vnm_masks.py "$out/export/model.safetensors" 64:2:5 \
  'model.layers.*_proj.weight'
build/train/vnm generate "$out/export" --prompt "The secret of" --max-new 100 --top-k 10 \
  --temperature 0.8 --seed 1
