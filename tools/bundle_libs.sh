#!/usr/bin/env bash
# tools/bundle_libs.sh — makes a build directory runnable on another machine of the same CPU
# architecture that lacks the -dev packages: copies the shared libraries its programs (train/vnm,
# tests/test_*) load, other than the C library, the compiler runtime and the CUDA driver and
# toolkit (which a GPU machine has), into DIR/lib, where `tools/gpu_check.sh --build-dir DIR
# --prebuilt` puts them on LD_LIBRARY_PATH.
#
#   tools/bundle_libs.sh DIR
#
# Prints the libraries copied and their total size. Exit status 2 when DIR holds no build.
set -euo pipefail

dir=${1:?usage: tools/bundle_libs.sh DIR}
[ -x "$dir/train/vnm" ] || { echo "bundle_libs: no build in $dir (no $dir/train/vnm)" >&2; exit 2; }
mkdir -p "$dir/lib"
# the C library, the compiler runtime, the CUDA driver and toolkit stay the target machine's
system='/(ld-linux[^/]*|lib(c|m|dl|rt|pthread|resolv|gcc_s|stdc\+\+|cuda|cudart|cublas|cublasLt|cudnn[a-z_]*|nccl|nvrtc|nvJitLink)\.so[^/]*)$'
for prog in "$dir/train/vnm" "$dir"/tests/test_*; do
    [ -f "$prog" ] && [ -x "$prog" ] || continue
    ldd "$prog" | awk '/=> \// {print $3}'
done | sort -u | grep -vE "$system" | while read -r lib; do
    cp -L "$lib" "$dir/lib/"
    echo "$lib"
done
echo "bundle_libs: $(du -sh "$dir/lib" | cut -f1) in $dir/lib"
