#!/usr/bin/env bash
# The training benchmark of issue 5: biased PMF on MovieLens-100K, time to a target test RMSE and
# bytes moved, Cumulus (v in {0, 0.1, 0.3, 0.7} x {bsp, ssp:2}) against PyTorch torch.distributed
# (gloo) all-reduce with the same number of workers, every run pinned to the same cores.
#
#   bench/train/run.sh                 # uses the committed target.json
#   bench/train/run.sh --calibrate     # re-derives the target from a single-process PyTorch run
#   bench/train/run.sh --cores 2,3     # other options go to bench.py (see --help)
#
# Installs PyTorch and matplotlib from PyPI into bench/train/.venv (git-ignored; it sees the
# system's site-packages, so an installed torch of the pinned version is reused, otherwise pip
# downloads the PyPI wheel), fetches the data with bench/data/fetch.sh when missing, builds the
# release binary, then runs bench.py. Results: bench/train/results.{json,md,png}.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install --quiet "torch==2.15.0" "matplotlib==3.11.2"

if [[ ! -f "$root/bench/data/downloads/ml-100k.inter" ]]; then
    "$root/bench/data/fetch.sh"
fi

(cd "$root" && cargo build --release --locked -p cumulus)

"$venv/bin/python" "$here/pytorch_pmf.py" selftest

echo "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
"$venv/bin/python" "$here/bench.py" --python "$venv/bin/python" "$@"
