#!/usr/bin/env bash
# Builds, on a CPU machine, everything the GPU check needs and puts it in `gpu-carry/` at the
# repository root (ignored by git through .git/info/exclude): the cumulus-gpu integration-test
# binary and the tenants benchmark, both release builds with `--features cuda` (cudarc loads
# libcuda, libnvrtc and libcublas at run time, so no CUDA is needed here), stripped and gzipped
# to fit the device tool's 64 MiB carry limit.
#
#   bash bench/gpu/build.sh        # then, on the GPU machine: bash bench/gpu/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
carry="$root/gpu-carry"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
# No debug info and stripped symbols: the binaries travel, they are not debugged there.
export CARGO_PROFILE_RELEASE_DEBUG=false
export CARGO_PROFILE_RELEASE_STRIP=symbols

exclude="$(git rev-parse --git-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/gpu-carry/' "$exclude" 2>/dev/null || echo '/gpu-carry/' >>"$exclude"

echo "build.sh: building the test binary (release, --features cuda)"
tests=$(cargo test -p cumulus-gpu --features cuda --release --test executor --no-run \
    --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "executor":
        print(m["executable"])' | tail -n 1)
if [ -z "$tests" ] || [ ! -x "$tests" ]; then
    echo "build.sh: the test binary was not built; run the cargo test command above to see why" >&2
    exit 1
fi
echo "build.sh: building the benchmark"
cargo build -p cumulus-gpu --features cuda --release --example tenants_bench
bench="$CARGO_TARGET_DIR/release/examples/tenants_bench"

rm -rf "$carry"
mkdir -p "$carry"
gzip -9 -c "$tests" >"$carry/gpu-tests.gz"
gzip -9 -c "$bench" >"$carry/tenants_bench.gz"
git rev-parse HEAD >"$carry/COMMIT"
(cd "$carry" && sha256sum gpu-tests.gz tenants_bench.gz >SHA256SUMS)
echo "build.sh: gpu-carry/ holds:"
ls -l "$carry"
du -sh "$carry"
echo "build.sh: the binaries need only glibc here:"
ldd "$tests" | sed 's/^/  /'
