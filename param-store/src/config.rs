//! [`ShardConfig`]: everything one shard needs to run, with tested defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};
use crate::layout::MAX_TENSOR_ELEMENTS;

/// Elements a job may have by default, all tensors together: 2^31 (8 GiB of f32).
pub const DEFAULT_MAX_JOB_ELEMENTS: u64 = 1 << 31;
/// What a shard assumes when it cannot read the machine's memory size.
const FALLBACK_MEMORY_BYTES: u64 = 8 << 30;

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
    /// Most elements of one tensor (at most 2^30: indices travel as u32).
    pub max_tensor_elements: u64,
    /// Most elements of one job, all tensors together.
    pub max_job_elements: u64,
    /// Most bytes the jobs this shard holds may take, by the estimate of
    /// [`crate::limits::JobFootprint`] (values, their change log, chunk and de-duplication
    /// bookkeeping). Default: half of the machine's (or the container's) memory, which leaves
    /// room for a snapshot's staging copy and a restart's load.
    pub max_shard_bytes: u64,
    /// Start even when the write-ahead log is damaged, keeping what precedes the damage (the
    /// rest is set aside as `*.log.damaged-*` files next to the log, and the loss is logged);
    /// without it a damaged log is refused with its file and byte offset. Also leaves out logged
    /// jobs over the limits.
    pub salvage: bool,
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
            max_tensor_elements: MAX_TENSOR_ELEMENTS,
            max_job_elements: DEFAULT_MAX_JOB_ELEMENTS,
            max_shard_bytes: default_max_shard_bytes(),
            salvage: false,
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
        if !(1..=MAX_TENSOR_ELEMENTS).contains(&self.max_tensor_elements) {
            return Err(StoreError::invalid(format!(
                "max tensor elements must be in 1..={MAX_TENSOR_ELEMENTS}, got {}",
                self.max_tensor_elements
            )));
        }
        if self.max_job_elements == 0 {
            return Err(StoreError::invalid("max job elements must be at least 1"));
        }
        if self.max_shard_bytes < 1 << 20 {
            return Err(StoreError::invalid(format!(
                "max shard bytes must be at least 1 MiB, got {}",
                self.max_shard_bytes
            )));
        }
        Ok(())
    }
}

/// Half of the memory this process may use: the container's limit (cgroup v2 or v1) where one is
/// set, else the machine's total; 4 GiB where neither can be read.
pub fn default_max_shard_bytes() -> u64 {
    memory_bytes().unwrap_or(FALLBACK_MEMORY_BYTES) / 2
}

/// The memory this process may use, if the system says.
pub fn memory_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_total(&s));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    // "max" (v2) and a huge number (v1) both mean no limit; either way the total decides.
    .find_map(|s| s.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal:  16314456 kB` in bytes.
fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    kib.checked_mul(1024)
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
    fn memory_is_read_and_halved() {
        let meminfo = "MemTotal:       16314456 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(16_314_456 * 1024));
        assert_eq!(parse_meminfo_total("nonsense"), None);
        let default = default_max_shard_bytes();
        assert!(default >= 1 << 20, "{default}");
        if let Some(m) = memory_bytes() {
            assert_eq!(default, m / 2);
        }
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let base = ShardConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/x");
        let mut c = base.clone();
        c.max_tensor_elements = MAX_TENSOR_ELEMENTS + 1;
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.max_job_elements = 0;
        assert!(c.validate().is_err());
        let mut c = base;
        c.max_shard_bytes = 1000;
        assert!(c.validate().unwrap_err().to_string().contains("1 MiB"));
    }

    #[test]
    fn shard_spec_parses() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["4/4", "1", "a/b", "0/0", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
