//! `cumulus train --plan JOB.toml`: profiles the job for a few seconds on the embedded default,
//! fits the time-and-cost model of `cumulus_trainer::sizing`, prints the predicted time and cost of
//! every worker count × memory tier and the configuration chosen, and writes plan.json. With
//! `--run` it then trains the chosen configuration and reports predicted against measured.

use anyhow::Context;
use clap::Args;
use comfy_table::Table;
use cumulus_control::UpHandle;
use cumulus_runtime::{CumulusConfig, LimitMode};
use cumulus_trainer::evaluate::JobMetric;
use cumulus_trainer::job::JobSpec;
use cumulus_trainer::sizing::trial::{TrialSettings, run_trials, trial_tiers};
use cumulus_trainer::sizing::{
    Choice, Comparison, CpuModel, EpochsSource, SizingPlan, validate_grid,
};
use cumulus_trainer::worker;

use crate::train::train;

/// Smallest tier the plan considers by default: below it the worker process itself may not fit.
const DEFAULT_MIN_TIER_MB: u32 = 512;

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Try the job briefly, print its predicted time and cost for several worker counts and
    /// memory tiers with the cheapest configuration meeting its deadline (`stop.max_wall_secs`),
    /// write plan.json to the output folder, and exit.
    #[arg(long, env = "CUMULUS_TRAIN_PLAN")]
    pub plan: bool,
    /// With --plan: then train the chosen configuration and report the predicted against the
    /// measured time and cost (also in plan.json).
    #[arg(long, env = "CUMULUS_TRAIN_PLAN_RUN", requires = "plan")]
    pub run: bool,
    /// Worker counts the plan predicts (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_PLAN_WORKERS",
        value_delimiter = ',',
        default_value = "1,2,4,8"
    )]
    pub plan_workers: Vec<u32>,
    /// Memory tiers the plan predicts, MB (comma-separated; each one of the config's
    /// `functions.memory_tiers_mb`); the config's tiers of at least 512 MB when absent.
    #[arg(long, env = "CUMULUS_PLAN_TIERS", value_delimiter = ',')]
    pub plan_tiers: Vec<u32>,
    /// Worker counts the profile runs the job at (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_PLAN_PROFILE_WORKERS",
        value_delimiter = ',',
        default_value = "1,2"
    )]
    pub profile_workers: Vec<u32>,
    /// Seconds each profile run trains; it stops at the first round past them, or at the job's
    /// target.
    #[arg(long, env = "CUMULUS_PLAN_PROFILE_SECS", default_value_t = 3.0)]
    pub profile_secs: f64,
}

/// The tiers to predict: those asked for (each offered by the config), or the config's own.
fn candidate_tiers(args: &PlanArgs, config: &CumulusConfig) -> anyhow::Result<Vec<u32>> {
    let offered = &config.functions.memory_tiers_mb;
    let mut tiers = if args.plan_tiers.is_empty() {
        let big: Vec<u32> = offered
            .iter()
            .copied()
            .filter(|&m| m >= DEFAULT_MIN_TIER_MB)
            .collect();
        if big.is_empty() { offered.clone() } else { big }
    } else {
        if let Some(m) = args.plan_tiers.iter().find(|m| !offered.contains(m)) {
            anyhow::bail!(
                "--plan-tiers: {m} MB is not one of the config's functions.memory_tiers_mb {offered:?}"
            );
        }
        args.plan_tiers.clone()
    };
    tiers.sort_unstable();
    tiers.dedup();
    Ok(tiers)
}

/// How the platform gives workers CPU: the tier's share (unless limits are off), capped by the
/// host's cores when the workers are local processes.
fn cpu_model(config: &CumulusConfig) -> CpuModel {
    let f = &config.functions;
    let limited = !matches!(f.limits, LimitMode::Rlimit | LimitMode::None) && f.mb_per_vcpu > 0;
    let local = f.spec(worker::KIND).url.is_none();
    CpuModel {
        mb_per_vcpu: limited.then_some(f64::from(f.mb_per_vcpu)),
        host_cores: local
            .then(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)),
    }
}

