//! Partition plans measured as served: each plan's groups deployed as a pipeline of
//! `infer-stage` functions (each loading only its layers), requests sent one at a time, and the
//! measured latency (end to end and per stage) and billed cost set beside what the plan
//! predicted. What `cumulus bench plans` prints; the plans come from `cumulus-partitioner`.

use std::path::PathBuf;
use std::time::Duration;

use cumulus_models::folder::FolderConfig;
use cumulus_partitioner::evaluate::{Violation, evaluate};
use cumulus_partitioner::plan::{GroupChoice, Plan};
use cumulus_partitioner::{Instance, solve};
use cumulus_runtime::Platform;
use cumulus_runtime::serving::ModelServing;
use serde::Serialize;

use crate::executor::PipelineExecutor;
use crate::layer_profile::input_of;

/// Most timed requests per plan.
pub const MAX_REQUESTS: usize = 10_000;

/// One plan to measure, and what it is.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// `optimal`, `smallest tier` or `largest tier`.
    pub kind: &'static str,
    /// The plan as the partitioner evaluates it (its predicted cost and latency).
    pub plan: Plan,
    /// Whether the plan meets every constraint of the instance (the SLO included).
    pub feasible: bool,
}

/// The plans to compare at the SLO of `instance`: the optimum, and the whole model in one
/// function at the smallest tier it fits in and at the largest tier. A kind that does not exist
/// (no plan meets the SLO, no tier fits the model) is left out.
pub fn candidates(instance: &Instance) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Ok(plan) = solve(instance) {
        out.push(Candidate {
            kind: "optimal",
            plan,
            feasible: true,
        });
    }
    let last = instance.layers.len().saturating_sub(1);
    let mut tiers = instance.tiers_mb.clone();
    tiers.sort_unstable();
    let whole = |memory_mb| {
        evaluate(
            instance,
            &[GroupChoice {
                first: 0,
                last,
                memory_mb,
            }],
        )
        .ok()
    };
    // Fits = everything but the SLO holds: the baseline a user would deploy without a plan.
    let fits = |e: &cumulus_partitioner::evaluate::Evaluation| {
        e.violations
            .iter()
            .all(|v| matches!(v, Violation::Slo { .. }))
    };
    if let Some(e) = tiers.iter().find_map(|&t| whole(t).filter(fits)) {
        out.push(Candidate {
            kind: "smallest tier",
            feasible: e.is_feasible(),
            plan: e.plan,
        });
    }
    if let Some(e) = tiers.last().and_then(|&t| whole(t)).filter(fits) {
        out.push(Candidate {
            kind: "largest tier",
            feasible: e.is_feasible(),
            plan: e.plan,
        });
    }
    out
}

/// A plan as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Timed requests (after one warm-up request, which starts the instances).
    pub requests: usize,
    /// End-to-end latency of the timed requests, ms.
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Each stage's mean wall time as the gateway saw it, ms, in stage order.
    pub stage_mean_ms: Vec<f64>,
    /// What the platform billed per request (its 1 ms rounding and invocation fees included).
    pub billed_cost_per_request: f64,
}

/// Serves `plan` for the model of `dir` on `platform` and times `requests` requests of `batch`
/// rows, one at a time, after a warm-up request.
pub async fn measure(
    platform: &Platform,
    name: &str,
    dir: PathBuf,
    plan: &Plan,
    batch: usize,
    requests: usize,
) -> Result<Measurement, String> {
    if !(1..=MAX_REQUESTS).contains(&requests) {
        return Err(format!("requests must be in 1..={MAX_REQUESTS}"));
    }
    let folder_dir = dir.clone();
    let folder = tokio::task::spawn_blocking(move || FolderConfig::read(&folder_dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let groups: Vec<(usize, usize, u32)> = plan
        .groups
        .iter()
        .map(|g| (g.first, g.last, g.memory_mb))
        .collect();
    let serving = ModelServing {
        max_instances: 1,
        ..ModelServing::default()
    };
    let pipeline = PipelineExecutor::deploy(platform, name, dir, &groups, &serving, None)
        .map_err(|e| e.to_string())?;
    let result = run(platform, &pipeline, &folder, batch, requests).await;
    crate::executor::Executor::close(&pipeline).await;
    result
}

async fn run(
    platform: &Platform,
    pipeline: &PipelineExecutor,
    folder: &FolderConfig,
    batch: usize,
    requests: usize,
) -> Result<Measurement, String> {
    let input = input_of(folder, batch);
    pipeline
        .execute_stages(input.clone())
        .await
        .map_err(|e| format!("warm-up request: {e}"))?;
    let functions = pipeline.functions();
    let billed = || {
        let meter = platform.meter();
        functions
            .iter()
            .filter_map(|f| meter.per_function.get(f))
            .map(|t| t.cost_usd)
            .sum::<f64>()
    };
    let before = billed();
    let mut total = Vec::with_capacity(requests);
    let mut stages = vec![Duration::ZERO; functions.len()];
    for _ in 0..requests {
        let (done, took) = pipeline
            .execute_stages(input.clone())
            .await
            .map_err(|e| e.to_string())?;
        total.push(done.took.as_secs_f64() * 1e3);
        for (sum, t) in stages.iter_mut().zip(took) {
            *sum += t;
        }
    }
    let billed_cost_per_request = (billed() - before) / requests as f64;
    let mean_ms = total.iter().sum::<f64>() / requests as f64;
    total.sort_by(f64::total_cmp);
    let at = |q: f64| total[((requests - 1) as f64 * q).round() as usize];
    Ok(Measurement {
        requests,
        mean_ms,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        stage_mean_ms: stages
            .iter()
            .map(|t| t.as_secs_f64() * 1e3 / requests as f64)
            .collect(),
        billed_cost_per_request,
    })
}

/// `a` over `b` less one, in percent (`+12%`: `a` is 12% over `b`).
pub fn percent_off(a: f64, b: f64) -> f64 {
    (a / b - 1.0) * 100.0
}

/// A plan's groups in one line: `0-5@1024 | 6-10@512`.
pub fn groups_line(plan: &Plan) -> String {
    plan.groups
        .iter()
        .map(|g| format!("{}-{}@{}", g.first, g.last, g.memory_mb))
        .collect::<Vec<_>>()
        .join(" | ")
}
