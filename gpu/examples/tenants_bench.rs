//! N tenants running small-batch inference on one device, concurrently (the executor's shared
//! mode) against the same tenants taking exclusive turns (one work item on the device at a time),
//! for N = 1, 2, 4, 8. Every tenant is a real client on the executor's Unix socket, closed-loop
//! with `--outstanding` requests in flight; all tenants of a run share one resident copy of the
//! model. Reports aggregate throughput, p50/p99 latency per tenant and the shared/exclusive
//! ratio, as JSON and as a markdown table.
//!
//! ```text
//! cargo run -p cumulus-gpu --release --features cuda --example tenants_bench -- \
//!     --backend cuda --models mlp,lenet,resnet,transformer --tenants 1,2,4,8 --out results/
//! ```
//!
//! Timing is wall-clock over each window (device work is complete when a reply arrives, so no
//! extra synchronization is needed); a warm-up window precedes each measured one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use cumulus_gpu::{
    BackendChoice, ExecutorClient, ExecutorConfig, HostTensor, LayerRange, Listen, ModelSource,
    TenantOptions,
};
use cumulus_models::{Model, ModelConfig};
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Throughput of N tenants sharing one device vs taking exclusive turns")]
struct Args {
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Comma-separated zoo architectures (default-sized; `resnet` is ResNet-18 on 32x32).
    #[arg(long, default_value = "mlp,lenet,resnet,transformer")]
    models: String,
    /// Comma-separated tenant counts.
    #[arg(long, default_value = "1,2,4,8")]
    tenants: String,
    /// Examples per request.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// Requests each tenant keeps in flight.
    #[arg(long, default_value_t = 2)]
    outstanding: usize,
    /// Folder for `tenants_bench.json` and `tenants_bench.md`.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

#[derive(Serialize, Clone)]
struct TenantResult {
    tenant: usize,
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize, Clone)]
struct RunResult {
    model: String,
    mode: &'static str,
    tenants: usize,
    batch: usize,
    seconds: f64,
    requests: u64,
    throughput_rps: f64,
    /// Mean device seconds per item as the executor measured them.
    mean_device_ms: f64,
    worst_p99_ms: f64,
    per_tenant: Vec<TenantResult>,
}

#[derive(Serialize)]
struct Speedup {
    model: String,
    tenants: usize,
    shared_rps: f64,
    exclusive_rps: f64,
    ratio: f64,
    shared_worst_p99_ms: f64,
    exclusive_worst_p99_ms: f64,
}

#[derive(Serialize)]
struct Report {
    backend: String,
    device: String,
    batch: usize,
    seconds: f64,
    outstanding: usize,
    runs: Vec<RunResult>,
    speedups: Vec<Speedup>,
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Vec<T> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad {what} `{p}`"))
        })
        .collect()
}

/// One tenant's closed loop: `outstanding` request loops until `until`.
async fn tenant_loop(
    client: ExecutorClient,
    model: cumulus_gpu::ModelHandle,
    x: HostTensor,
    outstanding: usize,
    warm_until: Instant,
    until: Instant,
) -> (Histogram<u64>, u64, f64) {
    let mut loops = Vec::new();
    for _ in 0..outstanding {
        let (c, m, x) = (client.clone(), model.clone(), x.clone());
        loops.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut n, mut device) = (0u64, 0f64);
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let out = c.forward_timed(&m, &x).await.expect("forward");
                let done = Instant::now();
                if t0 >= warm_until && done <= until {
                    h.record((done - t0).as_micros().max(1) as u64)
                        .expect("in bounds");
                    n += 1;
                    device += out.device_seconds;
                }
            }
            (h, n, device)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut total, mut device) = (0, 0.0);
    for l in loops {
        let (h, n, d) = l.await.expect("loop task");
        hist.add(h).expect("same bounds");
        total += n;
        device += d;
    }
    (hist, total, device)
}

