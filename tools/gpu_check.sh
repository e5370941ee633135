#!/usr/bin/env bash
# tools/gpu_check.sh — the whole check of a GPU machine in one command: builds with CUDA, runs every
# test program (the CUDA cases of tests/test_backends.c compare each op with the CPU backend), runs
# the GPU benchmarks (linear op vs raw cuBLAS, f32 and bf16; fused bf16 attention vs the f32 one;
# training step of the quickstart model and of a DeiT-small-shaped model on synthetic data,
# images/s, the latter also with bf16 products)
# and a short LLaMA `vnm train` + `vnm resume` on the GPU through the three LoRA stages (bf16
# products, frozen bf16 base, activation checkpointing) and the ViT quickstart with its prune and
# sparse stage (when Fashion-MNIST is installed), and writes a report (card, driver, CUDA,
# results, the cases cuBLASLt or cuDNN declined) to gpu_check_report.md.
#
#   tools/gpu_check.sh [--build-dir DIR] [--prebuilt] [--report PATH] [--no-bench]
#
#   --build-dir DIR  build directory (default build-gpu)
#   --prebuilt       use DIR as it is (built elsewhere for this CPU architecture, e.g. on a
#                    machine with the -dev packages); shared libraries it needs that this machine
#                    lacks can be put in DIR/lib, which is added to LD_LIBRARY_PATH
#   --report PATH    where the report goes (default gpu_check_report.md in the source root)
#   --no-bench       tests only (no benchmarks, no training run)
#
# Exit status: 0 when every test passed (skips included) and every benchmark and the training run
# ran, 1 otherwise.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=build-gpu
prebuilt=0
report=$root/gpu_check_report.md
bench=1
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) build=$2; shift ;;
    --prebuilt) prebuilt=1 ;;
    --report) report=$2; shift ;;
    --no-bench) bench=0 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$build" in /*) ;; *) build=$root/$build ;; esac

