//! Planning, after λDNN (Xu et al., IEEE TC 2021): predicts a job's wall time and cost for several
//! worker counts and memory tiers from short real trial runs ([`trial`]), and picks the cheapest
//! configuration that meets the job's deadline (`stop.max_wall_secs`).
//!
//! The model, for `n` workers at tier `m`, where one worker gets `c(n, m)` vCPUs ([`CpuModel`]:
//! the tier's share, capped on a shared host by the cores the workers are left, also fitted):
//! - step time `t = α / c + β + γ · n · b`: computation that scales with the CPU share, a fixed
//!   part (the store's round trips and the clock barrier), and the `b` bytes each worker pushes per
//!   step times the `n` workers sharing the store;
//! - invocation overhead `o = ο₁ / c + ο₀` (connect, read the partition, build and pull the model,
//!   drain), billed; the coordinator's gap `g` between invocations, not billed;
//! - a cold start `s = σ₁ / c + σ₀` once per worker, and the job's fixed time `F` (data,
//!   partitions, registration, evaluations);
//! - `E(n) = E₁ · n^k` epochs to the target, fitted from the profile runs that reached it (or
//!   extrapolated from their learning curves, or the job's `max_epochs`: [`EpochsSource`] says
//!   which); `K = ⌈E · N / (n · B)⌉` steps per worker, run as `R = ⌈K / S⌉ + ρ` invocations
//!   of `S = steps_per_invocation` steps: the coordinator stops only between rounds, and by the
//!   time it decides, a worker has usually started its next invocation (`ρ`, measured).
//!
//! Then `T = F + s + R · (o + g) + R · S · t` and
//! `cost = n · R · fee + n · (m / 1024) · (R · o + R · S · t) · price per GB-s`.
//!
//! ```
//! use cumulus_trainer::sizing::CpuModel;
//!
//! // Lambda's rule (1769 MB = 1 vCPU) on a 2-core host shared by the workers.
//! let cpu = CpuModel { mb_per_vcpu: Some(1769.0), host_cores: Some(2.0) };
//! assert_eq!(cpu.vcpus(1, 1769), 1.0);
//! assert_eq!(cpu.vcpus(4, 1769), 0.5);
//! ```

pub mod fit;
mod predict;
pub mod trial;

use cumulus_runtime::billing::Pricing;
use serde::{Deserialize, Serialize};

use crate::evaluate::JobMetric;
use crate::job::JobSpec;
use fit::{Row, non_negative_least_squares, power_law, power_law_epochs};
pub use predict::{Choice, Comparison, Prediction, choose, predict, validate_grid};

/// File the plan (and, after a run, the comparison with it) is written to in the output folder.
pub const PLAN_FILE: &str = "plan.json";

/// Why no plan can be made.
#[derive(Debug, thiserror::Error)]
pub enum SizingError {
    #[error("planning: {0}")]
    Input(String),
    #[error("the profile is not enough to fit the model: {0}")]
    Trials(String),
}

/// How many vCPUs one worker gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuModel {
    /// Memory per vCPU (Lambda: 1769 MB); `None` when the tier does not limit the CPU.
    pub mb_per_vcpu: Option<f64>,
    /// Cores of the one host all workers share (the local backend); `None` when each worker
    /// runs on a machine of its own.
    pub host_cores: Option<f64>,
}

impl CpuModel {
    /// vCPUs of one of `workers` workers at `memory_mb`: its tier's share, capped by its part of
    /// the shared host.
    pub fn vcpus(&self, workers: u32, memory_mb: u32) -> f64 {
        let tier = self.mb_per_vcpu.map(|per| f64::from(memory_mb) / per);
        let host = self.host_cores.map(|c| c / f64::from(workers.max(1)));
        match (tier, host) {
            (Some(t), Some(h)) => t.min(h),
            (Some(t), None) => t,
            (None, Some(h)) => h,
            (None, None) => 1.0,
        }
    }
}

/// One invocation measured while profiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationSample {
    /// Workers of the profile run, and this one's index.
    pub workers: u32,
    pub worker: u32,
    pub memory_mb: u32,
    pub cold: bool,
    /// Spawn-to-ready latency of a cold start; 0 when warm.
    pub start_secs: f64,
    /// The duration the platform measured and billed.
    pub billed_secs: f64,
    /// From the coordinator's call to its answer.
    pub wall_secs: f64,
    pub steps: u32,
    /// Sum of the steps' times.
    pub step_secs: f64,
    /// Bytes the steps pushed (the final drain not included).
    pub step_bytes: u64,
}

