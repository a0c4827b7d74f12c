#!/usr/bin/env bash
# The partitioning benchmark of issue 12: Cumulus' exact solver against SCIP on the same models.
#
#   bench/partition/run.sh                  # 20 instances for SCIP, the full solve-time grid
#   bench/partition/run.sh --count 50       # other options go to compare.py (see --help)
#
# Installs PySCIPOpt (which bundles SCIP) from PyPI into bench/partition/.venv (git-ignored),
# builds the example driver partitioner/examples/partition_bench.rs in release, then runs
# compare.py: the solve-time grid to 400 layers, the export of random instances (JSON + LP +
# our optimum), SCIP on each LP, and the comparison. Results: bench/partition/results.{json,md};
# scratch files go to bench/partition/out/ (git-ignored). Exits 1 if SCIP disagrees anywhere.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet "pyscipopt==6.3.0"

(cd "$root" && cargo build --release --locked -p cumulus-partitioner --example partition_bench)
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

"$venv/bin/python" "$here/compare.py" --bin "$target/release/examples/partition_bench" "$@"
