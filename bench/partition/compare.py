#!/usr/bin/env python3
"""The partitioner benchmark (issue 12): Cumulus' exact solver against SCIP on the same models.

1. Times the solver over the grid of generated instances (layers 10..400 x tiers 3/6/10 x
   max_functions 4/8/16) with `partition_bench` -> the growth table.
2. Exports N generated instances (10-30 layers x 3-6 tiers x 3-8 functions) as JSON + LP, with
   our optimum (cost, and the plan as a SCIP .sol file) and our solve time.
3. For each: SCIP checks that our plan is a feasible solution of the LP model (check_sol), then
   solves the LP from scratch (single thread, default settings, time limit); the optima must
   agree (relative difference <= 1e-6 after undoing the scaling to $ per 1e6 requests), and
   infeasible instances must be infeasible for both.
4. Writes results.json and results.md (both tables) next to this script.

Run through run.sh, which makes the venv and builds the binary. Exit status 1 when SCIP and
Cumulus disagree on any instance.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyscipopt
from pyscipopt import Model

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-6


def fmt_time(us):
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1e6:.2f} s"


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pyscipopt": pyscipopt.__version__,
        "scip": str(Model().version()),
        "load_before": os.getloadavg()[0],
    }


def run_grid(args, out):
    json_path, md_path = out / "grid.json", out / "grid.md"
    cmd = [args.bin, "--json", str(json_path), "--markdown", str(md_path),
           "--instances", str(args.grid_instances), "--repeats", str(args.grid_repeats)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(json_path.read_text())


def export(args, out):
    folder = out / "instances"
    cmd = [args.bin, "--export-dir", str(folder), "--count", str(args.count), "--seed", str(args.seed)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return folder, json.loads((folder / "manifest.json").read_text())


def decode_plan(model, instance):
    """SCIP's plan as groups [(first, last, memory_mb)], from its x_l_k and z_k_m values."""
    values = {v.name: model.getVal(v) for v in model.getVars()}
    n, slots = len(instance["layers"]), min(instance["max_functions"], len(instance["layers"]))
    groups = []
    for k in range(1, slots + 1):
        layers = [l for l in range(n) if values.get(f"x_{l}_{k}", 0.0) > 0.5]
        tiers = [mb for mb in instance["tiers_mb"] if values.get(f"z_{k}_{mb}", 0.0) > 0.5]
        if layers:
            groups.append((min(layers), max(layers), tiers[0] if len(tiers) == 1 else None))
    return groups


def evaluate(instance, groups):
    """Cost, latency and broken constraints of a plan, by the definition (as the Rust evaluator)."""
    broken, compute, latency = [], 0.0, 0.0
    expected_first = 0
    for k, (first, last, mb) in enumerate(groups):
        if first != expected_first or mb is None:
            return None, None, ["not a partition with one tier per group"]
        expected_first = last + 1
        layers = instance["layers"][first:last + 1]
        payload = instance["input_bytes"] if first == 0 else instance["layers"][first - 1]["output_bytes"]
        if payload > instance["max_payload_bytes"]:
            broken.append(f"group {k}: payload")
        needed = (instance["base_memory_mb"] << 20) + sum(l["weight_bytes"] for l in layers) \
            + max(l["activation_bytes"] for l in layers)
        if needed > mb << 20:
            broken.append(f"group {k}: memory {needed} > {mb << 20}")
        run = 0.0
        for layer in layers:
            if str(mb) not in layer["time_ms"]:
                return None, None, broken + [f"group {k}: no time at {mb} MB"]
            run += layer["time_ms"][str(mb)]
        billed = run + payload / instance["bandwidth_bytes_per_ms"]
        compute += mb / 1024.0 * instance["price_per_gb_s"] * (billed / 1000.0)
        latency += instance["invoke_overhead_ms"] + billed
    if expected_first != len(instance["layers"]):
        return None, None, ["not a partition"]
    if len(groups) > instance["max_functions"]:
        broken.append("too many groups")
    if latency > instance["slo_ms"]:
        broken.append(f"latency {latency!r} > slo {instance['slo_ms']!r}")
    return compute + len(groups) * instance["price_per_invocation"], latency, broken