pub async fn plan(
    args: PlanArgs,
    mut job: JobSpec,
    job_file: &str,
    up: &UpHandle,
) -> anyhow::Result<()> {
    let config = up.platform().config().clone();
    let tiers = candidate_tiers(&args, &config)?;
    let cpu = cpu_model(&config);
    let mut workers = args.plan_workers.clone();
    workers.sort_unstable();
    workers.dedup();
    validate_grid(&workers, &tiers)?;
    let mut profile_workers = args.profile_workers.clone();
    profile_workers.sort_unstable();
    profile_workers.dedup();
    let max_profiled = profile_workers.iter().copied().max().unwrap_or(1);
    let settings = TrialSettings {
        workers: profile_workers,
        tiers: trial_tiers(&tiers, cpu, max_profiled),
        secs: args.profile_secs,
    };
    settings.validate()?;
    eprintln!(
        "profiling {}: {} worker count(s) {:?} × tiers {:?} MB, {} s each, real workers on the embedded default",
        job.name,
        settings.workers.len(),
        settings.workers,
        settings.tiers,
        settings.secs
    );
    let trials = run_trials(&job, up.fleet(), &up.store_addrs, &up.work_dir, &settings)
        .await
        .context("profiling the job")?;

    let mut plan = SizingPlan::make(&job, trials, cpu, &config.pricing, &workers, &tiers)?;
    print_plan(&plan, &job);
    let out = job.output_dir();
    let path = plan
        .write(&out)
        .with_context(|| format!("writing the plan to {}", out.display()))?;
    println!("plan written to {}", path.display());
    if !args.run {
        return Ok(());
    }

    let chosen = plan.chosen().clone();
    job.workers.count = chosen.workers;
    job.workers.memory_mb = chosen.memory_mb;
    job.autotune.min_workers = job.autotune.min_workers.min(chosen.workers);
    job.validate(job_file)?;
    println!(
        "running the chosen configuration: {} worker(s) × {} MB",
        chosen.workers, chosen.memory_mb
    );
    let view = train(up, job).await?;
    let summary = view
        .metrics
        .context("the chosen configuration's run ended without a summary")?;
    let cmp = Comparison::new(&chosen, &summary);
    print_comparison(&cmp);
    plan.measured = Some(cmp);
    plan.write(&out)
        .with_context(|| format!("writing the plan to {}", out.display()))?;
    println!("predicted and measured written to {}", path.display());
    Ok(())
}

fn ms(secs: f64) -> String {
    format!("{:.2} ms", secs * 1e3)
}

