#!/usr/bin/env python3
"""The serving benchmark's driver (run by run.sh; see README.md).

For each system (cumulus, mlserver, ray) and each configuration of its grid it starts the server
pinned to one core (``taskset -c 0``), waits until it is ready, checks its answers against the
reference outputs of make_model.py, runs the open-loop load generator pinned to another core
(``taskset -c 1``, ``inference/examples/loadgen.rs``) over a rate sweep, stops the server and keeps
``out/<system>-<config>.json``. Then it writes ``results.json``, ``results.md`` and ``results.png``
(p99 against rate, the best configuration of each system).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Each peer's grid: batching off, and batch sizes 8/32 with max waits 1/5 ms.
GRID = [
    ("off", 1, 0.0),
    ("b8-w1ms", 8, 1.0),
    ("b8-w5ms", 8, 5.0),
    ("b32-w1ms", 32, 1.0),
    ("b32-w5ms", 32, 5.0),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid):
    """Live descendants of pid, from /proc (so they can be ended by pid if the tree outlives its
    root's SIGTERM)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def wait_quiet(threshold, limit_s=600):
    """Wait (bounded) until the 1-minute load average is below threshold: the cores are shared."""
    if threshold <= 0:
        return
    start = time.time()
    while time.time() - start < limit_s:
        load = os.getloadavg()[0]
        if load < threshold:
            return
        print(f"  load {load:.2f} >= {threshold}: waiting", flush=True)
        time.sleep(15)


def http_json(url, body=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


def pinned(core, nice):
    """The prefix that runs a command on one core at a raised priority: the cores are shared with
    other work (builds), and without it a wake-up of the server or of the generator can wait
    behind a compiler's time slice, which then dominates the tail latency of every system."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    return prefix + ["taskset", "-c", str(core)]


def generator_prefix(args):
    """The generator's prefix: real-time FIFO priority 1 on its core when --client-rt (the
    default), so its dispatcher wakes at each send time instead of after a compiler's time slice
    (the measured send lag p99 went from ~4 ms to ~0.2 ms). It sleeps between sends and uses a
    fifth of its core at the highest rates, so it cannot starve the core (the kernel's RT
    throttling caps it at 95% anyway)."""
    if args.client_rt:
        return ["chrt", "-f", "1", "taskset", "-c", str(args.client_core)]
    return pinned(args.client_core, args.nice)


def raise_autogroup(pid, nice):
    """With autogroup scheduling (kernel.sched_autogroup_enabled), nice only ranks processes
    within one session; between sessions it is the session's autogroup nice that counts. Every
    process started here leads a session of its own, so raise that too (root only; best effort)."""
    if not nice:
        return
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError as e:
        print(f"  cannot set the autogroup nice of {pid}: {e}", flush=True)


class Server:
    """One server process started in a session of its own, pinned to `core`."""

    def __init__(self, name, argv, env, cwd, log, core, nice):
        self.name = name
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            pinned(core, nice) + argv, cwd=cwd, env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        # nice and taskset exec the server: the pid is the server's.
        self.pid = self.proc.pid
        raise_autogroup(self.pid, nice)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        tree = descendants(self.pid)
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(1)
        for pid in tree:  # Whatever of the tree outlived its root, by pid.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def wait_ready(server, health_url, infer_url, reference, timeout_s=240):
    """Ready when the health URL (if any) answers 200 and an inference succeeds; then every
    reference input is sent once and compared with the reference output."""
    deadline = time.time() + timeout_s
    body0 = v2_body(reference["inputs"][0])
    while time.time() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode} before ready")
        try:
            if health_url:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status != 200:
                        raise urllib.error.URLError("not ready")
            status, _ = http_json(infer_url, body0, timeout=5)
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{server.name} not ready after {timeout_s} s")
    worst = 0.0
    for x, want in zip(reference["inputs"], reference["outputs"]):
        _, ans = http_json(infer_url, v2_body(x), timeout=10)
        got = [float(v) for v in flatten(ans["outputs"][0]["data"])]
        worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
    if worst > 1e-4:
        raise RuntimeError(f"{server.name} answers differ from the reference by {worst}")
    return worst


def flatten(v):
    return [z for y in v for z in flatten(y)] if isinstance(v, list) else [v]


def v2_body(x):
    return {"inputs": [{"name": "input", "shape": [1, len(x)], "datatype": "FP32", "data": x}]}


# --- the systems --------------------------------------------------------------------------------

def mlserver_configs(args):
    out = [(f"{name}-pw0", batch, wait, 0) for name, batch, wait in GRID]
    if not args.skip_pw1:
        out.append(("off-pw1", 1, 0.0, 1))
    return out


def start_mlserver(args, cfg, work, log):
    name, batch, wait_ms, workers = cfg
    repo = work / f"mlserver-{name}"
    (repo / "mlp").mkdir(parents=True, exist_ok=True)
    (repo / "mlp" / "mlp.onnx").write_bytes((args.model_dir / "mlp.onnx").read_bytes())
    (repo / "mlp" / "model-settings.json").write_text(json.dumps({
        "name": "mlp",
        "implementation": "ort_runtime.OnnxRuntime",
        "parameters": {"uri": "./mlp.onnx"},
        # Batching off is max_batch_size 1 (MLServer's default).
        "max_batch_size": batch,
        "max_batch_time": wait_ms / 1000.0,
    }, indent=2))
    http, grpc, metrics = free_port(), free_port(), free_port()
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": workers,
        # debug (the default) logs every request; off is MLServer's production setting.
        "debug": False,
    }, indent=2))
    env = dict(os.environ, PYTHONPATH=str(HERE / "peers"), OMP_NUM_THREADS="1")
    server = Server(f"mlserver-{name}", [str(args.mlserver_venv / "bin" / "mlserver"), "start", "."],
                    env, repo, log, args.server_core, args.nice)
    base = f"http://127.0.0.1:{http}"
    return server, base, f"{base}/v2/health/ready", {
        "max_batch_size": batch, "max_batch_time_ms": wait_ms, "parallel_workers": workers}


def ray_configs(args):
    return [(name, batch, wait) for name, batch, wait in GRID]


def start_ray(args, cfg, work, log):
    name, batch, wait_ms = cfg
    port = free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    argv = [str(args.ray_venv / "bin" / "python"), str(HERE / "peers" / "ray_serve.py"),
            "--model", str(args.model_dir / "mlp.onnx"), "--port", str(port),
            "--batch", str(batch), "--wait-ms", str(wait_ms)]
    server = Server(f"ray-{name}", argv, env, work, log, args.server_core, args.nice)
    return server, f"http://127.0.0.1:{port}", None, {
        "max_batch_size": batch, "batch_wait_timeout_ms": wait_ms,
        "max_ongoing_requests": max(100, 2 * batch), "batching": batch > 1}


def cumulus_configs(args):
    if args.cumulus_config:
        return [("custom", None, None)]
    # Cumulus' own SLO-aware adaptive batcher and batching off, each with the batches run in
    # infer-stage functions (the serverless path) and on the gateway's own compute thread (what
    # the peers do). `[models.<name>]` keys of runtime/src/serving.rs.
    # The fixed (batch, wait) grid of the peers, on the function path, is what the adaptive
    # batcher is measured against.
    fixed = [(f"fixed-{name}", "fixed", "function", batch, wait)
             for name, batch, wait in GRID if batch > 1]
    return [("adaptive", "adaptive", "function", None, None),
            ("off", "off", "function", None, None),
            ("adaptive-inprocess", "adaptive", "in-process", None, None),
            ("off-inprocess", "off", "in-process", None, None)] + fixed


def start_cumulus(args, cfg, work, log):
    name, batching, execution, batch, wait_ms = cfg
    if args.cumulus_config:
        config = Path(args.cumulus_config).resolve()
    else:
        config = work / f"cumulus-{name}.toml"
        fixed = f"batch = {batch}\nwait_ms = {wait_ms}\n" if batching == "fixed" else ""
        config.write_text(
            "# Written by bench/serve/bench.py.\n[models.mlp]\n"
            f"slo_p99_ms = {args.slo_ms}\nmax_batch_size = 32\n"
            # The server has one core: one instance with a whole vCPU (1769 MB, as on
            # Lambda), not two throttled ones competing for it.
            "memory_mb = 1769\nmax_instances = 1\n"
            f'batching = "{batching}"\nexecution = "{execution}"\n{fixed}')
    http, grpc = free_port(), free_port()
    argv = [str(args.cumulus_bin), "serve", "--models", str(args.model_dir / "cumulus"),
            "--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{grpc}", "--config", str(config)]
    server = Server(f"cumulus-{name}", argv, dict(os.environ), work, log, args.server_core,
                    args.nice)
    base = f"http://127.0.0.1:{http}"
    server.grpc = f"http://127.0.0.1:{grpc}"
    return server, base, f"{base}/v2/health/ready", {
        "config": str(config), "batching": batching, "execution": execution,
        "batch": batch, "wait_ms": wait_ms}


SYSTEMS = {
    "mlserver": (mlserver_configs, start_mlserver),
    "ray": (ray_configs, start_ray),
    "cumulus": (cumulus_configs, start_cumulus),
}


def run_one(args, system, cfg, reference):
    configs, start = SYSTEMS[system]
    cfg_name = cfg[0]
    # A non-Poisson load is its own configuration: `adaptive-bursty` beside `adaptive`.
    if args.arrival != "poisson":
        cfg_name = f"{cfg_name}-{args.arrival}"
    label = f"{system}-{cfg_name}"
    out = args.out_dir / f"{label}.json"
    logs = args.out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work = args.out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    wait_quiet(args.quiet_load)
    load_before = os.getloadavg()[0]
    print(f"== {label}", flush=True)
    server, base, health, settings = start(args, cfg, work, logs / f"{label}.server.log")
    try:
        t0 = time.time()
        worst = wait_ready(server, health, f"{base}/v2/models/mlp/infer", reference)
        print(f"  ready in {time.time() - t0:.1f} s, answers within {worst:.1e} of the reference",
              flush=True)
        time.sleep(args.settle_s)
        transport = args.transport
        url = base
        if system == "cumulus" and transport == "grpc":
            url = server.grpc
        cmd = generator_prefix(args) + [str(args.loadgen), "--url", url,
               "--transport", transport, "--rates", ",".join(map(str, args.rates)),
               "--duration", str(args.duration), "--warmup", str(args.warmup),
               "--slo-ms", str(args.slo_ms), "--bisect-steps", str(args.bisect_steps),
               "--pause-s", str(args.pause_s), "--retries", str(args.retries),
               "--arrival", args.arrival,
               "--server-pid", str(server.pid),
               "--label", label, "--out", str(out)]
        if system == "cumulus":
            cmd += ["--metrics-url", f"{base}/metrics"]
        with open(logs / f"{label}.loadgen.log", "w") as lg:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=lg, text=True,
                                    start_new_session=True)
            raise_autogroup(proc.pid, args.nice)
            try:
                stdout, _ = proc.communicate()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        print(stdout, flush=True)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed ({proc.returncode}); see {lg.name}")
        swept = json.loads(out.read_text())["sweep"]
        if not any(abs(r["target_rate"] - args.common_rate) < 1e-9 for r in swept["runs"]):
            # The sweep stopped below the common rate: measure it anyway, so every system has
            # p50/p99 at the same rate (overloaded ones included).
            common = args.out_dir / "work" / f"{label}-common.json"
            at = cmd[:]
            at[at.index("--rates") + 1] = str(args.common_rate)
            at[at.index("--out") + 1] = str(common)
            at[at.index("--bisect-steps") + 1] = "0"
            at[at.index("--retries") + 1] = "0"
            time.sleep(args.pause_s)
            subprocess.run(at, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            extra = json.loads(common.read_text())
            data = json.loads(out.read_text())
            data["common_run"] = extra["sweep"]["runs"][0]
            out.write_text(json.dumps(data, indent=2))
    finally:
        server.stop()
    result = json.loads(out.read_text())
    result["system"], result["config"], result["settings"] = system, cfg_name, settings
    result["reference_max_abs_diff"] = worst
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    out.write_text(json.dumps(result, indent=2))
    return result


# --- summary ------------------------------------------------------------------------------------

def run_at(result, rate):
    """The run at `rate`: one that held if any did (a retried rate holds if any run holds), else
    the last one."""
    runs = [r for r in result["sweep"]["runs"] if abs(r["target_rate"] - rate) < 1e-9]
    held_runs = [r for r in runs if held(r, result["sweep"])]
    return (held_runs or runs or [None])[-1]


def held(r, sweep):
    return (r["ok"] > 0 and r["latency"]["p99_ms"] <= sweep["slo_ms"]
            and r["error_rate"] < sweep["max_error_rate"])


def summarize(results, common_rate):
    rows = []
    for res in results:
        sw = res["sweep"]
        best_rate = sw["max_sustainable_rate"]
        best = run_at(res, best_rate) if best_rate is not None else None
        common = run_at(res, common_rate) or res.get("common_run")
        rows.append({
            "system": res["system"], "config": res["config"], "settings": res["settings"],
            "max_sustainable_rate": best_rate,
            "first_unsustainable_rate": sw["first_unsustainable_rate"],
            "cpu_ms_per_request_at_max": best and best["server_cpu_ms_per_request"],
            "p50_ms_at_max": best and best["latency"]["p50_ms"],
            "p99_ms_at_max": best and best["latency"]["p99_ms"],
            "cost_per_million_usd_at_max": best and best["cost_per_million_usd"],
            "common_rate": common_rate,
            "p50_ms_at_common": common and common["latency"]["p50_ms"],
            "p99_ms_at_common": common and common["latency"]["p99_ms"],
            "cpu_ms_per_request_at_common": common and common["server_cpu_ms_per_request"],
            "held_at_common": bool(common and held(common, sw)),
            "load_before": res.get("load_before"), "load_after": res.get("load_after"),
        })
    best = {}
    for row in rows:
        if row["config"].endswith(("-bursty", "-constant")):
            continue  # the systems are ranked on the same (Poisson) load
        key = (row["max_sustainable_rate"] or 0.0, -(row["cpu_ms_per_request_at_max"] or 1e9))
        cur = best.get(row["system"])
        if cur is None or key > (cur["max_sustainable_rate"] or 0.0,
                                 -(cur["cpu_ms_per_request_at_max"] or 1e9)):
            best[row["system"]] = row
    return rows, best


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(rows, best, args, meta):
    lines = [
        "# Serving benchmark results",
        "",
        f"MLP 784-512-512-10 (ReLU), one request = one [1, 784] FP32 row over {args.transport}. "
        f"Server on core {args.server_core}, load generator on core {args.client_core}; "
        f"Poisson arrivals, {args.warmup:g} s warm-up + {args.duration:g} s measured per rate; "
        f"SLO p99 <= {args.slo_ms:g} ms with errors < 1%. Latency from the scheduled send time.",
        "",
        f"Machine: {meta['machine']}; 1-minute load average between {meta['load_min']:.2f} and "
        f"{meta['load_max']:.2f} at the starts and ends of the configurations (the 2 cores are "
        f"shared with other work).",
        "",
        "## Best configuration per system",
        "",
        f"| system | config | max sustainable rate (req/s) | CPU-ms/req at max | p50 / p99 ms at max "
        f"| $/M req at max | p50 / p99 ms at {args.common_rate:g} req/s | CPU-ms/req at {args.common_rate:g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, r in sorted(best.items()):
        lines.append(
            f"| {system} | {r['config']} | {fmt(r['max_sustainable_rate'])} | "
            f"{fmt(r['cpu_ms_per_request_at_max'], 3)} | {fmt(r['p50_ms_at_max'], 2)} / "
            f"{fmt(r['p99_ms_at_max'], 2)} | {fmt(r['cost_per_million_usd_at_max'], 3)} | "
            f"{fmt(r['p50_ms_at_common'], 2)} / {fmt(r['p99_ms_at_common'], 2)} | "
            f"{fmt(r['cpu_ms_per_request_at_common'], 3)} |")
    lines += ["", "## Every configuration", "",
              f"| system | config | max sustainable (req/s) | first failing (req/s) | CPU-ms/req at max "
              f"| p50 / p99 ms at max | p50 / p99 ms at {args.common_rate:g} req/s | load before/after |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['config']} | {fmt(r['max_sustainable_rate'])} | "
            f"{fmt(r['first_unsustainable_rate'])} | {fmt(r['cpu_ms_per_request_at_max'], 3)} | "
            f"{fmt(r['p50_ms_at_max'], 2)} / {fmt(r['p99_ms_at_max'], 2)} | "
            f"{fmt(r['p50_ms_at_common'], 2)} / {fmt(r['p99_ms_at_common'], 2)}"
            f"{'' if r['held_at_common'] else ' (failed)'} | "
            f"{fmt(r['load_before'], 2)} / {fmt(r['load_after'], 2)} |")
    lines += ["", "Per-rate tables: `out/<system>-<config>.json` (`sweep.runs`).", ""]
    return "\n".join(lines)


def plot(results, best, path, slo_ms):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for res in results:
        is_best = best.get(res["system"], {}).get("config") == res["config"]
        runs = sorted(res["sweep"]["runs"], key=lambda r: r["target_rate"])
        xs = [r["target_rate"] for r in runs if r["ok"] > 0]
        ys = [r["latency"]["p99_ms"] for r in runs if r["ok"] > 0]
        ax.plot(xs, ys, marker="o" if is_best else ".", linewidth=2.2 if is_best else 0.8,
                alpha=1.0 if is_best else 0.45,
                label=f"{res['system']} {res['config']}" + (" (best)" if is_best else ""))
    ax.axhline(slo_ms, color="red", linestyle="--", linewidth=1, label=f"SLO {slo_ms:g} ms")
    ax.set_xlabel("arrival rate (req/s, Poisson)")
    ax.set_ylabel("p99 latency (ms, from scheduled send)")
    ax.set_yscale("log")
    ax.set_title("p99 vs rate, one core per server")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_all(args, systems, wanted, reference, failures):
    for system in systems:
        if system not in SYSTEMS:
            sys.exit(f"unknown system {system}: expected one of {', '.join(SYSTEMS)}")
        for cfg in SYSTEMS[system][0](args):
            if wanted and cfg[0] not in wanted:
                continue
            try:
                run_one(args, system, cfg, reference)
            except RuntimeError as e:
                print(f"  {system}-{cfg[0]} FAILED: {e}", flush=True)
                failures.append(f"{system}-{cfg[0]}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default="mlserver,ray")
    ap.add_argument("--configs", default="", help="only these config names (comma-separated)")
    ap.add_argument("--loadgen", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, default=HERE / "out" / "model")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    ap.add_argument("--results", type=Path, default=HERE / "results",
                    help="prefix of results.{json,md,png}")
    ap.add_argument("--mlserver-venv", type=Path, default=HERE / ".venv" / "mlserver")
    ap.add_argument("--ray-venv", type=Path, default=HERE / ".venv" / "ray")
    ap.add_argument("--cumulus-bin", type=Path)
    ap.add_argument("--cumulus-config", help="a cumulus.toml to use instead of the generated ones")
    ap.add_argument("--transport", default="rest-json")
    ap.add_argument("--arrival", default="poisson", choices=["poisson", "constant", "bursty"],
                    help="the generator's arrival process; bursty: 4x the mean rate 1/4 of the time")
    # The committed peer runs used these defaults; keep them when adding a system with --merge.
    ap.add_argument("--rates", default="50,100,200,300,400,600,800,1000,1200,1600,2000,2400,3200")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--slo-ms", type=float, default=25.0)
    ap.add_argument("--bisect-steps", type=int, default=3)
    ap.add_argument("--pause-s", type=float, default=2.0)
    ap.add_argument("--retries", type=int, default=1,
                    help="re-runs of a failing rate before the sweep stops (any run holding holds)")
    ap.add_argument("--settle-s", type=float, default=3.0, help="idle seconds after ready")
    ap.add_argument("--common-rate", type=float, default=100.0)
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of servers and generator (0: as started; below 0 needs root)")
    ap.add_argument("--client-rt", action=argparse.BooleanOptionalAction, default=True,
                    help="run the generator at SCHED_FIFO priority 1 (root)")
    ap.add_argument("--quiet-load", type=float, default=0.0,
                    help="before each configuration wait until the 1-min load is below this")
    ap.add_argument("--skip-pw1", action="store_true", help="MLServer: no parallel_workers=1 run")
    ap.add_argument("--merge", action="store_true",
                    help="summarize every out/*.json, not only this invocation's systems")
    args = ap.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    # Servers start in their own working directories: make every path absolute.
    for key in ("loadgen", "model_dir", "out_dir", "mlserver_venv", "ray_venv", "cumulus_bin"):
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).resolve())
    if args.common_rate not in args.rates:
        args.rates.append(args.common_rate)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    reference = json.loads((args.model_dir / "reference.json").read_text())
    systems = [s for s in args.systems.split(",") if s]
    wanted = {c for c in args.configs.split(",") if c}
    meta = {"machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
            "load_before": os.getloadavg()[0]}
    failures = []

    def interrupted(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    try:
        run_all(args, systems, wanted, reference, failures)
    except KeyboardInterrupt:
        failures.append("interrupted")
        print("interrupted: the running server was stopped", flush=True)
    meta["load_after"] = os.getloadavg()[0]

    # Summarize what is in out/ for the systems asked (or all with --merge), so the Cumulus run
    # can be added later to the peers' committed results.
    results = []
    for f in sorted(args.out_dir.glob("*.json")):
        res = json.loads(f.read_text())
        if "system" in res and (args.merge or res["system"] in systems):
            results.append(res)
    previous = Path(f"{args.results}.json")
    if args.merge and previous.exists():
        # out/ is not committed: on a fresh checkout the peers' runs live only in results.json.
        have = {(r["system"], r["config"]) for r in results}
        for res in json.loads(previous.read_text()).get("results", []):
            if (res["system"], res["config"]) not in have:
                results.append(res)
    rows, best = summarize(results, args.common_rate)
    loads = [v for r in rows for v in (r["load_before"], r["load_after"]) if v is not None]
    meta["load_min"], meta["load_max"] = (min(loads), max(loads)) if loads else (0.0, 0.0)
    summary = {"meta": meta, "settings": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in vars(args).items()},
               "rows": rows, "best": best, "failures": failures,
               # Every configuration's full record (spec, plan, sweep, common run), for --merge.
               "results": results}
    prefix = args.results
    Path(f"{prefix}.json").write_text(json.dumps(summary, indent=2) + "\n")
    Path(f"{prefix}.md").write_text(markdown(rows, best, args, meta))
    plot(results, best, f"{prefix}.png", args.slo_ms)
    print(Path(f"{prefix}.md").read_text())
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
