//! Predictions from a fitted [`TimeModel`] for a grid of worker counts and memory tiers, the
//! choice among them, and the comparison with the run that followed.

use cumulus_runtime::billing::Pricing;
use serde::{Deserialize, Serialize};

use super::{EpochsSource, SizingError, TimeModel};
use crate::job::{JobSpec, MAX_WORKERS, MEMORY_MB_RANGE};

/// The prediction for one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub workers: u32,
    pub memory_mb: u32,
    /// vCPUs per worker.
    pub vcpus: f64,
    pub step_secs: f64,
    pub epochs: f64,
    /// Expected steps and invocations of one worker (fractional: the round run after the
    /// stopping one is a measured average).
    pub steps_per_worker: f64,
    pub invocations_per_worker: f64,
    pub wall_secs: f64,
    pub cost_usd: f64,
    /// Done within `stop.max_wall_secs` (always, without one).
    pub meets_deadline: bool,
    /// Within `stop.max_cost_usd` (always, without one).
    pub within_budget: bool,
}

/// The job's facts the prediction needs, checked.
fn job_shape(job: &JobSpec, train_examples: usize) -> Result<(f64, f64, f64), SizingError> {
    if train_examples == 0 {
        return Err(SizingError::Input(
            "the dataset has no training examples".into(),
        ));
    }
    Ok((
        train_examples as f64,
        job.training.batch_size as f64,
        f64::from(job.training.steps_per_invocation),
    ))
}

/// Predicts every pair of `workers` × `tiers`.
pub fn predict(
    model: &TimeModel,
    job: &JobSpec,
    pricing: &Pricing,
    workers: &[u32],
    tiers: &[u32],
    train_examples: usize,
) -> Result<Vec<Prediction>, SizingError> {
    validate_grid(workers, tiers)?;
    let (n_examples, batch, per_inv) = job_shape(job, train_examples)?;
    let deadline = job.stop.max_wall_secs;
    let budget = job.stop.max_cost_usd;
    let mut out = Vec::with_capacity(workers.len() * tiers.len());
    for &n in workers {
        for &m in tiers {
            let nf = f64::from(n);
            let c = model.cpu.vcpus(n, m);
            let t = model.step_secs(n, m);
            let o = model.invocation_cpu_secs / c + model.invocation_fixed_secs;
            let cold = model.cold_start_cpu_secs / c + model.cold_start_fixed_secs;
            let gb = f64::from(m) / 1024.0;
            // One round: every worker runs one invocation of S steps.
            let round_wall = o + model.invocation_gap_secs + per_inv * t;
            let round_cost =
                nf * (pricing.invocation_usd + gb * (o + per_inv * t) * pricing.gb_second_usd);
            let rounds = match model.epochs.epochs(n) {
                Some(e) => {
                    // Less a hair: a measured epoch count is a whole number of steps, which
                    // rounding must not push to the next one.
                    let steps = (e * n_examples / (nf * batch) - 1e-6).ceil().max(1.0);
                    (steps / per_inv).ceil()
                }
                None => {
                    // Until the first limit: the coordinator checks them after every round.
                    let by_wall = deadline.map(|d| {
                        ((d - model.job_fixed_secs - cold) / round_wall.max(f64::MIN_POSITIVE))
                            .ceil()
                    });
                    let by_cost = budget.map(|b| (b / round_cost.max(f64::MIN_POSITIVE)).ceil());
                    let rounds = match (by_wall, by_cost) {
                        (Some(w), Some(b)) => w.min(b),
                        (Some(w), None) => w,
                        (None, Some(b)) => b,
                        (None, None) => {
                            return Err(SizingError::Input(
                                "the job has no target, max_epochs, max_wall_secs or \
                                 max_cost_usd: its length cannot be predicted"
                                    .into(),
                            ));
                        }
                    };
                    rounds.max(1.0)
                }
            };
            // The coordinator decides to stop after evaluating a round, while the workers
            // (usually) already run their next invocation; the job ends when those return.
            let rounds = rounds + model.rounds_after_stop;
            let wall = model.job_fixed_secs + cold + rounds * round_wall;
            let cost = rounds * round_cost;
            let limits_only = model.epochs.source == EpochsSource::Limits;
            out.push(Prediction {
                workers: n,
                memory_mb: m,
                vcpus: c,
                step_secs: t,
                epochs: rounds * per_inv * nf * batch / n_examples,
                steps_per_worker: rounds * per_inv,
                invocations_per_worker: rounds,
                wall_secs: wall,
                cost_usd: cost,
                meets_deadline: limits_only || deadline.is_none_or(|d| wall <= d),
                within_budget: limits_only || budget.is_none_or(|b| cost <= b),
            });
        }
    }
    Ok(out)
}

