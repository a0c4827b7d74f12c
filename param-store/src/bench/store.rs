//! The parameter-store side of the benchmark: N in-process shards on loopback, one routing client
//! per worker, push = `ParamStoreClient::push`, pull = `pull_changed` applied to a local replica.

use cumulus_proto::paramstore::v1 as pb;

use super::driver::{ExchangeWorker, drive};
use super::workload::TENSOR;
use super::{BenchOptions, BenchRow};
use crate::client::{ClientConfig, ParamStoreClient, SparseUpdate, Versions};
use crate::config::ShardConfig;
use crate::error::Result;
use crate::server::run;

const JOB: &str = "bench";

struct StoreWorker {
    client: ParamStoreClient,
    id: u32,
    since: Versions,
    replica: Vec<f32>,
}

impl ExchangeWorker for StoreWorker {
    async fn push(&mut self, round: usize, update: SparseUpdate) -> Result<u64> {
        let bytes = update.wire_bytes();
        let seq = round as u64 + 1;
        self.client
            .push(JOB, self.id, round as u64, seq, vec![update])
            .await?;
        Ok(bytes)
    }

    async fn pull(&mut self, _round: usize) -> Result<u64> {
        let (changed, next) = self.client.pull_changed(JOB, &self.since, None).await?;
        self.since = next;
        let mut bytes = 0;
        for t in changed {
            bytes += t.wire_bytes;
            for (i, v) in t.indices.iter().zip(&t.values) {
                if let Some(x) = self.replica.get_mut(*i as usize) {
                    *x = *v;
                }
            }
        }
        Ok(bytes)
    }
}

/// Measures one configuration against fresh shards.
pub async fn measure(
    opts: &BenchOptions,
    shards: u32,
    workers: usize,
    density: f64,
) -> Result<BenchRow> {
    let dir = tempfile_dir()?;
    let mut handles = Vec::new();
    for i in 0..shards {
        let mut cfg = ShardConfig::new(([127, 0, 0, 1], 0).into(), dir.join(format!("shard-{i}")));
        cfg.shard_index = i;
        cfg.shard_count = shards;
        cfg.wal_fsync = opts.wal_fsync;
        cfg.max_message_bytes = 1 << 30;
        // Snapshots would land at random moments inside the measurement.
        cfg.snapshot_wal_bytes = 0;
        handles.push(run(cfg).await?);
    }
    let addrs: Vec<String> = handles.iter().map(|h| h.addr.to_string()).collect();
    let setup = ParamStoreClient::connect(&addrs, ClientConfig::default()).await?;
    setup
        .register(pb::RegisterRequest {
            job_id: JOB.into(),
            tensors: vec![pb::TensorSpec {
                name: TENSOR.into(),
                shape: vec![opts.params],
                init: None,
            }],
            sync: "asp".into(),
            workers: u32::try_from(workers).unwrap_or(u32::MAX),
            chunk_size: 0,
        })
        .await?;
    let mut ws = Vec::new();
    for id in 0..workers {
        let client = ParamStoreClient::connect(&addrs, ClientConfig::default()).await?;
        let since = client.no_versions();
        ws.push(StoreWorker {
            client,
            id: u32::try_from(id).unwrap_or(u32::MAX),
            since,
            replica: vec![0.0; usize::try_from(opts.params).unwrap_or(0)],
        });
    }
    // The first pull of a fresh replica fetches everything; take it before the clock starts.
    for w in &mut ws {
        w.pull(0).await?;
    }
    let row = drive(
        &format!("store-{shards}"),
        ws,
        opts.params,
        density,
        opts.rounds,
    )
    .await;
    for h in handles {
        h.stop().await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "cumulus-ps-bench-{}-{}",
        std::process::id(),
        crate::shard::new_snapshot_id()
    ));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
