//! The open-loop load generator behind `cumulus bench serve`, for any KServe V2 (Open Inference
//! Protocol) server.
//!
//! **Open loop.** Every send time is drawn before the run from a seeded [`Arrival`] process
//! (Poisson, constant, or bursty on/off). A dispatcher thread sends each request at its time,
//! whatever is still outstanding; only a configurable in-flight limit stops a send, and such a
//! request is counted as `dropped` (an error), never delayed. **Latency is measured from the
//! scheduled send time**, not from when the request actually left, so a server (or generator)
//! stall shows up as the queueing delay every request scheduled during it suffered: coordinated
//! omission cannot hide it.
//!
//! **Measured**: HDR histograms of the latency of OK answers (p50/p90/p99/p99.9, mean, max),
//! goodput (OK answers within the SLO per second), errors by HTTP status / gRPC code (429 and
//! `RESOURCE_EXHAUSTED` also counted as `overloaded`), the achieved send rate against the target,
//! the dispatcher's own lateness, CPU-ms per OK request of the server's whole process tree
//! ([`cpu`]), and cost per million requests ([`cost`]). A warm-up at the start is sent but left
//! out of every number. [`sweep()`] steps through rates and bisects to the maximum sustainable one.
//!
//! ```no_run
//! use cumulus_inference::loadgen::{self, Arrival, LoadSpec, Payload, SweepPlan, Transport};
//!
//! # async fn f() -> Result<(), loadgen::LoadgenError> {
//! let spec = LoadSpec {
//!     transport: Transport::RestJson,
//!     arrival: Arrival::Poisson { rate: 200.0 },
//!     slo_ms: 25.0,
//!     ..LoadSpec::new("http://127.0.0.1:8000", Payload::new("mlp", "input", &[1, 784]))
//! };
//! let one = loadgen::run(&spec).await?;
//! println!("{}", loadgen::table(std::slice::from_ref(&one)));
//! let plan = SweepPlan::new(vec![100.0, 200.0, 400.0, 800.0]);
//! let swept = loadgen::sweep(&spec, &plan).await?;
//! println!("{}", loadgen::sweep_table(&swept));
//! # Ok(()) }
//! ```

pub mod arrival;
pub mod cost;
pub mod cpu;
mod engine;
mod error;
mod stats;
pub mod sweep;
mod table;
pub mod transport;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use arrival::Arrival;
pub use cost::{CostBasis, CostModel};
pub use engine::run;
pub use error::{LoadgenError, Result};
pub use stats::LatencySummary;
pub use sweep::{SweepPlan, SweepResult, search, sustainable, sweep};
pub use table::{sweep_table, table};
pub use transport::{Failure, Payload, Transport};

/// One open-loop run: where, how, how much, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Base URL of the server: `http://host:port` (REST) or the gRPC endpoint.
    pub url: String,
    pub transport: Transport,
    pub payload: Payload,
    pub arrival: Arrival,
    /// Measured seconds (after the warm-up).
    pub duration_s: f64,
    /// Seconds sent first and left out of every number.
    pub warmup_s: f64,
    /// Seed of the arrival schedule.
    pub seed: u64,
    /// Latency objective: goodput counts OK answers within it; a sweep requires p99 <= it.
    pub slo_ms: f64,
    /// Requests outstanding at most; a request due while this many are out is dropped.
    pub max_in_flight: usize,
    /// A request without an answer after this long counts as a `timeout` error.
    pub timeout_ms: u64,
    /// Pid of the server, to measure the CPU of its process tree.
    #[serde(default)]
    pub server_pid: Option<u32>,
    /// Prometheus endpoint of the server (e.g. `http://127.0.0.1:8000/metrics`), to read the
    /// GB-seconds it billed during the run.
    #[serde(default)]
    pub metrics_url: Option<String>,
    #[serde(default)]
    pub cost: CostModel,
}