async fn run_one(
    args: &Args,
    listen: &Listen,
    folder: &Path,
    x: &HostTensor,
    arch: &str,
    mode: &'static str,
    tenants: usize,
) -> RunResult {
    let mut clients = Vec::new();
    for t in 0..tenants {
        let c = ExecutorClient::connect(listen, TenantOptions::named(format!("bench-{t}")))
            .await
            .expect("tenant connects");
        let m = c
            .load_model(ModelSource::Folder(folder.to_path_buf()), LayerRange::all())
            .await
            .expect("model loads");
        clients.push((c, m));
    }
    let start = Instant::now();
    let warm_until = start + Duration::from_secs_f64(args.warmup_seconds);
    let until = warm_until + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for (c, m) in &clients {
        tasks.push(tokio::spawn(tenant_loop(
            c.clone(),
            m.clone(),
            x.clone(),
            args.outstanding,
            warm_until,
            until,
        )));
    }
    let mut per_tenant = Vec::new();
    let (mut total, mut device) = (0u64, 0f64);
    for (i, t) in tasks.into_iter().enumerate() {
        let (h, n, d) = t.await.expect("tenant task");
        total += n;
        device += d;
        per_tenant.push(TenantResult {
            tenant: i,
            requests: n,
            rps: n as f64 / args.seconds,
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        });
    }
    drop(clients);
    let worst_p99_ms = per_tenant.iter().map(|t| t.p99_ms).fold(0.0, f64::max);
    RunResult {
        model: arch.to_string(),
        mode,
        tenants,
        batch: args.batch,
        seconds: args.seconds,
        requests: total,
        throughput_rps: total as f64 / args.seconds,
        mean_device_ms: if total > 0 {
            device / total as f64 * 1000.0
        } else {
            0.0
        },
        worst_p99_ms,
        per_tenant,
    }
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Tenants sharing one device vs exclusive turns\n\nbackend `{}`, device {}, batch {}, {} s per run, {} requests in flight per tenant\n\n",
        r.backend, r.device, r.batch, r.seconds, r.outstanding
    );
    s.push_str("| model | tenants | shared req/s | exclusive req/s | ratio | shared worst p99 ms | exclusive worst p99 ms |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for x in &r.speedups {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x | {:.2} | {:.2} |\n",
            x.model,
            x.tenants,
            x.shared_rps,
            x.exclusive_rps,
            x.ratio,
            x.shared_worst_p99_ms,
            x.exclusive_worst_p99_ms
        ));
    }
    s.push_str("\nPer tenant p99 (ms), shared / exclusive:\n\n");
    for x in &r.speedups {
        let find = |mode: &str| {
            r.runs
                .iter()
                .find(|run| run.model == x.model && run.tenants == x.tenants && run.mode == mode)
                .map(|run| {
                    run.per_tenant
                        .iter()
                        .map(|t| format!("{:.2}", t.p99_ms))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        s.push_str(&format!(
            "- {} x{}: {} / {}\n",
            x.model,
            x.tenants,
            find("shared"),
            find("exclusive")
        ));
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "auto" => BackendChoice::Auto,
        "cpu" => BackendChoice::Cpu,
        "cuda" => BackendChoice::Cuda,
        other => panic!("--backend must be auto, cpu or cuda, got {other}"),
    };
    let archs: Vec<String> = list(&args.models, "model");
    let counts: Vec<usize> = list(&args.tenants, "tenant count");
    std::fs::create_dir_all(&args.out).expect("output folder");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut report = Report {
        backend: String::new(),
        device: String::new(),
        batch: args.batch,
        seconds: args.seconds,
        outstanding: args.outstanding,
        runs: Vec::new(),
        speedups: Vec::new(),
    };
    for arch in &archs {
        let cfg = ModelConfig::default_for(arch).expect("a zoo architecture");
        let model = Model::with_seed(&cfg, &candle_core::Device::Cpu, 7).expect("model");
        let folder = dir.path().join(arch);
        model.save(&folder).expect("model saves");
        let x = HostTensor::from_candle(&model.example_input(args.batch).expect("input"))
            .expect("host tensor");
        let mut by_mode = Vec::new();
        for mode in ["shared", "exclusive"] {
            let mut cfg = ExecutorConfig {
                backend,
                max_queue_per_tenant: 256,
                ..ExecutorConfig::new(Listen::Unix(dir.path().join(format!("{arch}-{mode}.sock"))))
            };
            cfg.tenant_defaults.max_in_flight = args.outstanding.max(1) as u32;
            if mode == "exclusive" {
                cfg = cfg.exclusive_turns();
            }
            let exec = cumulus_gpu::run(cfg).await.expect("executor starts");
            report.backend = exec.backend.to_string();
            report.device = exec.device.clone();
            let mut runs = Vec::new();
            for &n in &counts {
                let r = run_one(&args, &exec.listen, &folder, &x, arch, mode, n).await;
                println!(
                    "{arch:<12} {mode:<9} tenants {n}: {:>9.1} req/s, worst p99 {:>8.2} ms, device {:.3} ms/item",
                    r.throughput_rps, r.worst_p99_ms, r.mean_device_ms
                );
                runs.push(r);
            }
            exec.stop().await.expect("executor stops");
            by_mode.push(runs);
        }
        for (shared, exclusive) in by_mode[0].iter().zip(&by_mode[1]) {
            report.speedups.push(Speedup {
                model: arch.clone(),
                tenants: shared.tenants,
                shared_rps: shared.throughput_rps,
                exclusive_rps: exclusive.throughput_rps,
                ratio: shared.throughput_rps / exclusive.throughput_rps.max(1e-9),
                shared_worst_p99_ms: shared.worst_p99_ms,
                exclusive_worst_p99_ms: exclusive.worst_p99_ms,
            });
        }
        for runs in by_mode {
            report.runs.extend(runs);
        }
    }
    let md = markdown(&report);
    println!("\n{md}");
    std::fs::write(
        args.out.join("tenants_bench.json"),
        serde_json::to_string_pretty(&report).expect("serializes"),
    )
    .expect("writes json");
    std::fs::write(args.out.join("tenants_bench.md"), md).expect("writes markdown");
}