if [ "$prebuilt" = 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then "$root/tools/bootstrap.sh" || exit 1; fi
    if [ -d "$build" ]; then
        meson setup --reconfigure "$build" "$root" -Dcuda=enabled >/dev/null || exit 1
    else
        meson setup "$build" "$root" -Dcuda=enabled >/dev/null || exit 1
    fi
    ninja -C "$build" >/dev/null || { echo "gpu_check: build failed" >&2; exit 1; }
fi
[ -x "$build/train/vnm" ] || { echo "gpu_check: no build in $build" >&2; exit 2; }
export LD_LIBRARY_PATH="$build/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuDNN is loaded at run time; where the system has none, the one of a Python wheel will do
cudnn=$(ldconfig -p 2>/dev/null | grep -m1 -o '/.*libcudnn\.so\.9$')
if [ -z "$cudnn" ]; then
    wheel=$(python3 -c 'import nvidia.cudnn as c; print(list(c.__path__)[0] + "/lib")' 2>/dev/null)
    if [ -n "$wheel" ] && [ -f "$wheel/libcudnn.so.9" ]; then
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$wheel"
        cudnn=$wheel/libcudnn.so.9
    fi
fi

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
# The optional library paths (cuBLASLt's fused linear, cuDNN's fused attention) fall back on
# other kernels with one line on stderr; they are collected for the report.
note_fallbacks() { # LABEL FILE...
    local label=$1
    shift
    grep -hE '^vnm: (cuDNN|cuBLASLt)' "$@" 2>/dev/null | sed "s|^|$label: |" >>"$log/fallbacks"
}
{
    echo "# GPU check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- card: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
    echo "- CUDA compiler: $(nvcc --version 2>/dev/null | tail -1 || echo 'nvcc not found')"
    echo "- cuDNN: ${cudnn:-not found (attention in bf16/f16 runs the f32 kernels)}"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo
} >"$report"

# ---- tests: every program, TAP counted per case ----
export CMOCKA_MESSAGE_OUTPUT=TAP OMP_WAIT_POLICY=passive
export VNM_TEST_DATA=$root/tests/fixtures VNM_TEST_RECIPES=$root/tests/recipes VNM_SOURCE_ROOT=$root
for t in "$build"/tests/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    name=$(basename "$t")
    "$root/tests/tap.sh" "$t" >"$log/$name.tap" 2>&1
    rc=$?
    p=$(grep -E '^ok [0-9]+' "$log/$name.tap" | grep -vc '# SKIP')
    s=$(grep -E '^ok [0-9]+' "$log/$name.tap" | grep -c '# SKIP')
    f=$(grep -cE '^not ok [0-9]+' "$log/$name.tap")
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi # crashed before reporting
    printf '%-28s %4d passed %3d failed %3d skipped\n' "$name" "$p" "$f" "$s"
done | tee "$log/summary"
read -r passed failed skipped < <(awk '{p+=$2; f+=$4; s+=$6} END {print p+0, f+0, s+0}' "$log/summary")
note_fallbacks tests "$log"/test_*.tap
{
    echo "## Tests: $passed passed, $failed failed, $skipped skipped"
    echo
    echo '```'
    cat "$log/summary"
    echo '```'
    for name in $(awk '$4 != 0 {print $1}' "$log/summary"); do
        echo
        echo "### $name (failures)"
        echo '```'
        grep -B3 -A8 -E '^not ok' "$log/$name.tap" | head -80
        echo '```'
    done
    echo
    echo "Skipped cases of the CUDA program (should be none on a GPU machine):"
    echo '```'
    grep -E '# skipped' "$log/test_backends.tap" | sort | uniq -c || true
    echo '```'
} >>"$report"

# ---- benchmarks ----
bench_failed=0
if [ "$bench" = 1 ]; then
    vnm=$build/train/vnm
    run_bench() {
        echo "### vnm bench $*" >>"$report"
        echo '```' >>"$report"
        if ! "$vnm" bench "$@" >>"$report" 2>"$log/bench.err"; then
            bench_failed=1
            echo "FAILED: $(tail -3 "$log/bench.err")" >>"$report"
        fi
        cat "$log/bench.err" >&2
        note_fallbacks "bench $1" "$log/bench.err"
        echo '```' >>"$report"
    }
    echo "## Benchmarks" >>"$report"
    run_bench ops --device cuda --reps 10
    run_bench train --model quickstart --device cuda
    run_bench train --model deit_small --device cuda
    run_bench train --model deit_small --device cuda --precision bf16
    run_bench train --model deit_small --device cuda --precision bf16 --pattern 64:2:5
    run_bench train --model quickstart --device cpu
fi

# ---- end to end: `vnm train` on the GPU ----
# A LLaMA of the language-model quickstart's shape on this repository's own text (no data set to
# fetch) through dense, lora_dense and the two masked LoRA stages (their dense form on the GPU),
# with bf16 products, a frozen bf16 base, activation checkpointing and deterministic kernels; then
# a checkpoint from inside lora_sparse_dynamic resumed to the end, which must end on the same
# loss, bit for bit.
train_failed=0
if [ "$bench" = 1 ]; then
    vnm=$build/train/vnm
    run_train() {
        echo "### vnm $*" >>"$report"
        echo '```' >>"$report"
        if "$vnm" "$@" >"$log/train.out" 2>&1; then
            grep -E '^(step [0-9]+/|eval |done|resume)' "$log/train.out" | tail -6 >>"$report"
        else
            train_failed=1
            echo "FAILED:" >>"$report"
            tail -8 "$log/train.out" >>"$report"
        fi
        note_fallbacks "$1" "$log/train.out"
        echo '```' >>"$report"
    }
    echo "## Training on the GPU" >>"$report"
    "$vnm" tokenize --out "$log/tok" --doc-sep '' --val-every 4 "$root"/README.md \
        "$root"/tools/bench/RESULTS.md "$root"/recipes/*.yaml >/dev/null 2>&1 || train_failed=1
    cat >"$log/llm.yaml" <<'YAML'
run: {name: gpu_check_llm, seed: 0, device: cuda, precision: bf16, deterministic: true}
model: {arch: llama, size: custom, embed_dim: 128, depth: 4, heads: 4, kv_heads: 2,
        mlp_ratio: 2.75, activation_checkpointing: true}
data: {dataset: tokens, seq_len: 128, batch_size: 16}
sparsity: {pattern: "64:2:5", score: ria, calibration_batches: 2,
           targets: ['model.layers.*_proj.weight']}
lora: {rank: 16, alpha: 32, targets: [all-linear], base_dtype: bf16}
optim: {name: adamw, lr: 0.003, weight_decay: 0.01, clip_grad_norm: 1.0}
schedule: {name: cosine, warmup_fraction: 0.05, min_lr: 0.0001, per_stage: true}
stages:
  - {name: pretrain, kind: dense, steps: 200}
  - {name: lora_dense, kind: lora_dense, steps: 30, optim: {lr: 0.001}}
  - {name: lora_dynamic, kind: lora_sparse_dynamic, steps: 40, optim: {lr: 0.001},
     lora: {every: 20}}
  - {name: lora_fixed, kind: lora_sparse_fixed, steps: 30, optim: {lr: 0.001}}
checkpoint: {every: 50, keep_last: 10}
log: {every: 50}
YAML
    run_train train "$log/llm.yaml" "data.path=$log/tok" "run.output_dir=$log/llm"
    run_train resume "$log/llm/ckpt/step_00000250.h5" "run.output_dir=$log/llm-resumed"
    # deterministic kernels: the resumed run ends on the bits of the uninterrupted one
    end_loss() { grep -o '"event":"done".*"train_loss":[^,]*' "$1/metrics.jsonl" 2>/dev/null |
        grep -o '"train_loss":[^,]*'; }
    full=$(end_loss "$log/llm") resumed=$(end_loss "$log/llm-resumed")
    if [ -n "$full" ] && [ "$full" = "$resumed" ]; then
        echo "Resume from step 250: final $full in both runs (bit-exact)." >>"$report"
    else
        train_failed=1
        echo "Resume from step 250: final ${full:-none}, resumed ${resumed:-none}: NOT bit-exact." \
            >>"$report"
    fi
    # the ViT quickstart (dense, prune to 64:2:5, sparse_fixed in the dense form) when its data
    # set is installed
    if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        run_train train "$root/recipes/quickstart.yaml" run.device=cuda run.precision=bf16 \
            "run.output_dir=$log/vit"
    else
        echo "(ViT quickstart skipped: /usr/share/datasets/fashion-mnist is missing)" >>"$report"
    fi
fi

{
    echo "## Library fallbacks"
    echo
    if [ -s "$log/fallbacks" ]; then
        echo "Cases cuBLASLt or cuDNN declined or failed (they ran on the other kernels):"
        echo '```'
        sort "$log/fallbacks" | uniq -c
        echo '```'
    else
        echo "None: cuBLASLt's fused linear and cuDNN's fused attention ran every case given."
    fi
} >>"$report"
echo "gpu_check: $passed passed, $failed failed, $skipped skipped; report in $report"
[ "$failed" = 0 ] && [ "$bench_failed" = 0 ] && [ "$train_failed" = 0 ]
