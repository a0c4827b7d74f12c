#!/usr/bin/env bash
# Compile-checks every NVRTC kernel of cumulus-gpu on a machine without a GPU: installs the
# nvidia-cuda-nvrtc wheel (CUDA 13) into a temporary folder, puts its libnvrtc.so.13 on
# LD_LIBRARY_PATH and runs the `nvrtc_compiles_every_kernel` test, which fails on any compile
# error and prints the compiler's log. If the package registry cannot be reached, it says so and
# exits 0 without checking (that step alone is skipped; the test itself skips without nvrtc).
#
#   bash bench/gpu/nvrtc-check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
version="${NVRTC_WHEEL_VERSION:-13.0.88}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

if ! python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$dir" \
    "nvidia-cuda-nvrtc==$version" 2>"$dir/pip.log"; then
    echo "nvrtc-check: SKIPPED: could not install nvidia-cuda-nvrtc==$version from the package registry:"
    tail -n 3 "$dir/pip.log" | sed 's/^/  /'
    exit 0
fi
lib=$(dirname "$(find "$dir" -name 'libnvrtc.so.13*' | head -n 1)")
if [ -z "$lib" ] || [ "$lib" = "." ]; then
    echo "nvrtc-check: the wheel holds no libnvrtc.so.13" >&2
    exit 1
fi
echo "nvrtc-check: libnvrtc from $lib"
LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test -p cumulus-gpu --features cuda --locked --test executor nvrtc_compiles_every_kernel \
    -- --nocapture 2>&1 | tee "$dir/test.log"
if ! grep -q 'kernels compiled for compute_90' "$dir/test.log"; then
    echo "nvrtc-check: the kernels were not compiled (see above)" >&2
    exit 1
fi
