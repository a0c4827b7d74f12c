#!/usr/bin/env python3
"""Check the load generator against an independent one: oha with --latency-correction (which also
measures from the scheduled send time), at one constant rate against one MLServer.

    python crosscheck.py --loadgen PATH --oha PATH [--rate 300] [--duration 10]

Starts MLServer (batching off, parallel_workers 0) pinned to core 0, then runs on core 1, one
after the other against the same server: ours, oha, ours again (the two runs of ours show the
run-to-run spread the comparison must be read against). Both generators send the same body at
evenly spaced times (ours: --arrival constant; oha: -q). Writes crosscheck.json and prints a table.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import bench

HERE = Path(__file__).resolve().parent


def ours(args, url, pid, out):
    cmd = bench.generator_prefix(args) + [
        str(args.loadgen), "--url", url, "--rates", str(args.rate), "--arrival", "constant",
        "--duration", str(args.duration), "--warmup", str(args.warmup), "--bisect-steps", "0",
        "--server-pid", str(pid), "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    run = json.loads(out.read_text())["sweep"]["runs"][0]
    lat = run["latency"]
    return {"generator": "cumulus loadgen", "requests": lat["count"], "p50_ms": lat["p50_ms"],
            "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"], "mean_ms": lat["mean_ms"],
            "errors": run["errors"], "achieved_rate": run["achieved_send_rate"]}


def oha(args, url, body_file, out):
    # oha has no warm-up: warm the server with a short run first, then measure.
    base = bench.generator_prefix(args) + [
        str(args.oha), "-q", str(args.rate), "--latency-correction", "-c", str(args.oha_connections), "--no-tui",
        "-m", "POST", "-H", "content-type: application/json", "-D", str(body_file),
        "--output-format", "json"]
    subprocess.run(base + ["-z", f"{args.warmup}s", f"{url}/v2/models/mlp/infer"], check=True,
                   stdout=subprocess.DEVNULL)
    proc = subprocess.run(base + ["-z", f"{args.duration}s", f"{url}/v2/models/mlp/infer"],
                          check=True, stdout=subprocess.PIPE, text=True)
    out.write_text(proc.stdout)
    r = json.loads(proc.stdout)
    pct = r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    return {"generator": "oha --latency-correction", "requests": sum(codes.values()),
            "p50_ms": pct["p50"] * 1000, "p90_ms": pct["p90"] * 1000, "p99_ms": pct["p99"] * 1000,
            "mean_ms": r["summary"]["average"] * 1000,
            "errors": sum(v for k, v in codes.items() if k != "200") + len(r.get("errorDistribution", {})),
            "achieved_rate": r["summary"]["requestsPerSec"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loadgen", type=Path, required=True)
    ap.add_argument("--oha", type=Path, required=True)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--oha-connections", type=int, default=256,
                    help="oha -c: its connections, i.e. the most requests it has in flight")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--model-dir", type=Path, default=HERE / "out" / "model")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out" / "crosscheck")
    ap.add_argument("--mlserver-venv", type=Path, default=HERE / ".venv" / "mlserver")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--nice", type=int, default=-10)
    ap.add_argument("--client-rt", action=bench.argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--result", type=Path, default=HERE / "crosscheck.json")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    reference = json.loads((args.model_dir / "reference.json").read_text())

    # oha sends one fixed body: a [1, 784] row of the same kind as ours (uniform [0, 1) floats,
    # written as the shortest f32 representation, as serde_json writes ours), so the server
    # parses a body of the same size.
    import numpy as np
    row = ",".join(np.format_float_positional(np.float32(v), unique=True, trim="-")
                   for v in reference["inputs"][0])
    body_file = args.out_dir / "body.json"
    body_file.write_text('{"inputs":[{"name":"input","shape":[1,784],"datatype":"FP32","data":['
                         + row + ']}]}')

    server, base, health, _ = bench.start_mlserver(args, ("off-pw0", 1, 0.0, 0), args.out_dir,
                                                   args.out_dir / "mlserver.log")
    rows = []
    try:
        bench.wait_ready(server, health, f"{base}/v2/models/mlp/infer", reference)
        time.sleep(3)
        rows.append(ours(args, base, server.pid, args.out_dir / "ours-1.json"))
        time.sleep(2)
        rows.append(oha(args, base, body_file, args.out_dir / "oha.json"))
        time.sleep(2)
        rows.append(ours(args, base, server.pid, args.out_dir / "ours-2.json"))
    finally:
        server.stop()
    result = {"server": "mlserver off-pw0", "rate": args.rate, "duration_s": args.duration,
              "oha_connections": args.oha_connections,
              "arrival": "constant (evenly spaced)", "runs": rows,
              "load_after": bench.os.getloadavg()[0]}
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'generator':<28} {'requests':>8} {'rate':>7} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'mean ms':>7} {'errors':>6}")
    for r in rows:
        print(f"{r['generator']:<28} {r['requests']:>8} {r['achieved_rate']:>7.1f} "
              f"{r['p50_ms']:>7.2f} {r['p90_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['mean_ms']:>7.2f} "
              f"{r['errors']:>6}")


if __name__ == "__main__":
    main()
