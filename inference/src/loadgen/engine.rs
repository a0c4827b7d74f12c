//! One open-loop run: the schedule is drawn, a dispatcher thread sends each request at its time
//! onto the async runtime, and each answer's latency is taken from its *scheduled* time.
//!
//! The dispatcher is an OS thread sleeping with `std::thread::sleep` (tens of microseconds of
//! slack on Linux) rather than a tokio timer (millisecond granularity), so the generator's own
//! lateness stays small; whatever is left of it is reported as `send_lag` and, since latency runs
//! from the scheduled time, counted against the server rather than hidden.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::cost::BILLED_GB_SECONDS_METRIC;
use super::cpu::{self, TreeCpu};
use super::error::{LoadgenError, Result};
use super::stats::{LatencySummary, Recorder};
use super::transport::{Client, Failure};
use super::{LoadSpec, RunResult};

/// Time between drawing the schedule and its first instant (the dispatcher's start-up).
const LEAD: Duration = Duration::from_millis(20);

struct Shared {
    recorder: Mutex<Recorder>,
    in_flight: AtomicUsize,
}

impl Shared {
    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        // A panicking request task cannot leave the counts half-updated (each update is one
        // call), so a poisoned lock is still good to read.
        self.recorder.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What is read at the start and at the end of the measured window.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    server: Option<TreeCpu>,
    client_ms: Option<f64>,
    billed_gb_seconds: Option<f64>,
}

async fn sample(spec: &LoadSpec, http: &reqwest::Client) -> Sample {
    let server = spec.server_pid.and_then(|pid| {
        cpu::tree_cpu(pid)
            .inspect_err(|e| tracing::warn!(error = %e, "server CPU not measured"))
            .ok()
    });
    let billed_gb_seconds = match &spec.metrics_url {
        Some(url) => super::cost::scrape(http, url, BILLED_GB_SECONDS_METRIC)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "billed GB-seconds not measured"))
            .ok()
            .flatten(),
        None => None,
    };
    Sample {
        server,
        client_ms: cpu::self_cpu_ms().ok(),
        billed_gb_seconds,
    }
}