impl LoadSpec {
    /// Poisson at 100/s over REST JSON for 10 s after 2 s of warm-up, SLO 25 ms, at most 1,024
    /// requests in flight, 10 s timeout.
    pub fn new(url: &str, payload: Payload) -> Self {
        Self {
            url: url.to_string(),
            transport: Transport::RestJson,
            payload,
            arrival: Arrival::Poisson { rate: 100.0 },
            duration_s: 10.0,
            warmup_s: 2.0,
            seed: 1,
            slo_ms: 25.0,
            max_in_flight: 1024,
            timeout_ms: 10_000,
            server_pid: None,
            metrics_url: None,
            cost: CostModel::default(),
        }
    }

    /// This spec at another mean rate (the arrival process keeps its shape).
    pub fn at_rate(&self, rate: f64) -> Self {
        Self {
            arrival: self.arrival.at_rate(rate),
            ..self.clone()
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.arrival.validate()?;
        self.payload.validate()?;
        self.cost.validate()?;
        let bad = |field: &str, v: f64| {
            LoadgenError::Spec(format!("{field} must be finite and > 0, got {v}"))
        };
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Err(bad("duration_s", self.duration_s));
        }
        if !(self.slo_ms.is_finite() && self.slo_ms > 0.0) {
            return Err(bad("slo_ms", self.slo_ms));
        }
        if !(self.warmup_s.is_finite() && self.warmup_s >= 0.0) {
            return Err(LoadgenError::Spec(format!(
                "warmup_s must be finite and >= 0, got {}",
                self.warmup_s
            )));
        }
        if self.max_in_flight == 0 {
            return Err(LoadgenError::Spec(
                "max_in_flight must be at least 1".to_string(),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(LoadgenError::Spec(
                "timeout_ms must be at least 1".to_string(),
            ));
        }
        Ok(())
    }
}

/// The outcome of one run. Every count and rate covers the measured window only (requests
/// *scheduled* after the warm-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub transport: Transport,
    pub arrival: Arrival,
    /// Mean rate asked for, requests per second.
    pub target_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub slo_ms: f64,
    /// Requests the schedule held in the measured window.
    pub scheduled: u64,
    /// Requests actually sent (scheduled less dropped).
    pub sent: u64,
    /// Not sent: the in-flight limit was reached at their time.
    pub dropped: u64,
    /// Answers received or timed out.
    pub completed: u64,
    pub ok: u64,
    pub ok_within_slo: u64,
    /// Requests that did not end OK: failed answers, timeouts and drops.
    pub errors: u64,
    /// 429 / `RESOURCE_EXHAUSTED` answers (also in `errors`).
    pub overloaded: u64,
    /// `errors` by kind: `http_<status>`, `grpc_<Code>`, `timeout`, `connect`, `transport`,
    /// `invalid_response`, `dropped`.
    pub error_counts: BTreeMap<String, u64>,
    /// `errors / scheduled`.
    pub error_rate: f64,
    /// `sent / duration_s`.
    pub achieved_send_rate: f64,
    /// `ok / duration_s`.
    pub throughput_rps: f64,
    /// `ok_within_slo / duration_s`.
    pub goodput_rps: f64,
    /// Latency of OK answers from the *scheduled* send time.
    pub latency: LatencySummary,
    /// How late the dispatcher sent requests after their scheduled time (the generator's own
    /// health: a p99 of more than a millisecond or two means it could not keep up).
    pub send_lag: LatencySummary,
    /// CPU of the server's process tree during the measured window, per OK answer.
    pub server_cpu_ms_per_request: Option<f64>,
    pub server_cpu_ms: Option<f64>,
    /// Live processes in the server's tree at the end.
    pub server_processes: Option<usize>,
    /// The load generator's own CPU per OK answer.
    pub client_cpu_ms_per_request: Option<f64>,
    /// GB-seconds the server reported billing during the measured window.
    pub billed_gb_seconds: Option<f64>,
    pub cost_per_million_usd: Option<f64>,
    pub cost_basis: Option<CostBasis>,
}
