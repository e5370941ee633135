#!/usr/bin/env bash
# Installs what is missing (tools/bootstrap.sh), puts the CUDA toolkit's nvcc on PATH when it is
# installed but not found, and configures and builds into build/ (or $VNM_BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
build=${VNM_BUILD_DIR:-build}
[ -f "$build/build.ninja" ] || meson setup "$build"
ninja -C "$build"
