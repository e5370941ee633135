#!/usr/bin/env bash
# Installs what is missing, configures, builds and runs every test. The last line is
# "N passed, N failed[, N skipped]" counting individual test cases (TAP lines of every test
# program); the exit status is non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

tools/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

build=${VNM_BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C "$build" || { echo "0 passed, 1 failed"; exit 1; }

meson test -C "$build" --print-errorlogs --num-processes "${VNM_TEST_JOBS:-1}" "$@"
rc=$?

log="$build/meson-logs/testlog.txt"
passed=$(grep -E '^ok [0-9]+' "$log" | grep -vc '# SKIP' || true)
skipped=$(grep -E '^ok [0-9]+' "$log" | grep -c '# SKIP' || true)
failed=$(grep -cE '^not ok [0-9]+' "$log" || true)
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # a test program crashed or timed out before reporting a case
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