/// One profile run: the job at one worker count and tier for a few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRun {
    pub workers: u32,
    pub memory_mb: u32,
    /// As the coordinator measures a job (metrics.json's `wall_secs`).
    pub wall_secs: f64,
    pub steps: u64,
    pub epochs: f64,
    pub cost_usd: f64,
    /// The job's test metric after each round: `(epoch, value)`.
    pub curve: Vec<(f64, f64)>,
    pub invocations: Vec<InvocationSample>,
}

/// Everything the profile measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trials {
    pub runs: Vec<TrialRun>,
    /// Training examples of the job's dataset.
    pub train_examples: usize,
}

/// Where the epochs to the target come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochsSource {
    /// Trial runs reached the target; the epochs they took.
    Measured,
    /// Power-law learning curves of the profile runs, extrapolated to the target.
    Extrapolated,
    /// The job's `max_epochs` (no target, or none could be estimated).
    MaxEpochs,
    /// Neither target nor `max_epochs`: the job runs until its wall-time or cost limit.
    Limits,
}

impl std::fmt::Display for EpochsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Measured => "measured: the profile runs that reached the target",
            Self::Extrapolated => "extrapolated: power-law learning curves of the profile runs",
            Self::MaxEpochs => "the job's max_epochs (no estimate of epochs to the target)",
            Self::Limits => "none: the job runs until its wall-time or cost limit",
        })
    }
}

/// Epochs to the end of the job: `E₁ · n^k`, at most `max_epochs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochsModel {
    pub source: EpochsSource,
    /// `E₁`; `None` for [`EpochsSource::Limits`].
    pub at_one_worker: Option<f64>,
    /// `k`.
    pub exponent: f64,
    pub max_epochs: Option<f64>,
}

impl EpochsModel {
    pub fn epochs(&self, workers: u32) -> Option<f64> {
        let e = self.at_one_worker? * f64::from(workers).powf(self.exponent);
        Some(self.max_epochs.map_or(e, |m| e.min(m)))
    }
}

/// The fitted coefficients (seconds; bytes per worker and step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeModel {
    /// The CPU model, its host cores less [`Self::host_cores_reserved`].
    pub cpu: CpuModel,
    /// Host cores the fit found taken by others (the store, the coordinator, other load).
    pub host_cores_reserved: f64,
    /// `α`: vCPU-seconds of computation per step.
    pub step_cpu_secs: f64,
    /// `β`: fixed time per step (store round trips, clock barrier).
    pub step_fixed_secs: f64,
    /// `γ`: seconds per byte pushed per step, times the workers sharing the store.
    pub step_secs_per_byte: f64,
    /// `b`: mean bytes one worker pushes per step.
    pub step_bytes: f64,
    /// `ο₁`, `ο₀`: billed overhead of an invocation beyond its steps.
    pub invocation_cpu_secs: f64,
    pub invocation_fixed_secs: f64,
    /// `g`: time between invocations, not billed.
    pub invocation_gap_secs: f64,
    /// `σ₁`, `σ₀`: cold start of a worker.
    pub cold_start_cpu_secs: f64,
    pub cold_start_fixed_secs: f64,
    /// `F`: the job's time outside its workers.
    pub job_fixed_secs: f64,
    /// Rounds the workers run after the round at which the coordinator decides to stop: it
    /// decides after evaluating, and by then a worker has usually started its next invocation.
    pub rounds_after_stop: f64,
    pub epochs: EpochsModel,
    /// Root-mean-square error of the step-time fit, relative to the mean step time.
    pub step_fit_error: f64,
}

impl TimeModel {
    /// Predicted seconds per step of `workers` workers at `memory_mb`.
    pub fn step_secs(&self, workers: u32, memory_mb: u32) -> f64 {
        let c = self.cpu.vcpus(workers, memory_mb);
        self.step_cpu_secs / c
            + self.step_fixed_secs
            + self.step_secs_per_byte * f64::from(workers) * self.step_bytes
    }
}

