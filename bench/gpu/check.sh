#!/usr/bin/env bash
# The GPU check of the cumulus-gpu executor, run on the GPU machine (no network, no Rust) from
# the repository root, with `gpu-carry/` (made by bench/gpu/build.sh) beside it:
#
#   1. finds libcuda, libnvrtc and libcublas (CUDA 13) on the machine and puts them on
#      LD_LIBRARY_PATH (cudarc loads them at run time);
#   2. runs the crate's integration tests there: the CPU ones, the NVRTC compile check, every
#      CUDA operation and program against the CPU backend (1e-4 relative), the executor
#      serving tenants on CUDA streams;
#   3. runs the tenants benchmark: 1, 2, 4 and 8 tenants doing small-batch inference
#      concurrently on one GPU against the same tenants taking exclusive turns;
#   4. writes, into $OUT (at most 8 files): env.txt, tests.log, checks.jsonl, checks.md,
#      bench.log, tenants_bench.json, tenants_bench.md, summary.md.
#
# About 3 to 4 minutes on an H200. Exit status: 0 when every check passed and the benchmark ran.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(pwd)/gpu-out}"
mkdir -p "$OUT"
carry="${CARRY:-$(pwd)/gpu-carry}"
bin="$(mktemp -d)"
status=0

log() { echo "check.sh: $*" | tee -a "$OUT/env.txt"; }

# --- 1. binaries and libraries -----------------------------------------------------------------
for b in gpu-tests tenants_bench; do
    if [ ! -f "$carry/$b.gz" ]; then
        log "missing $carry/$b.gz: run bench/gpu/build.sh on a CPU machine and carry gpu-carry"
        exit 2
    fi
    gunzip -c "$carry/$b.gz" >"$bin/$b" && chmod +x "$bin/$b"
done
log "commit $(cat "$carry/COMMIT" 2>/dev/null || echo unknown)"

# Folders holding one of the three libraries, searched where CUDA images and wheels put them.
lib_dirs() {
    local name=$1
    {
        for d in ${LD_LIBRARY_PATH//:/ } /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
            /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
            /usr/local/cuda-13*/lib64; do
            ls "$d"/"$name"* 2>/dev/null
        done
        ldconfig -p 2>/dev/null | awk -v n="$name" '$1 ~ "^"n {print $NF}'
        # Python wheels (nvidia-cublas, nvidia-cuda-nvrtc for CUDA 13: nvidia/cu13/lib).
        find /opt /usr/local /usr/lib /root -name "$name*" 2>/dev/null |
            grep -E 'site-packages/nvidia|/cuda' | head -n 20
    } | xargs -r -n1 dirname 2>/dev/null | awk '!seen[$0]++'
}
extra=""
for lib in libcuda.so libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libnvrtc-builtins.so.13; do
    dir=$(lib_dirs "$lib" | head -n 1)
    if [ -n "$dir" ]; then
        log "$lib: $dir"
        case ":$extra:${LD_LIBRARY_PATH:-}:" in *":$dir:"*) ;; *) extra="$extra:$dir" ;; esac
    else
        log "$lib: NOT FOUND"
    fi
done
export LD_LIBRARY_PATH="${extra#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
{
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 | head -n 20
    echo "--- uname / cpus"
    uname -a
    nproc
} >>"$OUT/env.txt" 2>&1

# --- 2. tests ----------------------------------------------------------------------------------
log "probe: $("$bin/gpu-tests" cuda_probe_lists_the_device --nocapture 2>&1 | grep -E 'cuda:|no CUDA device' | head -n 3 | tr '\n' ' ')"
export CUMULUS_GPU_REPORT="$OUT/checks.jsonl"
: >"$CUMULUS_GPU_REPORT"
log "running the integration tests"
if ! timeout 180 "$bin/gpu-tests" --test-threads=4 --nocapture >"$OUT/tests.log" 2>&1; then
    log "TESTS FAILED (see tests.log)"
    status=1
fi
grep -E '^test result|SKIPPED|FAILED|panicked' "$OUT/tests.log" | tee -a "$OUT/env.txt"
if grep -q 'SKIPPED' "$OUT/tests.log" || [ ! -s "$CUMULUS_GPU_REPORT" ]; then
    log "CUDA CHECKS DID NOT RUN (no usable device or library: see env.txt): this is not a GPU result"
    status=1
fi

python3 - "$CUMULUS_GPU_REPORT" >"$OUT/checks.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("# CUDA against the CPU backend\n")
print(f"{sum(r['pass'] for r in rows)} of {len(rows)} checks within tolerance; "
      f"worst relative error {max((r['rel_err'] for r in rows), default=float('nan')):.2e}\n")
print("| suite | check | relative error | tolerance | pass |")
print("|---|---|---:|---:|---|")
for r in rows:
    print(f"| {r['suite']} | {r['check']} | {r['rel_err']:.2e} | {r['tolerance']:.0e} | {'yes' if r['pass'] else '**NO**'} |")
PY

# --- 3. benchmark ------------------------------------------------------------------------------
log "running the tenants benchmark"
if ! timeout 330 "$bin/tenants_bench" --backend cuda --models "${MODELS:-mlp,lenet,resnet,transformer}" \
    --tenants 1,2,4,8 --batch "${BATCH:-4}" --seconds "${SECONDS_PER_RUN:-3}" \
    --warmup-seconds 0.5 --outstanding 2 --out "$OUT" >"$OUT/bench.log" 2>&1; then
    log "BENCHMARK FAILED (see bench.log)"
    status=1
fi

# --- 4. summary --------------------------------------------------------------------------------
{
    echo "# GPU check of cumulus-gpu"
    echo
    echo "commit $(cat "$carry/COMMIT" 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
    echo
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
    echo
    grep -E '^test result' "$OUT/tests.log" || echo "tests: no result line"
    echo
    head -n 3 "$OUT/checks.md" | tail -n 1
    echo
    sed -n '/^| model/,/^$/p' "$OUT/tenants_bench.md" 2>/dev/null || echo "benchmark: no table"
} >"$OUT/summary.md"
cat "$OUT/summary.md"
rm -rf "$bin"
exit $status
