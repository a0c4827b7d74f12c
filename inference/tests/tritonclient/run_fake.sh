#!/usr/bin/env bash
# Builds and starts examples/fake_kserve_server.rs on free ports, runs run.sh against it with
# the fake backend's exact checks (--fake), and stops the server.
#
#   inference/tests/tritonclient/run_fake.sh
#
# Honours CARGO_TARGET_DIR (and TRITONCLIENT_VENV, see run.sh). The server's body limit is set
# to 4 MiB so the oversized-request checks send 5 MB, not 65.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"
cargo build --quiet -p cumulus-inference --example fake_kserve_server
target=${CARGO_TARGET_DIR:-$root/target}
server=$target/debug/examples/fake_kserve_server

out=$(mktemp "${TMPDIR:-/tmp}/fake-kserve.XXXXXX")
"$server" --max-body-bytes 4194304 >"$out" 2>&1 &
pid=$!
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"; }
trap stop EXIT

for _ in $(seq 1 100); do
    if grep -q '^grpc ' "$out"; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$out" >&2; echo "the fake server exited" >&2; exit 1; fi
    sleep 0.1
done
http=$(awk '/^http /{print $2}' "$out")
grpc=$(awk '/^grpc /{print $2}' "$out")
if [ -z "$http" ] || [ -z "$grpc" ]; then cat "$out" >&2; echo "the fake server did not report its ports" >&2; exit 1; fi
echo "fake server: http $http, grpc $grpc"

"$here/run.sh" "$http" "$grpc" --fake --oversize-bytes 5000000
