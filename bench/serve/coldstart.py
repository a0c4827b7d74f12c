#!/usr/bin/env python3
"""Cold start and warm invoke overhead of `cumulus serve` on the function path.

Starts `cumulus serve` on the benchmark's model repository with a short keep-alive, then:
  * cold: waits until the model's function has scaled to zero, and times one request from its
    send to its answer (instance start + model load + forward + the HTTP round trip), N times;
  * warm: for batches of 1 and 32 rows (one request each, batching off), times sequential
    requests and reads the gateway's own histograms over those requests only: execution (the
    batch's invocation, as the gateway saw it) against compute (the forward inside the instance),
    whose difference is the invocation's overhead.
Prints a table and writes bench/serve/coldstart.json.

    bench/serve/coldstart.py --cumulus-bin target/release/cumulus [--repeats 10]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        assert r.status == 200, r.status
    return (time.perf_counter() - t) * 1e3


def metrics(base):
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        page = r.read().decode()
    out = {}
    for line in page.splitlines():
        m = re.match(r'^(cumulus_inference_(?:execution|compute)_duration_seconds)_(sum|count)'
                     r'\{[^}]*model="mlp"[^}]*\} (\S+)$', line)
        if m:
            key = (m.group(1).split("_")[2], m.group(2))
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def body(rows):
    return {"inputs": [{"name": "input", "shape": [rows, 784], "datatype": "FP32",
                        "data": [((i * 7) % 13) / 13.0 for i in range(rows * 784)]}]}


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cumulus-bin", type=Path, required=True)
    ap.add_argument("--models", type=Path, default=HERE / "out" / "model" / "cumulus")
    ap.add_argument("--repeats", type=int, default=10, help="cold starts timed")
    ap.add_argument("--warm", type=int, default=300, help="warm requests per batch size")
    ap.add_argument("--idle-ms", type=int, default=500)
    ap.add_argument("--out", type=Path, default=HERE / "coldstart.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cumulus-coldstart-"))
    config = work / "cumulus.toml"
    config.write_text("[functions]\nreap_interval_ms = 50\n[models.mlp]\n"
                      f'batching = "off"\nidle_ms = {args.idle_ms}\nslo_p99_ms = 10000\n')
    server = subprocess.Popen(
        [str(args.cumulus_bin), "serve", "--models", str(args.models), "--http", "127.0.0.1:0",
         "--grpc", "127.0.0.1:0", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=open(work / "serve.log", "w"), text=True,
        env=dict(os.environ, LOG_LEVEL="warn"))
    try:
        base = None
        for line in server.stdout:
            if line.startswith("http "):
                base = line.split()[1].removesuffix("/v2")
                break
        if base is None:
            sys.exit(f"serve did not start; see {work / 'serve.log'}")
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
        url = f"{base}/v2/models/mlp/infer"
        post(url, body(1))
        cold = []
        for _ in range(args.repeats):
            time.sleep(args.idle_ms / 1000 + 1.0)  # past the keep-alive: no instance is left
            cold.append(post(url, body(1)))
        warm = {}
        for rows in (1, 32):
            for _ in range(20):
                post(url, body(rows))
            before = metrics(base)
            lat = [post(url, body(rows)) for _ in range(args.warm)]
            after = metrics(base)
            d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            n = d[("execution", "count")]
            warm[rows] = {
                "request_p50_ms": pct(lat, 0.5), "request_p99_ms": pct(lat, 0.99),
                "execution_mean_ms": d[("execution", "sum")] / n * 1e3,
                "compute_mean_ms": d[("compute", "sum")] / d[("compute", "count")] * 1e3,
                "batches": n,
            }
            warm[rows]["invoke_overhead_ms"] = (warm[rows]["execution_mean_ms"]
                                                - warm[rows]["compute_mean_ms"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"cold_ms": cold, "cold_p50_ms": pct(cold, 0.5), "cold_max_ms": max(cold),
              "warm": warm}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"cold start (scaled to zero -> answer), {len(cold)} times: "
          f"p50 {result['cold_p50_ms']:.1f} ms, max {result['cold_max_ms']:.1f} ms")
    print("| rows | request p50 / p99 ms | execution (invocation) mean ms | compute (forward) "
          "mean ms | invoke overhead ms |")
    print("|---|---|---|---|---|")
    for rows, w in warm.items():
        print(f"| {rows} | {w['request_p50_ms']:.3f} / {w['request_p99_ms']:.3f} | "
              f"{w['execution_mean_ms']:.3f} | {w['compute_mean_ms']:.3f} | "
              f"{w['invoke_overhead_ms']:.3f} |")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
