//! The trial runs behind a sizing plan: the real job — real worker functions on the platform,
//! the real parameter store — run for a few seconds at a few worker counts and memory tiers,
//! with every invocation's steps, bytes, billed duration and cold start recorded.
//!
//! Each trial is sized and deployed like any job ([`PlatformFleet::reserve_platform`]): its own
//! worker function at its tier, given back when the trial ends, so each trial starts cold as a
//! real job does.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cumulus_runtime::{CancellationToken, StartKind};
use tokio::sync::watch;

use super::{CpuModel, InvocationSample, SizingError, TrialRun, Trials};
use crate::TrainerError;
use crate::coordinator::{RunOptions, run_job};
use crate::evaluate::JobMetric;
use crate::fleet::{PlatformFleet, WorkerFleet};
use crate::invoker::{InvokeFuture, Invoked, Invoker, PlatformInvoker};
use crate::job::{JobSpec, MAX_WORKERS};
use crate::report::JobStatus;
use crate::worker::WorkerTask;

/// Longest profile run asked for, seconds.
pub const MAX_PROFILE_SECS: f64 = 600.0;

/// Which configurations to profile, and for how long each.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSettings {
    pub workers: Vec<u32>,
    pub tiers: Vec<u32>,
    /// Each run stops at the first round after this many seconds (or at the job's target).
    pub secs: f64,
}

impl TrialSettings {
    pub fn validate(&self) -> Result<(), SizingError> {
        if self.workers.is_empty() || self.tiers.is_empty() {
            return Err(SizingError::Input(
                "the profile needs at least one worker count and one tier".into(),
            ));
        }
        if let Some(n) = self
            .workers
            .iter()
            .find(|n| !(1..=MAX_WORKERS).contains(*n))
        {
            return Err(SizingError::Input(format!(
                "profile worker count {n} is outside 1..={MAX_WORKERS}"
            )));
        }
        if !(self.secs.is_finite() && self.secs > 0.0 && self.secs <= MAX_PROFILE_SECS) {
            return Err(SizingError::Input(format!(
                "profile seconds must be in (0, {MAX_PROFILE_SECS}], got {}",
                self.secs
            )));
        }
        Ok(())
    }
}

/// The profile's choice of tiers among `candidates`: the smallest, and the largest whose CPU
/// share is not capped by the host at `max_workers` workers (so the two differ in CPU, which is
/// what the step-time fit needs). One tier when the tier does not set the CPU.
pub fn trial_tiers(candidates: &[u32], cpu: CpuModel, max_workers: u32) -> Vec<u32> {
    let mut sorted = candidates.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(&low) = sorted.first() else {
        return Vec::new();
    };
    let Some(per) = cpu.mb_per_vcpu else {
        return vec![low];
    };
    let uncapped = |m: u32| {
        cpu.host_cores
            .is_none_or(|c| f64::from(m) / per <= c / f64::from(max_workers.max(1)) + 1e-9)
    };
    let high = sorted
        .iter()
        .rev()
        .copied()
        .find(|&m| uncapped(m))
        .unwrap_or(low);
    if high == low {
        vec![low]
    } else {
        vec![low, high]
    }
}

/// Invokes the worker function through a [`PlatformInvoker`] and records what each invocation
/// measured.
struct RecordingInvoker {
    platform: PlatformInvoker,
    workers: u32,
    memory_mb: u32,
    samples: Arc<Mutex<Vec<InvocationSample>>>,
}

impl Invoker for RecordingInvoker {
    fn invoke(&self, task: WorkerTask, cancel: CancellationToken) -> InvokeFuture<'_> {
        Box::pin(async move {
            let worker = task.worker;
            let called = Instant::now();
            let (report, done) = self.platform.call(&task, cancel).await?;
            let wall_secs = called.elapsed().as_secs_f64();
            let cold = done.start == StartKind::Cold;
            let sample = InvocationSample {
                workers: self.workers,
                worker,
                memory_mb: self.memory_mb,
                cold,
                start_secs: done.start_latency.map_or(0.0, |d| d.as_secs_f64()),
                billed_secs: done.billing.duration_us as f64 / 1e6,
                wall_secs,
                steps: u32::try_from(report.steps.len()).unwrap_or(u32::MAX),
                step_secs: report.steps.iter().map(|s| s.step_secs).sum(),
                step_bytes: report.steps.iter().map(|s| s.bytes).sum(),
            };
            self.samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(sample);
            Ok(Invoked {
                report,
                cost_usd: done.billing.cost_usd,
                cold_start: cold,
            })
        })
    }
}

/// Runs `job` briefly at every worker count × tier of `settings`, each trial sized and
/// deployed on `fleet` like a job, against the store at `store`. Models, metrics and data
/// shards of the trials go under `work_dir/plan-trials/`.
pub async fn run_trials(
    job: &JobSpec,
    fleet: &PlatformFleet,
    store: &[String],
    work_dir: &Path,
    settings: &TrialSettings,
) -> Result<Trials, TrainerError> {
    settings
        .validate()
        .map_err(|e| TrainerError::Data(e.to_string()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut runs = Vec::new();
    let mut train_examples = 0;
    for &n in &settings.workers {
        for &m in &settings.tiers {
            let mut probe = job.clone();
            probe.workers.count = n;
            probe.workers.memory_mb = m;
            probe.autotune.enabled = false;
            probe.autotune.min_workers = 1;
            probe.checkpoint_every_steps = 0;
            probe.stop.max_wall_secs = Some(settings.secs);
            probe.stop.max_cost_usd = None;
            let dir = work_dir.join("plan-trials").join(format!("{n}x{m}"));
            probe.output = Some(dir.join("model"));
            let job_id = format!("{}-plan-{n}x{m}-{stamp}", job.name);
            let platform = fleet
                .reserve_platform(&job_id, &probe)
                .map_err(|e| TrainerError::Data(format!("trial at {n} worker(s) × {m} MB: {e}")))?;
            let samples = Arc::new(Mutex::new(Vec::new()));
            let invoker = Arc::new(RecordingInvoker {
                platform,
                workers: n,
                memory_mb: m,
                samples: samples.clone(),
            });
            let options = RunOptions {
                job_id: job_id.clone(),
                work_dir: dir.join("jobs"),
                store: store.to_vec(),
                cancel: CancellationToken::new(),
                gpu: None,
            };
            let metric = JobMetric::for_loss(job.training.loss);
            let (tx, _rx) = watch::channel(JobStatus::new(&job_id, metric, n));
            tracing::info!(workers = n, memory_mb = m, "trial run");
            let outcome = run_job(&probe, &options, invoker, tx).await;
            // The next trial starts cold, as a real job does.
            fleet.release(&job_id).await;
            let summary = outcome?.summary;
            train_examples = summary.train_examples;
            let invocations = std::mem::take(
                &mut *samples
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            runs.push(TrialRun {
                workers: n,
                memory_mb: m,
                wall_secs: summary.wall_secs,
                steps: summary.steps,
                epochs: summary.epochs,
                cost_usd: summary.billed_cost_usd,
                curve: summary
                    .history
                    .iter()
                    .filter_map(|h| h.metric.map(|v| (h.epoch, v)))
                    .collect(),
                invocations,
            });
        }
    }
    Ok(Trials {
        runs,
        train_examples,
    })
}
