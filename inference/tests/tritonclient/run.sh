#!/usr/bin/env bash
# Runs check.py (the official tritonclient, http and grpc) against a running KServe V2 server.
#
#   inference/tests/tritonclient/run.sh HTTP_HOST:PORT GRPC_HOST:PORT [check.py options...]
#
# e.g. against `cumulus serve` (defaults 127.0.0.1:8000 / 127.0.0.1:8001):
#   inference/tests/tritonclient/run.sh 127.0.0.1:8000 127.0.0.1:8001 --model MODEL
#
# tritonclient[http,grpc] is installed from PyPI into a fresh venv under a temporary folder
# (or into $TRITONCLIENT_VENV, kept between runs, when that is set). When python3 or PyPI is
# not available this prints SKIPPED and exits 0; otherwise it exits with check.py's status.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,11p' "$0" >&2
    exit 2
fi
http=$1
grpc=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v python3 >/dev/null 2>&1; then
    echo "SKIPPED: no python3 on PATH"
    exit 0
fi

tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
if [ -n "${TRITONCLIENT_VENV:-}" ]; then
    venv=$TRITONCLIENT_VENV
else
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/tritonclient-check.XXXXXX")
    venv=$tmp/venv
fi

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        echo "SKIPPED: python3 cannot create a venv (is python3-venv installed?)"
        exit 0
    fi
fi
if ! "$venv/bin/python" -c "import tritonclient.http, tritonclient.grpc" >/dev/null 2>&1; then
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --timeout 60 "tritonclient[http,grpc]"; then
        echo "SKIPPED: could not install tritonclient[http,grpc] from PyPI"
        exit 0
    fi
fi

"$venv/bin/python" -c "import importlib.metadata as m; print('tritonclient', m.version('tritonclient'))" || true
exec "$venv/bin/python" "$here/check.py" --http "$http" --grpc "$grpc" "$@"
