#!/usr/bin/env bash
# The serving benchmark (DESIGN.md §8): the same MLP 784-512-512-10 served by Cumulus, MLServer
# and Ray Serve (@serve.batch), each pinned to core 0, driven by the open-loop load generator
# (inference/examples/loadgen.rs) pinned to core 1, swept over Poisson arrival rates, SLO 25 ms.
#
#   bench/serve/run.sh                                  # the peers: --systems mlserver,ray
#   bench/serve/run.sh --systems cumulus --merge        # Cumulus, summarized with the peers' runs
#   bench/serve/run.sh --systems mlserver --configs off-pw0 --rates 100,200 --duration 5
#   bench/serve/run.sh --quiet-load 1.5                 # wait for the shared cores to calm down
#
# Options go to bench.py (--help). Installs the peers from PyPI into bench/serve/.venv/{mlserver,ray}
# (git-ignored; MLServer 1.7 and Ray Serve 2.60 need incompatible FastAPI versions, hence two venvs),
# writes the model with make_model.py, builds the load generator (and `cumulus` when asked for),
# then runs bench.py. Scratch goes to bench/serve/out/ (git-ignored); results to
# bench/serve/results.{json,md,png}. Honours CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
target="${CARGO_TARGET_DIR:-$root/target}"

systems="mlserver,ray"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --systems) systems="${args[$((i + 1))]}" ;;
        --systems=*) systems="${args[$i]#--systems=}" ;;
    esac
done

venv() { # venv NAME PACKAGES...
    local dir="$here/.venv/$1"
    shift
    if [[ ! -x "$dir/bin/python" ]]; then
        mkdir -p "$here/.venv"
        "$python" -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install --quiet "$@"
}

# The MLServer venv also runs make_model.py and bench.py (numpy, onnx, matplotlib). uvloop 0.22+
# raises in asyncio.get_event_loop() without a running loop, which kills MLServer 1.7's parallel
# workers at start (parallel_workers >= 1), hence the pin.
venv mlserver "mlserver==1.7.1" "uvloop==0.21.0" "onnx==1.23.2" "onnxruntime==1.31.1" "numpy==2.4.6" \
    "matplotlib==3.11.2"
if [[ ",$systems," == *",ray,"* ]]; then
    venv ray "ray[serve]==2.60.0" "onnxruntime==1.31.1" "numpy==2.4.6"
fi

"$here/.venv/mlserver/bin/python" "$here/make_model.py" --out "$here/out/model"

# LOADGEN_PROFILE=dev skips the long release build: dependencies are optimized in dev too (the
# workspace's profile.dev.package."*"), and each run's send_lag shows whether the generator kept up.
profile="${LOADGEN_PROFILE:-release}"
profile_dir="$([[ "$profile" == dev ]] && echo debug || echo "$profile")"
(cd "$root" && cargo build --profile "$profile" --locked -p cumulus-inference --features bench --example loadgen)
extra=()
if [[ ",$systems," == *",cumulus,"* ]]; then
    (cd "$root" && cargo build --release --locked -p cumulus)
    "$target/release/cumulus" models inspect "$here/out/model/cumulus/mlp" | tail -1
    extra+=(--cumulus-bin "$target/release/cumulus")
fi

echo "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
"$here/.venv/mlserver/bin/python" "$here/bench.py" --loadgen "$target/$profile_dir/examples/loadgen" \
    "${extra[@]}" "$@"