/// Run `spec` once and summarize its measured window.
pub async fn run(spec: &LoadSpec) -> Result<RunResult> {
    spec.validate()?;
    if let Some(pid) = spec.server_pid {
        // A wrong pid should stop the run before it starts, not yield a result without CPU.
        cpu::tree_cpu(pid)?;
    }
    let warmup = Duration::from_secs_f64(spec.warmup_s);
    let horizon = warmup + Duration::from_secs_f64(spec.duration_s);
    let schedule = spec.arrival.schedule(horizon, spec.seed)?;
    let scheduled = schedule.iter().filter(|t| **t >= warmup).count() as u64;
    let client = Arc::new(
        Client::connect(&spec.url, spec.transport, &spec.payload, spec.max_in_flight).await?,
    );
    let timeout = Duration::from_millis(spec.timeout_ms);
    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new(Duration::from_secs_f64(spec.slo_ms / 1000.0))),
        in_flight: AtomicUsize::new(0),
    });
    let scrape_http = reqwest::Client::new();
    tracing::info!(
        url = %spec.url,
        transport = %spec.transport,
        rate = spec.arrival.mean_rate(),
        requests = schedule.len(),
        "open-loop run"
    );

    let start = Instant::now() + LEAD;
    let at_boundary = {
        let spec = spec.clone();
        let http = scrape_http.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + warmup).await;
            sample(&spec, &http).await
        })
    };
    let dispatcher = {
        let (shared, client) = (shared.clone(), client.clone());
        let max_in_flight = spec.max_in_flight;
        let rt = Handle::current();
        let start = start.into_std();
        tokio::task::spawn_blocking(move || {
            dispatch(DispatchPlan {
                schedule,
                start,
                warmup,
                max_in_flight,
                timeout,
                client,
                shared,
                rt,
            })
        })
    };
    dispatcher
        .await
        .map_err(|e| LoadgenError::Dispatcher(e.to_string()))?;
    // Every request has a timeout, so the drain ends; the margin covers the task wake-ups.
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    while shared.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = sample(spec, &scrape_http).await;
    let begin = at_boundary
        .await
        .map_err(|e| LoadgenError::Dispatcher(e.to_string()))?;

    let rec = shared.recorder();
    let mut error_counts = rec.errors.clone();
    // Only a task that never got scheduled again could be missing; count it as a timeout.
    let unfinished = rec.sent.saturating_sub(rec.completed);
    if unfinished > 0 {
        *error_counts.entry(Failure::Timeout.key()).or_default() += unfinished;
    }
    let errors = rec.error_total() + unfinished;
    let d = spec.duration_s;
    let per_ok = |total: f64| (rec.ok > 0).then(|| total / rec.ok as f64);
    let server_cpu_ms = match (begin.server, end.server) {
        (Some(b), Some(e)) => {
            Some(e.ticks.saturating_sub(b.ticks) as f64 * 1000.0 / cpu::USER_HZ as f64)
        }
        _ => None,
    };
    let client_cpu_ms = match (begin.client_ms, end.client_ms) {
        (Some(b), Some(e)) => Some((e - b).max(0.0)),
        _ => None,
    };
    let billed_gb_seconds = match (begin.billed_gb_seconds, end.billed_gb_seconds) {
        (Some(b), Some(e)) => Some((e - b).max(0.0)),
        (None, Some(e)) => Some(e),
        _ => None,
    };
    let cost = spec
        .cost
        .per_million(rec.ok, billed_gb_seconds, server_cpu_ms);
    Ok(RunResult {
        transport: spec.transport,
        arrival: spec.arrival.clone(),
        target_rate: spec.arrival.mean_rate(),
        duration_s: d,
        warmup_s: spec.warmup_s,
        slo_ms: spec.slo_ms,
        scheduled,
        sent: rec.sent,
        dropped: rec.dropped,
        completed: rec.completed,
        ok: rec.ok,
        ok_within_slo: rec.ok_within_slo,
        errors,
        overloaded: rec.overloaded,
        error_counts,
        error_rate: if scheduled > 0 {
            errors as f64 / scheduled as f64
        } else {
            0.0
        },
        achieved_send_rate: rec.sent as f64 / d,
        throughput_rps: rec.ok as f64 / d,
        goodput_rps: rec.ok_within_slo as f64 / d,
        latency: LatencySummary::of(&rec.latency),
        send_lag: LatencySummary::of(&rec.send_lag),
        server_cpu_ms_per_request: server_cpu_ms.and_then(per_ok),
        server_cpu_ms,
        server_processes: end.server.map(|s| s.processes),
        client_cpu_ms_per_request: client_cpu_ms.and_then(per_ok),
        billed_gb_seconds,
        cost_per_million_usd: cost.map(|c| c.0),
        cost_basis: cost.map(|c| c.1),
    })
}

struct DispatchPlan {
    schedule: Vec<Duration>,
    start: std::time::Instant,
    warmup: Duration,
    max_in_flight: usize,
    timeout: Duration,
    client: Arc<Client>,
    shared: Arc<Shared>,
    rt: Handle,
}

/// Send every request of the schedule at its time (on the dispatcher thread).
fn dispatch(plan: DispatchPlan) {
    let DispatchPlan {
        schedule,
        start,
        warmup,
        max_in_flight,
        timeout,
        client,
        shared,
        rt,
    } = plan;
    for (i, offset) in schedule.into_iter().enumerate() {
        let due = start + offset;
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let measured = offset >= warmup;
        if shared.in_flight.fetch_add(1, Ordering::AcqRel) >= max_in_flight {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            if measured {
                shared.recorder().dropped();
            }
            continue;
        }
        if measured {
            shared
                .recorder()
                .sent(std::time::Instant::now().saturating_duration_since(due));
        }
        let (client, shared) = (client.clone(), shared.clone());
        rt.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, client.send(i)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Timeout),
            };
            let latency = std::time::Instant::now().saturating_duration_since(due);
            if measured {
                shared.recorder().completed(latency, &outcome);
            }
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
