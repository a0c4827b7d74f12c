#!/usr/bin/env bash
# Overload: `cumulus serve` (the benchmark's MLP, adaptive batching, one 1769 MB function
# instance, pinned to core 0) driven by the open-loop generator (core 1) at a multiple of its
# maximum sustainable rate. Reports what was admitted (its p99 against the SLO), what was refused
# with 429 and how fast the gateway answered those, and the peak resident memory of the server's
# whole process tree (gateway + function instances), sampled every 100 ms.
#
#   [MEMORY_MB=1769] [MODELS=DIR MODEL=NAME SHAPE=1,3,32,32 SLO_MS=25] \
#       bench/serve/overload.sh CAPACITY_REQ_S [MULTIPLE=10] [SECONDS=10]
#
# On this 2-core machine the HTTP front end saturates the server core near 15,000 offered
# req/s, so a 10x overload of the 1769 MB capacity (about 6,000 req/s) measures the front end, not
# the batcher; MEMORY_MB=256 (0.14 vCPU for the instance, about 300 req/s) overloads the model.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
capacity=$1 multiple=${2:-10} seconds=${3:-10}
models="${MODELS:-$here/out/model/cumulus}" model="${MODEL:-mlp}" shape="${SHAPE:-1,784}" slo="${SLO_MS:-25}"
elements=$(python3 -c "import math; print(math.prod(int(d) for d in '$shape'.split(',')))")
rate=$(python3 -c "print($capacity * $multiple)")
work=$(mktemp -d)
cat >"$work/cumulus.toml" <<TOML
[models.$model]
slo_p99_ms = $slo
max_batch_size = 32
batching = "adaptive"
memory_mb = ${MEMORY_MB:-1769}
max_instances = 1
TOML
LOG_LEVEL=warn taskset -c 0 "$target/release/cumulus" serve --models "$models" \
    --http 127.0.0.1:0 --grpc 127.0.0.1:0 --config "$work/cumulus.toml" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q '^http ' "$work/out" && break; sleep 0.1; done
base=$(sed -n 's|^http \(.*\)/v2$|\1|p' "$work/out")
body='{"inputs":[{"name":"input","shape":['$shape'],"datatype":"FP32","data":['$(python3 -c "print(','.join(['0.5']*$elements))")']}]}'
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d "$body" "$base/v2/models/$model/infer" && break
    sleep 0.2
done
tree_rss_kb() { # the server and every descendant
    local all=$pid kids
    kids=$(pgrep -P "$pid" || true)
    while [[ -n "$kids" ]]; do all="$all $kids"; kids=$(for k in $kids; do pgrep -P "$k" || true; done); done
    for p in $all; do awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true; done | awk '{s += $1} END {print s + 0}'
}
idle_kb=$(tree_rss_kb)
( peak=0; while kill -0 $pid 2>/dev/null; do r=$(tree_rss_kb); (( r > peak )) && peak=$r && echo $peak >"$work/peak"; sleep 0.1; done ) &
sampler=$!
# Beside the load, time single requests end to end (curl, core 1) to see how fast a 429 comes.
( sleep 4; for _ in $(seq 1 40); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H 'Content-Type: application/json' \
        -d "$body" "$base/v2/models/$model/infer"; sleep 0.1
  done >"$work/probes" ) &
prober=$!
taskset -c 1 "$target/release/examples/loadgen" --url "$base" --rates "$rate" --duration "$seconds" \
    --warmup 2 --bisect-steps 0 --slo-ms "$slo" --model "$model" --shape "$shape" --server-pid $pid --out "$work/run.json" 2>/dev/null
wait $prober 2>/dev/null || true
metrics=$(curl -s "$base/metrics")
kill $sampler 2>/dev/null || true
python3 - "$work/run.json" "$idle_kb" "$(cat "$work/peak")" "$capacity" "$multiple" <<'PY' "$metrics" "$work/probes"
import json, re, sys
run = json.load(open(sys.argv[1]))["sweep"]["runs"][-1]
idle, peak, capacity, multiple = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
m = sys.argv[6]
def total(name, outcome):
    vals = [float(v) for v in re.findall(rf'^{name}\{{[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$', m, re.M)]
    return sum(vals)
refused_s = total("cumulus_inference_request_duration_seconds_sum", "overloaded")
refused_n = total("cumulus_inference_request_duration_seconds_count", "overloaded")
print(f"offered {run['target_rate']:.0f} req/s ({multiple}x a capacity of {capacity:.0f}), sent {run['achieved_send_rate']:.0f}/s "
      f"(generator send lag p99 {run['send_lag']['p99_ms']:.2f} ms)")
print(f"admitted and answered: {run['ok']} ({run['throughput_rps']:.0f}/s), p50 {run['latency']['p50_ms']:.2f} ms, "
      f"p99 {run['latency']['p99_ms']:.2f} ms (SLO {run['slo_ms']:g} ms), {run['ok_within_slo']} within the SLO")
print(f"refused with 429: {run['overloaded']} ({100 * run['overloaded'] / max(1, run['scheduled']):.1f}% of {run['scheduled']})")
probes = [l.split() for l in open(sys.argv[7]).read().splitlines() if l.strip()]
refused_ms = sorted(1e3 * float(t) for code, t in probes if code == "429")
if refused_ms:
    print(f"single requests timed beside the load: {len(refused_ms)} of {len(probes)} got 429, in "
          f"{refused_ms[len(refused_ms) // 2]:.2f} ms (median), {refused_ms[-1]:.2f} ms (max)")
print(f"other errors: { {k: v for k, v in run['error_counts'].items() if k != 'http_429'} }")
print(f"resident memory of the server tree: {idle / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB under overload")
PY
