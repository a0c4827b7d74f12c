//! The Redis side of the benchmark, as MLLess uses Redis: each worker SETs its encoded update as
//! one value under its own key; after a barrier every other worker GETs it, decodes it and adds it
//! to its local replica. `redis-server` runs on 127.0.0.1 on a free port, without persistence.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cumulus_proto::paramstore::v1 as pb;
use prost::Message;
use redis::AsyncCommands;

use super::driver::{ExchangeWorker, drive};
use super::workload::encode;
use super::{BenchOptions, BenchRow};
use crate::chunk::{decode_indices, decode_values};
use crate::client::SparseUpdate;
use crate::error::{Result, StoreError};

/// A `redis-server` child process, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    _child: tokio::process::Child,
    url: String,
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("redis: {e}")))
}

impl RedisServer {
    /// Starts `bin` on a free port and waits until it answers PING.
    pub async fn start(bin: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--protected-mode",
                "no",
                "--proto-max-bulk-len",
                "2gb",
                "--client-output-buffer-limit",
                "normal 0 0 0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                StoreError::Io(std::io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", bin.display()),
                ))
            })?;
        let url = format!("redis://127.0.0.1:{port}/");
        let client = redis::Client::open(url.as_str()).map_err(redis_err)?;
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(Self { _child: child, url });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Io(std::io::Error::other(
            "redis-server did not answer PING within 5 s",
        )))
    }
}

struct RedisWorker {
    conn: redis::aio::MultiplexedConnection,
    id: usize,
    workers: usize,
    replica: Vec<f32>,
}

fn key(worker: usize) -> String {
    format!("update:{worker}")
}

impl ExchangeWorker for RedisWorker {
    async fn push(&mut self, _round: usize, update: SparseUpdate) -> Result<u64> {
        let bytes = encode(update);
        let n = bytes.len() as u64;
        let () = self
            .conn
            .set(key(self.id), bytes)
            .await
            .map_err(redis_err)?;
        Ok(n)
    }

    async fn pull(&mut self, _round: usize) -> Result<u64> {
        let mut total = 0;
        for other in (0..self.workers).filter(|&o| o != self.id) {
            let bytes: Vec<u8> = self.conn.get(key(other)).await.map_err(redis_err)?;
            total += bytes.len() as u64;
            let update = pb::TensorUpdate::decode(bytes.as_slice())
                .map_err(|e| StoreError::invalid(format!("redis payload: {e}")))?;
            let bad = |e: String| StoreError::invalid(format!("redis payload: {e}"));
            let indices = decode_indices(&update).map_err(bad)?;
            let values = decode_values(&update.values, update.encoding, "values").map_err(bad)?;
            for (i, v) in indices.into_iter().zip(values) {
                if let Some(x) = self.replica.get_mut(i as usize) {
                    *x += v;
                }
            }
        }
        Ok(total)
    }
}

/// Measures one configuration through Redis.
pub async fn measure(
    opts: &BenchOptions,
    server: &RedisServer,
    workers: usize,
    density: f64,
) -> Result<BenchRow> {
    let client = redis::Client::open(server.url.as_str()).map_err(redis_err)?;
    let mut ws = Vec::new();
    for id in 0..workers {
        ws.push(RedisWorker {
            conn: client
                .get_multiplexed_async_connection()
                .await
                .map_err(redis_err)?,
            id,
            workers,
            replica: vec![0.0; usize::try_from(opts.params).unwrap_or(0)],
        });
    }
    let row = drive("redis", ws, opts.params, density, opts.rounds).await;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(redis_err)?;
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut c)
        .await
        .map_err(redis_err)?;
    row
}
