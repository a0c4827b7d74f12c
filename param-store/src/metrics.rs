//! Metric names of the parameter store, their descriptions, and the Prometheus endpoint of a
//! standalone shard (the binary installs the recorder and calls [`describe`]).
//!
//! Labels come from closed sets (`op`, `stat`) except `job`, which names a registered job (jobs are
//! few and long-lived; the per-job clocks are what operators watch).

use std::net::SocketAddr;

use cumulus_service::telemetry::PrometheusHandle;
use tokio::sync::watch;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::error::{Result, StoreError};

/// Bytes of pushed payload (values and indices) received.
pub const PUSH_BYTES: &str = "cumulus_param_store_push_bytes_total";
/// Pushes applied.
pub const PUSHES: &str = "cumulus_param_store_pushes_total";
/// Pushes acknowledged as duplicates (retries).
pub const PUSH_DUPLICATES: &str = "cumulus_param_store_push_duplicates_total";
/// Bytes of values (and offsets) sent by pulls.
pub const PULL_BYTES: &str = "cumulus_param_store_pull_bytes_total";
/// Pulls served.
pub const PULLS: &str = "cumulus_param_store_pulls_total";
/// Requests refused, by `op`.
pub const ERRORS: &str = "cumulus_param_store_errors_total";
/// Request latency, by `op`.
pub const LATENCY: &str = "cumulus_param_store_request_duration_seconds";
/// Time a pull or clock call waited for the synchronization mode.
pub const CLOCK_WAIT: &str = "cumulus_param_store_clock_wait_seconds";
/// Worker clocks of a job, by `job` and `stat` (`min`, `max`).
pub const CLOCK: &str = "cumulus_param_store_clock";
/// Clocks between a pushing worker and the slowest worker.
pub const STALENESS: &str = "cumulus_param_store_push_staleness_clocks";
/// Bytes in the write-ahead log.
pub const WAL_BYTES: &str = "cumulus_param_store_wal_bytes";
/// Group commits (fsyncs) of the write-ahead log.
pub const WAL_COMMITS: &str = "cumulus_param_store_wal_commits_total";
/// Bytes of the last snapshot of this shard.
pub const SNAPSHOT_BYTES: &str = "cumulus_param_store_snapshot_bytes";
/// Snapshot duration.
pub const SNAPSHOT_DURATION: &str = "cumulus_param_store_snapshot_duration_seconds";
/// Estimated bytes of the jobs a shard holds (held to `--max-shard-bytes`).
pub const HELD_BYTES: &str = "cumulus_param_store_held_bytes";

/// Describes every metric (call once at start-up).
pub fn describe() {
    describe_counter!(
        PUSH_BYTES,
        Unit::Bytes,
        "Bytes of pushed indices and values received"
    );
    describe_gauge!(
        HELD_BYTES,
        Unit::Bytes,
        "Estimated bytes of the jobs this shard holds (limited by --max-shard-bytes)"
    );
    describe_counter!(PUSHES, "Pushes applied");
    describe_counter!(
        PUSH_DUPLICATES,
        "Pushes acknowledged as duplicates of applied ones"
    );
    describe_counter!(
        PULL_BYTES,
        Unit::Bytes,
        "Bytes of values and offsets sent by pulls"
    );
    describe_counter!(PULLS, "Pulls served");
    describe_counter!(ERRORS, "Requests refused, by operation");
    describe_histogram!(LATENCY, Unit::Seconds, "Request latency by operation");
    describe_histogram!(
        CLOCK_WAIT,
        Unit::Seconds,
        "Time waited for the synchronization mode"
    );
    describe_gauge!(CLOCK, "Worker clocks of a job (min, max)");
    describe_histogram!(
        STALENESS,
        "Clocks between a pushing worker and the slowest worker"
    );
    describe_gauge!(WAL_BYTES, Unit::Bytes, "Bytes in the write-ahead log");
    describe_counter!(WAL_COMMITS, "Group commits of the write-ahead log");
    describe_gauge!(SNAPSHOT_BYTES, Unit::Bytes, "Bytes of the last snapshot");
    describe_histogram!(SNAPSHOT_DURATION, Unit::Seconds, "Snapshot duration");
}

/// Serves `/metrics` (rendering `handle`) on `addr` until `shutdown` turns true; returns the
/// bound address.
pub async fn serve_prometheus(
    addr: SocketAddr,
    handle: Option<PrometheusHandle>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let router: axum::Router = cumulus_service::telemetry::metrics_router(handle);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StoreError::Transport(format!("metrics endpoint {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(bound)
}
