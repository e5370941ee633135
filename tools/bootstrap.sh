#!/usr/bin/env bash
# Installs, with apt-get, whatever this machine lacks to build, test and demo vnm.
# Idempotent: packages already present are skipped and nothing is installed twice.
# The CUDA toolkit (nvcc, cuBLAS, cuDNN, NCCL) is not installed here: when present it is used.
set -euo pipefail

packages=(
  build-essential pkg-config meson ninja-build
  libopenblas-openmp-dev libhdf5-dev hdf5-tools libyaml-dev libcmocka-dev
  libjpeg62-turbo-dev zlib1g-dev libopenmpi-dev openmpi-bin
  dataset-fashion-mnist fortunes-min fortunes
  python3-h5py python3-matplotlib python3-numpy
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#packages[@]} packages present"
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