def scip_solve(folder, entry, scale, time_limit, objective_factor=1.0):
    """Solves the entry's LP with SCIP; `objective_factor` multiplies the objective first (1e-6
    undoes the export's scaling, to show why it is there)."""
    model = Model()
    model.hideOutput()
    model.setParam("limits/time", time_limit)
    model.setParam("parallel/maxnthreads", 1)
    start = time.perf_counter()
    model.readProblem(str(folder / entry["lp"]))
    read_s = time.perf_counter() - start
    if objective_factor != 1.0:
        model.setObjective(model.getObjective() * objective_factor, "minimize")
    ours_checks = None
    if entry.get("sol") and objective_factor == 1.0:
        sol = model.readSolFile(str(folder / entry["sol"]))
        ours_checks = bool(model.checkSol(sol, printreason=False, original=True))
        model.freeSol(sol)
    start = time.perf_counter()
    model.optimize()
    solve_wall_s = time.perf_counter() - start
    status = model.getStatus()
    objective = model.getObjVal() / objective_factor if model.getNSols() > 0 else None
    plan = {"groups": None, "cost_per_request": None, "latency_ms": None, "broken": None}
    if model.getNSols() > 0:
        instance = json.loads((folder / entry["instance"]).read_text())
        groups = decode_plan(model, instance)
        cost, latency, broken = evaluate(instance, groups)
        plan = {"groups": groups, "cost_per_request": cost, "latency_ms": latency, "broken": broken}
    result = {
        "status": status,
        "objective": objective,
        "cost_per_request": objective / scale if objective is not None else None,
        "dual_bound": model.getDualbound() if status != "infeasible" else None,
        "solving_s": model.getSolvingTime(),
        "read_s": read_s,
        "wall_s": read_s + solve_wall_s,
        "nodes": model.getNNodes(),
        "vars": model.getNVars(),
        "conss": model.getNConss(),
        "our_plan_is_feasible_in_model": ours_checks,
        "plan_by_definition": plan,
    }
    return result


def agree(entry, scip):
    if not entry["feasible"]:
        return scip["status"] == "infeasible", None
    if scip["status"] != "optimal" or scip["objective"] is None:
        return False, None
    ours = entry["objective"]
    diff = abs(scip["objective"] - ours) / max(abs(ours), 1e-300)
    ok = diff <= TOLERANCE and scip["our_plan_is_feasible_in_model"] is not False
    return ok, diff


def unscaled_cell(row):
    raw = row.get("scip_unscaled")
    if not raw:
        return "-"
    if raw["agree"]:
        return "same"
    value = f"{raw['objective']:.6f}" if raw["objective"] is not None else raw["status"]
    plan = raw["plan_by_definition"] or {}
    note = ""
    if plan.get("broken"):
        note = f" (plan breaks: {'; '.join(plan['broken'])})"
    elif plan.get("cost_per_request") is not None:
        note = f" (its plan costs {plan['cost_per_request'] * 1e6:.6f})"
    return f"**{value}**{note}"


