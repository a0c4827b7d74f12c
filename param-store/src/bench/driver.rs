//! The exchange loop shared by both systems: per round, every worker pushes (timed), a barrier,
//! every worker pulls and applies what changed (timed), a barrier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Barrier;

use super::BenchRow;
use super::workload::{histogram, make_update, record};
use crate::client::SparseUpdate;
use crate::error::{Result, StoreError};

/// One worker's side of a channel.
pub trait ExchangeWorker: Send + 'static {
    /// Publishes this worker's update; returns payload bytes sent.
    fn push(
        &mut self,
        round: usize,
        update: SparseUpdate,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Fetches and applies what the others changed; returns payload bytes received.
    fn pull(&mut self, round: usize) -> impl Future<Output = Result<u64>> + Send;
}

struct WorkerResult {
    push: Histogram<u64>,
    pull: Histogram<u64>,
    bytes: u64,
}

/// Runs `rounds` exchanges on every worker and summarizes them.
pub async fn drive<W: ExchangeWorker>(
    system: &str,
    workers: Vec<W>,
    params: u64,
    density: f64,
    rounds: usize,
) -> Result<BenchRow> {
    let n = workers.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for (id, mut w) in workers.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerResult {
                push: histogram(),
                pull: histogram(),
                bytes: 0,
            };
            for round in 0..rounds {
                // Generating the update is not part of the exchange.
                let update =
                    tokio::task::block_in_place(|| make_update(params, density, id, round));
                barrier.wait().await;
                let t0 = Instant::now();
                out.bytes += w.push(round, update).await?;
                record(&mut out.push, t0.elapsed());
                barrier.wait().await;
                let t0 = Instant::now();
                out.bytes += w.pull(round).await?;
                record(&mut out.pull, t0.elapsed());
                barrier.wait().await;
            }
            Ok::<_, StoreError>(out)
        }));
    }
    // The clock runs only while exchanges run: from each round's start to its end.
    let mut busy = Duration::ZERO;
    for _ in 0..rounds {
        barrier.wait().await;
        let t0 = Instant::now();
        barrier.wait().await;
        barrier.wait().await;
        busy += t0.elapsed();
    }
    let mut push = histogram();
    let mut pull = histogram();
    let mut bytes = 0;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| StoreError::invalid(format!("bench worker: {e}")))??;
        push.add(&r.push)
            .map_err(|e| StoreError::invalid(e.to_string()))?;
        pull.add(&r.pull)
            .map_err(|e| StoreError::invalid(e.to_string()))?;
        bytes += r.bytes;
    }
    let secs = busy.as_secs_f64().max(1e-9);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchRow {
        system: system.to_owned(),
        workers: n,
        density,
        exchanges_per_s: (n * rounds) as f64 / secs,
        bytes_per_s: bytes as f64 / secs,
        push_p50_ms: ms(&push, 0.5),
        push_p99_ms: ms(&push, 0.99),
        pull_p50_ms: ms(&pull, 0.5),
        pull_p99_ms: ms(&pull, 0.99),
        seconds: secs,
    })
}
