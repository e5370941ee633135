#!/usr/bin/env bash
# Installs what is missing, builds, and shows the program. (The quickstart recipe joins here once
# the trainer exists.)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
[ -f build/build.ninja ] || meson setup build
ninja -C build
build/train/vnm --version
build/train/vnm --help
