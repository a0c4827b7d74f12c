//! `cumulus bench param-store`: W workers each push a sparse update of density d of a P-parameter
//! model and then pull what the others changed, through the parameter store (1 and N shards,
//! in-process servers on loopback) and, side by side in the same run, through Redis as MLLess uses
//! it (each worker SETs its update as one value; every other worker GETs it and applies it
//! locally). Both sides move the same payload encoding (`paramstore.v1.TensorUpdate`).
//!
//! Reports exchanges/s (one exchange = one worker's push + pull), payload bytes/s, and p50/p99 of
//! push and pull latency; prints a table and writes JSON. Not a test: it never runs in CI.

mod driver;
mod redis_peer;
mod store;
pub mod workload;

use std::path::PathBuf;

use crate::error::{Result, StoreError};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Worker counts.
    pub workers: Vec<usize>,
    /// Densities as fractions (0.01 = 1%).
    pub densities: Vec<f64>,
    /// Shard counts of the parameter store.
    pub shards: Vec<u32>,
    /// Model parameters.
    pub params: u64,
    /// Exchanges per worker per configuration.
    pub rounds: usize,
    /// `redis-server` binary; `None` skips Redis.
    pub redis_server: Option<PathBuf>,
    /// fsync the store's write-ahead log.
    pub wal_fsync: bool,
    /// JSON output file.
    pub out: Option<PathBuf>,
}

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// `store-1`, `store-4` (shards) or `redis`.
    pub system: String,
    /// Workers.
    pub workers: usize,
    /// Density (fraction).
    pub density: f64,
    /// Exchanges per second (all workers).
    pub exchanges_per_s: f64,
    /// Payload bytes per second (pushed + pulled).
    pub bytes_per_s: f64,
    /// Push latency p50, ms.
    pub push_p50_ms: f64,
    /// Push latency p99, ms.
    pub push_p99_ms: f64,
    /// Pull latency p50, ms.
    pub pull_p50_ms: f64,
    /// Pull latency p99, ms.
    pub pull_p99_ms: f64,
    /// Wall time, s.
    pub seconds: f64,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Model parameters.
    pub params: u64,
    /// Rounds per configuration.
    pub rounds: usize,
    /// Whether the store fsynced its log.
    pub wal_fsync: bool,
    /// Rows.
    pub rows: Vec<BenchRow>,
}

/// Runs the benchmark on its own runtime, prints the table, writes the JSON.
pub fn run_blocking(opts: BenchOptions) -> Result<BenchReport> {
    if opts.workers.iter().any(|&w| w == 0 || w > 64) || opts.rounds == 0 || opts.params == 0 {
        return Err(StoreError::invalid(
            "workers must be in 1..=64, rounds and params at least 1",
        ));
    }
    if opts.densities.iter().any(|d| !(*d > 0.0 && *d <= 1.0)) {
        return Err(StoreError::invalid("densities must be in (0, 100] percent"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&opts))?;
    print_table(&report);
    if let Some(out) = &opts.out {
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| StoreError::invalid(e.to_string()))?;
        std::fs::write(out, json)?;
        println!("wrote {}", out.display());
    }
    Ok(report)
}

async fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let mut rows = Vec::new();
    let redis = match &opts.redis_server {
        Some(bin) => Some(redis_peer::RedisServer::start(bin).await?),
        None => None,
    };
    for &w in &opts.workers {
        for &d in &opts.densities {
            for &n in &opts.shards {
                let row = store::measure(opts, n, w, d).await?;
                eprintln!("{}", one_line(&row));
                rows.push(row);
            }
            if let Some(redis) = &redis {
                let row = redis_peer::measure(opts, redis, w, d).await?;
                eprintln!("{}", one_line(&row));
                rows.push(row);
            }
        }
    }
    Ok(BenchReport {
        params: opts.params,
        rounds: opts.rounds,
        wal_fsync: opts.wal_fsync,
        rows,
    })
}

fn one_line(r: &BenchRow) -> String {
    format!(
        "{:<8} W={:<2} d={:>6.2}%  {:>9.1} exch/s  {:>9.1} MB/s  push p50 {:>8.2} p99 {:>8.2} ms  pull p50 {:>8.2} p99 {:>8.2} ms",
        r.system,
        r.workers,
        r.density * 100.0,
        r.exchanges_per_s,
        r.bytes_per_s / 1e6,
        r.push_p50_ms,
        r.push_p99_ms,
        r.pull_p50_ms,
        r.pull_p99_ms
    )
}

fn print_table(report: &BenchReport) {
    println!(
        "parameter store vs Redis: {} params, {} rounds, store fsync {}",
        report.params, report.rounds, report.wal_fsync
    );
    println!(
        "{:<8} {:>3} {:>8} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "system",
        "W",
        "density",
        "exch/s",
        "MB/s",
        "push p50",
        "push p99",
        "pull p50",
        "pull p99",
        "vs redis"
    );
    for r in &report.rows {
        let redis = report
            .rows
            .iter()
            .find(|x| x.system == "redis" && x.workers == r.workers && x.density == r.density);
        let ratio = redis.map_or(String::from("-"), |x| {
            format!("{:.2}x", r.exchanges_per_s / x.exchanges_per_s)
        });
        println!(
            "{:<8} {:>3} {:>7.1}% {:>11.1} {:>10.1} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9}",
            r.system,
            r.workers,
            r.density * 100.0,
            r.exchanges_per_s,
            r.bytes_per_s / 1e6,
            r.push_p50_ms,
            r.push_p99_ms,
            r.pull_p50_ms,
            r.pull_p99_ms,
            ratio
        );
    }
}
