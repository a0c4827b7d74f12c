//! [`ShardConfig`]: everything one shard needs to run, with tested defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// Configuration of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of the write-ahead log (and of snapshots when no store URL is given).
    pub data_dir: PathBuf,
    /// Object store URL for snapshots (`s3://…`, `file:///…`); `None`: `data_dir/objects`.
    pub store_url: Option<String>,
    /// This shard's index.
    pub shard_index: u32,
    /// Number of shards.
    pub shard_count: u32,
    /// Locks (sub-shards) per job inside this shard.
    pub sub_shards: usize,
    /// Prometheus endpoint; `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// What that endpoint renders: the process's recorder, installed by the binary.
    pub prometheus: Option<cumulus_service::telemetry::PrometheusHandle>,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Accept NaN and infinite values in pushes.
    pub allow_non_finite: bool,
    /// `fsync` the write-ahead log before acknowledging (turn off only for throwaway data).
    pub wal_fsync: bool,
    /// Longest a pull or clock call waits for the synchronization mode.
    pub max_clock_wait: Duration,
    /// Take a snapshot when the write-ahead log grows past this many bytes (0: never).
    pub snapshot_wal_bytes: u64,
    /// Requests served at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
}

impl ShardConfig {
    /// A single shard on `listen` with data in `data_dir`, everything else default.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            store_url: None,
            shard_index: 0,
            shard_count: 1,
            sub_shards: 16,
            metrics_listen: None,
            prometheus: None,
            max_message_bytes: 64 << 20,
            allow_non_finite: false,
            wal_fsync: true,
            max_clock_wait: Duration::from_secs(300),
            snapshot_wal_bytes: 1 << 30,
            max_concurrent_requests: 1024,
        }
    }

    /// Checks the values that have no safe interpretation.
    pub fn validate(&self) -> Result<()> {
        if self.shard_count == 0 || self.shard_index >= self.shard_count {
            return Err(StoreError::invalid(format!(
                "shard {}/{}: the index must be below the count and the count at least 1",
                self.shard_index, self.shard_count
            )));
        }
        if self.sub_shards == 0 || self.sub_shards > 4096 {
            return Err(StoreError::invalid(format!(
                "sub-shards must be in 1..=4096, got {}",
                self.sub_shards
            )));
        }
        if self.max_message_bytes < 1024 {
            return Err(StoreError::invalid(format!(
                "max message size must be at least 1024 bytes, got {}",
                self.max_message_bytes
            )));
        }
        if self.max_concurrent_requests == 0 {
            return Err(StoreError::invalid(
                "max concurrent requests must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Parses `I/N` (`--shard 2/4`).
pub fn parse_shard(s: &str) -> Result<(u32, u32)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => Err(StoreError::invalid(format!(
            "--shard '{s}' must be I/N with 0 <= I < N"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        ShardConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/x")
            .validate()
            .unwrap();
    }

    #[test]
    fn shard_spec_parses() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["4/4", "1", "a/b", "0/0", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