def markdown(results):
    lines = []
    m = results["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores (1-minute load average {m['load_before']:.2f} before, "
                 f"{m.get('load_after', float('nan')):.2f} after: the machine is shared); SCIP {m['scip']} "
                 f"(PySCIPOpt {m['pyscipopt']}), single thread, default settings, time limit {results['time_limit_s']} s.\n")
    lines.append("## Solve-time growth (Cumulus, generated instances)\n")
    lines.append(f"Each cell: {results['grid']['config']['instances']} instances (seeds "
                 f"{results['grid']['config']['seed']}..), each timed as the median of "
                 f"{results['grid']['config']['repeats']} solves; median / p90 / max over the instances. "
                 "Infeasible instances are timed too (proving infeasibility is part of the job). "
                 "`candidate groups`: (group, tier) edges after dropping dominated tiers; `searched`: those "
                 "left after latency pruning and reduced-cost fixing; `labels`: partial plans created.\n")
    lines.append(results["grid_table"])
    lines.append("\n## Against SCIP (same model, LP file)\n")
    s = results["summary"]
    lines.append(f"{s['instances']} instances, {s['feasible']} feasible; agreement: **{s['agree']}/{s['instances']}** "
                 f"(optimal objective within a relative {TOLERANCE:g}, infeasible for both); our plan is a "
                 f"feasible solution of the model for {s['our_plans_feasible_in_model']}/{s['feasible']} "
                 f"(SCIP check_sol); largest relative difference {s['max_relative_difference']:.2e}.\n")
    lines.append(f"Speed: SCIP solving time / Cumulus solve time: median **{s['median_ratio']:,.0f}x**, "
                 f"min {s['min_ratio']:,.0f}x, max {s['max_ratio']:,.0f}x; including reading the file "
                 f"(SCIP read + solve wall / Cumulus parse JSON + validate + solve): median "
                 f"{s['median_wall_ratio']:,.0f}x, min {s['min_wall_ratio']:,.0f}x.\n")
    if s["unscaled_runs"]:
        lines.append(f"Why the export scales its objective: the same models with the objective in $ per request "
                     f"(coefficients ~1e-8, below SCIP's tolerances) give SCIP's \"optimal\" value within "
                     f"{TOLERANCE:g} of the optimum for {s['unscaled_agree']}/{s['unscaled_runs']} feasible instances "
                     f"(largest relative difference {s['unscaled_max_relative_difference']:.1e}); the column "
                     "`SCIP unscaled` shows them.\n")
    lines.append("| instance | layers x tiers x fns | Cumulus $/1e6 req | SCIP $/1e6 req | rel. diff | "
                 "SCIP nodes | Cumulus solve | SCIP solving | ratio | agree | SCIP unscaled |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|---|")
    for r in results["instances"]:
        ours = f"{r['objective']:.6f}" if r["objective"] is not None else "infeasible"
        scip = r["scip"]
        theirs = f"{scip['objective']:.6f}" if scip["objective"] is not None else scip["status"]
        diff = f"{r['relative_difference']:.1e}" if r["relative_difference"] is not None else "-"
        lines.append(f"| {r['name']} | {r['layers']}x{r['tiers']}x{r['max_functions']} | {ours} | {theirs} | {diff} | "
                     f"{scip['nodes']} | {fmt_time(r['solve_us'])} | {fmt_time(scip['solving_s'] * 1e6)} | "
                     f"{r['ratio']:,.0f}x | {'yes' if r['agree'] else '**NO**'} | {unscaled_cell(r)} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the partition_bench example binary")
    parser.add_argument("--count", type=int, default=20, help="instances for the SCIP comparison")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0, help="SCIP's, per instance, seconds")
    parser.add_argument("--grid-instances", type=int, default=10)
    parser.add_argument("--grid-repeats", type=int, default=5)
    parser.add_argument("--no-unscaled", action="store_true",
                        help="skip the second SCIP run with the objective in $ per request (unscaled)")
    parser.add_argument("--quiet-load", type=float, default=None,
                        help="first wait (at most --quiet-wait s) for the 1-minute load average to drop below this")
    parser.add_argument("--quiet-wait", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=HERE / "out", help="scratch folder (git-ignored)")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.quiet_load is not None:
        deadline = time.time() + args.quiet_wait
        while os.getloadavg()[0] >= args.quiet_load and time.time() < deadline:
            time.sleep(10)
    info = machine()
    print(f"load before the runs: {info['load_before']:.2f}", flush=True)
    grid = run_grid(args, args.out)
    folder, manifest = export(args, args.out)
    scale = manifest["objective_scale"]

    rows = []
    for entry in manifest["instances"]:
        scip = scip_solve(folder, entry, scale, args.time_limit)
        ok, diff = agree(entry, scip)
        unscaled = None
        if not args.no_unscaled and entry["feasible"]:
            raw = scip_solve(folder, entry, scale, args.time_limit, objective_factor=1.0 / scale)
            raw_ok, raw_diff = agree(entry, raw)
            unscaled = {"status": raw["status"], "objective": raw["objective"], "agree": raw_ok,
                        "relative_difference": raw_diff, "solving_s": raw["solving_s"],
                        "plan_by_definition": raw["plan_by_definition"]}
        ratio = scip["solving_s"] * 1e6 / entry["solve_us"]
        wall_ratio = scip["wall_s"] * 1e6 / entry["parse_and_solve_us"]
        row = {k: entry[k] for k in ("name", "layers", "tiers", "max_functions", "seed", "feasible",
                                     "objective", "cost_per_request", "latency_ms", "groups",
                                     "infeasibility", "solve_us", "parse_and_solve_us")}
        row.update(scip=scip, agree=ok, relative_difference=diff, ratio=ratio, wall_ratio=wall_ratio,
                   scip_unscaled=unscaled)
        rows.append(row)
        theirs = f"{scip['objective']:.9f}" if scip["objective"] is not None else scip["status"]
        ours = f"{entry['objective']:.9f}" if entry["objective"] is not None else "infeasible"
        print(f"{entry['name']:<16} ours {ours:>16} scip {theirs:>16}  {fmt_time(entry['solve_us']):>9} vs "
              f"{fmt_time(scip['solving_s'] * 1e6):>9}  {ratio:>10,.0f}x  {'ok' if ok else 'DISAGREE'}", flush=True)

    ratios = [r["ratio"] for r in rows]
    wall_ratios = [r["wall_ratio"] for r in rows]
    feasible = [r for r in rows if r["feasible"]]
    summary = {
        "instances": len(rows),
        "feasible": len(feasible),
        "agree": sum(r["agree"] for r in rows),
        "our_plans_feasible_in_model": sum(r["scip"]["our_plan_is_feasible_in_model"] is True for r in feasible),
        "max_relative_difference": max((r["relative_difference"] or 0.0) for r in rows),
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "median_wall_ratio": statistics.median(wall_ratios),
        "min_wall_ratio": min(wall_ratios),
        "median_cumulus_us": statistics.median(r["solve_us"] for r in rows),
        "median_scip_s": statistics.median(r["scip"]["solving_s"] for r in rows),
        "unscaled_runs": sum(r["scip_unscaled"] is not None for r in rows),
        "unscaled_agree": sum(bool(r["scip_unscaled"] and r["scip_unscaled"]["agree"]) for r in rows),
        "unscaled_max_relative_difference": max(
            ((r["scip_unscaled"] or {}).get("relative_difference") or 0.0) for r in rows),
    }
    grid_table = (args.out / "grid.md").read_text()
    info["load_after"] = os.getloadavg()[0]
    results = {
        "machine": info,
        "time_limit_s": args.time_limit,
        "tolerance": TOLERANCE,
        "grid": grid,
        "grid_table": grid_table,
        "export_seed": args.seed,
        "instances": rows,
        "summary": summary,
    }
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(markdown(results))
    print(f"\nagree {summary['agree']}/{summary['instances']}, median speed ratio {summary['median_ratio']:,.0f}x "
          f"(min {summary['min_ratio']:,.0f}x); wrote {args.results} and {args.markdown}")
    return 0 if summary["agree"] == summary["instances"] else 1


if __name__ == "__main__":
    sys.exit(main())