/// Fits the model to `profile`.
pub fn fit(profile: &Trials, job: &JobSpec, cpu: CpuModel) -> Result<TimeModel, SizingError> {
    let samples: Vec<&InvocationSample> =
        profile.runs.iter().flat_map(|r| &r.invocations).collect();
    let stepped: Vec<&&InvocationSample> = samples.iter().filter(|s| s.steps > 0).collect();
    if stepped.is_empty() {
        return Err(SizingError::Trials(
            "no profiled invocation completed a step".into(),
        ));
    }
    let step_rows = |cpu: CpuModel| -> Vec<Row> {
        stepped
            .iter()
            .map(|s| Row {
                x: vec![
                    1.0 / cpu.vcpus(s.workers, s.memory_mb),
                    1.0,
                    f64::from(s.workers) * s.step_bytes as f64 / f64::from(s.steps),
                ],
                y: s.step_secs / f64::from(s.steps),
                weight: f64::from(s.steps),
            })
            .collect()
    };
    // On a shared host the parameter store, the coordinator (and whatever else runs there)
    // take some of the cores: the cores left to the workers are fitted too, by trying each
    // reserve on a grid of 0.05 cores up to half the host and keeping the best fit.
    let reserves: Vec<f64> = match cpu.host_cores {
        Some(cores) => (0..)
            .map(|i| f64::from(i) * 0.05)
            .take_while(|r| *r <= cores / 2.0 + 1e-9)
            .collect(),
        None => vec![0.0],
    };
    let mut best: Option<(f64, CpuModel, Vec<f64>)> = None;
    for reserve in reserves {
        let candidate = CpuModel {
            host_cores: cpu.host_cores.map(|c| c - reserve),
            ..cpu
        };
        let rows = step_rows(candidate);
        let Some(beta) = non_negative_least_squares(&rows, 3) else {
            continue;
        };
        let residual = fit::weighted_residual(&rows, &beta);
        // A larger reserve only when it fits clearly better.
        if best
            .as_ref()
            .is_none_or(|(r, _, _)| residual < *r * (1.0 - 1e-6))
        {
            best = Some((residual, candidate, beta));
        }
    }
    let host_cores = cpu.host_cores;
    let (_, cpu, step) =
        best.ok_or_else(|| SizingError::Trials("the step times cannot be fitted".into()))?;
    let host_cores_reserved = match (host_cores, cpu.host_cores) {
        (Some(all), Some(left)) => all - left,
        _ => 0.0,
    };
    let step_rows = step_rows(cpu);
    let inv_c = |s: &InvocationSample| 1.0 / cpu.vcpus(s.workers, s.memory_mb);
    let total_steps: f64 = stepped.iter().map(|s| f64::from(s.steps)).sum();
    let step_bytes = stepped.iter().map(|s| s.step_bytes as f64).sum::<f64>() / total_steps;
    let mean_step = stepped.iter().map(|s| s.step_secs).sum::<f64>() / total_steps;
    let step_fit_error = (fit::weighted_residual(&step_rows, &step) / total_steps).sqrt()
        / mean_step.max(f64::MIN_POSITIVE);

    // Overhead from warm invocations when there are some: a cold one may do one-off work.
    let warm: Vec<&&InvocationSample> = samples.iter().filter(|s| !s.cold).collect();
    let overhead_from = if warm.is_empty() {
        samples.iter().collect()
    } else {
        warm
    };
    let overhead_rows: Vec<Row> = overhead_from
        .iter()
        .map(|s| Row {
            x: vec![inv_c(s), 1.0],
            y: (s.billed_secs - s.step_secs).max(0.0),
            weight: 1.0,
        })
        .collect();
    let overhead = non_negative_least_squares(&overhead_rows, 2).unwrap_or_else(|| vec![0.0; 2]);
    let invocation_gap_secs = samples
        .iter()
        .map(|s| (s.wall_secs - s.billed_secs - s.start_secs).max(0.0))
        .sum::<f64>()
        / samples.len() as f64;
    let cold_rows: Vec<Row> = samples
        .iter()
        .filter(|s| s.cold)
        .map(|s| Row {
            x: vec![inv_c(s), 1.0],
            y: s.start_secs,
            weight: 1.0,
        })
        .collect();
    let cold = non_negative_least_squares(&cold_rows, 2).unwrap_or_else(|| vec![0.0; 2]);

    // F: each run's wall time less its busiest worker's time in invocations.
    let mut fixed = Vec::new();
    for run in &profile.runs {
        let busiest = (0..run.workers)
            .map(|w| {
                run.invocations
                    .iter()
                    .filter(|s| s.worker == w)
                    .map(|s| s.wall_secs)
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        fixed.push((run.wall_secs - busiest).max(0.0));
    }
    let job_fixed_secs = fixed.iter().sum::<f64>() / fixed.len().max(1) as f64;

    Ok(TimeModel {
        cpu,
        host_cores_reserved,
        step_cpu_secs: step[0],
        step_fixed_secs: step[1],
        step_secs_per_byte: step[2],
        step_bytes,
        invocation_cpu_secs: overhead[0],
        invocation_fixed_secs: overhead[1],
        invocation_gap_secs,
        cold_start_cpu_secs: cold[0],
        cold_start_fixed_secs: cold[1],
        job_fixed_secs,
        rounds_after_stop: rounds_after_stop(profile, job),
        epochs: fit_epochs(profile, job),
        step_fit_error,
    })
}

/// The rounds run after the one the coordinator stopped at, on average over the profile runs:
/// a run's steps beyond its stopping evaluation (the first at the target, else the last before
/// the final one) in rounds of `workers × S` steps.
fn rounds_after_stop(profile: &Trials, job: &JobSpec) -> f64 {
    let target = target_of(job);
    let metric = JobMetric::for_loss(job.training.loss);
    let batch = job.training.batch_size as f64;
    let per_inv = f64::from(job.training.steps_per_invocation);
    let n_examples = profile.train_examples as f64;
    let extra: Vec<f64> = profile
        .runs
        .iter()
        .filter_map(|run| {
            let at_target = target.and_then(|t| {
                run.curve
                    .iter()
                    .find(|&&(_, v)| metric.reached(v, t))
                    .map(|&(e, _)| e)
            });
            let stop_epoch = at_target.or_else(|| {
                let k = run.curve.len();
                (k >= 2).then(|| run.curve[k - 2].0)
            })?;
            let steps_at_stop = (stop_epoch * n_examples / batch).round();
            let round = f64::from(run.workers) * per_inv;
            Some(((run.steps as f64 - steps_at_stop) / round).clamp(0.0, 1.0))
        })
        .collect();
    if extra.is_empty() {
        // No run shows it: the usual case.
        1.0
    } else {
        extra.iter().sum::<f64>() / extra.len() as f64
    }
}

/// The job's target for its metric, if it has one.
fn target_of(job: &JobSpec) -> Option<f64> {
    match JobMetric::for_loss(job.training.loss) {
        JobMetric::Accuracy => job.stop.target_accuracy,
        JobMetric::Rmse => job.stop.target_rmse,
        JobMetric::Auc => job.stop.target_auc,
    }
}

/// The distance still to go to `target` when the metric is `value`, on a scale that falls to 0:
/// `1 - value` for accuracy and AUC, the RMSE itself.
fn gap(metric: JobMetric, value: f64) -> f64 {
    match metric {
        JobMetric::Rmse => value,
        JobMetric::Accuracy | JobMetric::Auc => 1.0 - value,
    }
}

/// Epochs to the target per profiled worker count, then `E₁ · n^k` through them.
fn fit_epochs(profile: &Trials, job: &JobSpec) -> EpochsModel {
    let metric = JobMetric::for_loss(job.training.loss);
    let target = target_of(job);
    let max_epochs = job.stop.max_epochs.map(f64::from);
    let fallback = |max_epochs: Option<f64>| EpochsModel {
        source: if max_epochs.is_some() {
            EpochsSource::MaxEpochs
        } else {
            EpochsSource::Limits
        },
        at_one_worker: max_epochs,
        exponent: 0.0,
        max_epochs,
    };
    let Some(target) = target else {
        return fallback(max_epochs);
    };
    // Per run: the epoch of the first evaluation at the target; else the curve's tail
    // extrapolated, with the epochs it ran without reaching the target as a floor.
    struct Estimate {
        workers: u32,
        epochs: f64,
        measured: bool,
        ran: f64,
    }
    let mut estimates = Vec::new();
    for run in &profile.runs {
        let measured = run
            .curve
            .iter()
            .find(|&&(_, v)| metric.reached(v, target))
            .map(|&(e, _)| e);
        if let Some(e) = measured {
            estimates.push(Estimate {
                workers: run.workers,
                epochs: e,
                measured: true,
                ran: e,
            });
            continue;
        }
        // The tail: a learning curve flattens, and its early, steep part would promise the
        // target far too soon.
        let tail = run.curve.len().div_ceil(2).max(3).min(run.curve.len());
        let points: Vec<(f64, f64)> = run.curve[run.curve.len() - tail..]
            .iter()
            .map(|&(e, v)| (e, gap(metric, v)))
            .collect();
        let ran = run.curve.last().map_or(0.0, |&(e, _)| e);
        if let Some((a, b)) = power_law(&points)
            && let Some(e) = power_law_epochs(a, b, gap(metric, target))
        {
            estimates.push(Estimate {
                workers: run.workers,
                epochs: e.max(ran),
                measured: false,
                ran,
            });
        }
    }
    let mut counts: Vec<u32> = estimates.iter().map(|p| p.workers).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut all_measured = true;
    // (ln n, ln E) per count: the mean of the measured runs; without one, the extrapolation of
    // the run that ran longest (its curve says the most), no less than any run got to.
    let mut points = Vec::new();
    for n in counts {
        let at_n: Vec<&Estimate> = estimates.iter().filter(|p| p.workers == n).collect();
        let measured: Vec<f64> = at_n
            .iter()
            .filter(|p| p.measured)
            .map(|p| p.epochs)
            .collect();
        let e = if measured.is_empty() {
            all_measured = false;
            let longest = at_n
                .iter()
                .max_by(|a, b| a.ran.total_cmp(&b.ran))
                .expect("every count comes from an estimate");
            let floor = at_n.iter().map(|p| p.ran).fold(0.0, f64::max);
            longest.epochs.max(floor)
        } else {
            measured.iter().sum::<f64>() / measured.len() as f64
        };
        points.push((f64::from(n).ln(), e.ln()));
    }
    if points.is_empty() {
        return fallback(max_epochs);
    }
    let (exponent, ln_e1) = if points.len() == 1 {
        (0.0, points[0].1)
    } else {
        let rows: Vec<Row> = points
            .iter()
            .map(|&(ln_n, ln_e)| Row {
                x: vec![1.0, ln_n],
                y: ln_e,
                weight: 1.0,
            })
            .collect();
        // k in [0, 1]: more workers never need fewer examples, at most proportionally more.
        match fit::least_squares_all(&rows) {
            Some(beta) if beta[1].is_finite() => {
                let k = beta[1].clamp(0.0, 1.0);
                let mean_ln_n = points.iter().map(|p| p.0).sum::<f64>() / points.len() as f64;
                let mean_ln_e = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
                (k, mean_ln_e - k * mean_ln_n)
            }
            _ => {
                let mean_ln_e = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
                (0.0, mean_ln_e)
            }
        }
    };
    EpochsModel {
        source: if all_measured {
            EpochsSource::Measured
        } else {
            EpochsSource::Extrapolated
        },
        at_one_worker: Some(ln_e1.exp()),
        exponent,
        max_epochs,
    }
}

/// `plan.json`: what was measured, the fitted model, every prediction and the choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizingPlan {
    pub job: String,
    pub deadline_secs: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub profile: Trials,
    pub model: TimeModel,
    pub predictions: Vec<Prediction>,
    pub chosen: usize,
    pub choice: Choice,
    /// Filled in after the chosen configuration ran.
    pub measured: Option<Comparison>,
}

impl SizingPlan {
    /// Fits, predicts and chooses.
    pub fn make(
        job: &JobSpec,
        profile: Trials,
        cpu: CpuModel,
        pricing: &Pricing,
        workers: &[u32],
        tiers: &[u32],
    ) -> Result<Self, SizingError> {
        let model = fit(&profile, job, cpu)?;
        let predictions = predict(&model, job, pricing, workers, tiers, profile.train_examples)?;
        let (chosen, choice) = choose(&predictions)
            .ok_or_else(|| SizingError::Input("no configuration to choose from".into()))?;
        Ok(Self {
            job: job.name.clone(),
            deadline_secs: job.stop.max_wall_secs,
            max_cost_usd: job.stop.max_cost_usd,
            profile,
            model,
            predictions,
            chosen,
            choice,
            measured: None,
        })
    }

    pub fn chosen(&self) -> &Prediction {
        &self.predictions[self.chosen]
    }

    /// Writes `dir/plan.json`, creating `dir`.
    pub fn write(&self, dir: &std::path::Path) -> Result<std::path::PathBuf, std::io::Error> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(PLAN_FILE);
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests;