fn print_plan(plan: &SizingPlan, job: &JobSpec) {
    println!(
        "profile (the job itself, real workers and store; each run stops at the first round past the profile time or at the target):"
    );
    for run in &plan.profile.runs {
        let steps: u32 = run.invocations.iter().map(|s| s.steps).sum();
        let step_secs: f64 = run.invocations.iter().map(|s| s.step_secs).sum();
        let bytes: u64 = run.invocations.iter().map(|s| s.step_bytes).sum();
        let cold = run.invocations.iter().filter(|s| s.cold).count();
        let steps_f = f64::from(steps.max(1));
        println!(
            "  {} worker(s) × {} MB: {:.2} s, {} steps, {:.2} epochs, {:.2} ms per step, {:.0} bytes pushed per step, {} invocations ({cold} cold), billed ${:.6}",
            run.workers,
            run.memory_mb,
            run.wall_secs,
            run.steps,
            run.epochs,
            step_secs / steps_f * 1e3,
            bytes as f64 / steps_f,
            run.invocations.len(),
            run.cost_usd
        );
    }
    let m = &plan.model;
    let host = |c: f64| {
        format!(
            "{c:.2} of the host's {:.0} cores shared by the workers (the rest fitted as taken by the store, the coordinator and other load)",
            c + m.host_cores_reserved
        )
    };
    let cpu = match (m.cpu.mb_per_vcpu, m.cpu.host_cores) {
        (Some(per), Some(c)) => format!("memory / {per:.0} MB, at most {}", host(c)),
        (Some(per), None) => format!("memory / {per:.0} MB"),
        (None, Some(c)) => format!("{} (tiers set no CPU limit)", host(c)),
        (None, None) => "1 (tiers set no CPU limit)".to_string(),
    };
    println!("fitted model (least squares on the profile), c = vCPUs per worker = {cpu}:");
    println!(
        "  step time = {} / c + {} + {:.3e} s/B × workers × {:.0} B   (fit error {:.1}%)",
        ms(m.step_cpu_secs),
        ms(m.step_fixed_secs),
        m.step_secs_per_byte,
        m.step_bytes,
        100.0 * m.step_fit_error
    );
    println!(
        "  invocation overhead = {} / c + {} billed, + {} between invocations; cold start = {} / c + {}; job fixed time {:.2} s; {:.2} rounds run after the stopping one",
        ms(m.invocation_cpu_secs),
        ms(m.invocation_fixed_secs),
        ms(m.invocation_gap_secs),
        ms(m.cold_start_cpu_secs),
        ms(m.cold_start_fixed_secs),
        m.job_fixed_secs,
        m.rounds_after_stop
    );
    let metric = JobMetric::for_loss(job.training.loss);
    let target = [
        job.stop.target_accuracy,
        job.stop.target_rmse,
        job.stop.target_auc,
    ]
    .into_iter()
    .flatten()
    .next()
    .map(|t| format!(" (target {} {t})", metric.key()))
    .unwrap_or_default();
    let curve = match m.epochs.at_one_worker {
        Some(e1) => format!(
            "; E(workers) = {e1:.2} × workers^{:.2}{}",
            m.epochs.exponent,
            m.epochs
                .max_epochs
                .map(|x| format!(", at most {x}"))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    println!("  epochs{target}: {}{curve}", m.epochs.source);
    if m.epochs.source == EpochsSource::Extrapolated {
        println!(
            "  (a learning curve's tail flattens: a longer --profile-secs lets the profile reach the target and measure the epochs instead)"
        );
    }
    if job.autotune.enabled {
        println!(
            "  note: the job's auto-tuner may remove workers while it runs; the plan assumes the count stays as chosen"
        );
    }

    let mut table = Table::new();
    table.load_style(comfy_table::presets::ASCII_FULL_CONDENSED);
    table.set_header([
        "",
        "workers",
        "memory MB",
        "vCPU/worker",
        "step ms",
        "epochs",
        "steps/worker",
        "wall s",
        "cost $",
        "within limits",
    ]);
    for (i, p) in plan.predictions.iter().enumerate() {
        let limits = match (p.meets_deadline, p.within_budget) {
            (true, true) => "yes",
            (false, true) => "misses deadline",
            (true, false) => "over cost limit",
            (false, false) => "misses both",
        };
        table.add_row([
            if i == plan.chosen { "*" } else { "" }.to_string(),
            p.workers.to_string(),
            p.memory_mb.to_string(),
            format!("{:.2}", p.vcpus),
            format!("{:.2}", p.step_secs * 1e3),
            format!("{:.2}", p.epochs),
            format!("{:.0}", p.steps_per_worker),
            format!("{:.1}", p.wall_secs),
            format!("{:.6}", p.cost_usd),
            limits.to_string(),
        ]);
    }
    println!("{table}");
    let c = plan.chosen();
    let why = match (plan.choice, plan.deadline_secs) {
        (Choice::CheapestWithinLimits, Some(d)) => {
            format!("the cheapest meeting the {d} s deadline")
        }
        (Choice::CheapestWithinLimits, None) => {
            "the cheapest (the job has no deadline)".to_string()
        }
        (Choice::NoneWithinLimitsFastest, _) => {
            "NO configuration meets the deadline and cost limit: the fastest".to_string()
        }
    };
    println!(
        "chosen: {} worker(s) × {} MB: predicted {:.1} s, ${:.6} ({why})",
        c.workers, c.memory_mb, c.wall_secs, c.cost_usd
    );
}

fn print_comparison(c: &Comparison) {
    let mut table = Table::new();
    table.set_header(["", "predicted", "measured", "error"]);
    let pct = |e: f64| format!("{:+.1}%", 100.0 * e);
    table.add_row([
        "wall s".to_string(),
        format!("{:.2}", c.predicted_wall_secs),
        format!("{:.2}", c.measured_wall_secs),
        pct(c.wall_error),
    ]);
    table.add_row([
        "cost $".to_string(),
        format!("{:.6}", c.predicted_cost_usd),
        format!("{:.6}", c.measured_cost_usd),
        pct(c.cost_error),
    ]);
    table.add_row([
        "steps".to_string(),
        format!("{:.0}", c.predicted_steps),
        c.measured_steps.to_string(),
        pct((c.predicted_steps - c.measured_steps as f64) / c.measured_steps.max(1) as f64),
    ]);
    table.add_row([
        "epochs".to_string(),
        format!("{:.2}", c.predicted_epochs),
        format!("{:.2}", c.measured_epochs),
        pct((c.predicted_epochs - c.measured_epochs) / c.measured_epochs.max(f64::MIN_POSITIVE)),
    ]);
    println!(
        "predicted against measured ({} worker(s) × {} MB):",
        c.workers, c.memory_mb
    );
    println!("{table}");
}