/// Checks the worker counts and tiers a plan predicts.
pub fn validate_grid(workers: &[u32], tiers: &[u32]) -> Result<(), SizingError> {
    if workers.is_empty() || tiers.is_empty() {
        return Err(SizingError::Input(
            "needs at least one worker count and one memory tier".into(),
        ));
    }
    if let Some(&n) = workers.iter().find(|n| !(1..=MAX_WORKERS).contains(n)) {
        return Err(SizingError::Input(format!(
            "worker count {n} is outside 1..={MAX_WORKERS}"
        )));
    }
    if let Some(&m) = tiers.iter().find(|m| !MEMORY_MB_RANGE.contains(m)) {
        return Err(SizingError::Input(format!(
            "memory tier {m} MB is outside {}..={} MB",
            MEMORY_MB_RANGE.start(),
            MEMORY_MB_RANGE.end()
        )));
    }
    Ok(())
}

/// Why the chosen configuration was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// The cheapest of those meeting the deadline and the cost limit.
    CheapestWithinLimits,
    /// None meets them: the fastest.
    NoneWithinLimitsFastest,
}

/// The index of the cheapest prediction that meets the deadline and the cost limit (ties: the
/// faster, then fewer workers); the fastest when none does. `None` for an empty list.
pub fn choose(predictions: &[Prediction]) -> Option<(usize, Choice)> {
    let cheapest = predictions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.meets_deadline && p.within_budget)
        .min_by(|(_, a), (_, b)| {
            a.cost_usd
                .total_cmp(&b.cost_usd)
                .then(a.wall_secs.total_cmp(&b.wall_secs))
                .then(a.workers.cmp(&b.workers))
        });
    if let Some((i, _)) = cheapest {
        return Some((i, Choice::CheapestWithinLimits));
    }
    predictions
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| {
            a.wall_secs
                .total_cmp(&b.wall_secs)
                .then(a.cost_usd.total_cmp(&b.cost_usd))
        })
        .map(|(i, _)| (i, Choice::NoneWithinLimitsFastest))
}

/// Predicted against measured for the configuration that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub workers: u32,
    pub memory_mb: u32,
    pub predicted_wall_secs: f64,
    pub measured_wall_secs: f64,
    /// `(predicted - measured) / measured`.
    pub wall_error: f64,
    pub predicted_cost_usd: f64,
    pub measured_cost_usd: f64,
    pub cost_error: f64,
    pub predicted_steps: f64,
    pub measured_steps: u64,
    pub predicted_epochs: f64,
    pub measured_epochs: f64,
    pub stop_reason: Option<String>,
}

impl Comparison {
    pub fn new(p: &Prediction, m: &crate::report::JobSummary) -> Self {
        let rel = |pred: f64, meas: f64| {
            if meas > 0.0 {
                (pred - meas) / meas
            } else {
                f64::NAN
            }
        };
        Self {
            workers: p.workers,
            memory_mb: p.memory_mb,
            predicted_wall_secs: p.wall_secs,
            measured_wall_secs: m.wall_secs,
            wall_error: rel(p.wall_secs, m.wall_secs),
            predicted_cost_usd: p.cost_usd,
            measured_cost_usd: m.billed_cost_usd,
            cost_error: rel(p.cost_usd, m.billed_cost_usd),
            predicted_steps: p.steps_per_worker * f64::from(p.workers),
            measured_steps: m.steps,
            predicted_epochs: p.epochs,
            measured_epochs: m.epochs,
            stop_reason: m.stop_reason.clone(),
        }
    }
}
