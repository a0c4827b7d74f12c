//! `cumulus train JOB.toml`: runs one job to the end on the embedded default — the control plane
//! of [`cumulus_control::run`] in this process without its HTTP API: a parameter-store shard,
//! worker functions as local processes (`cumulus fn train-worker`) on the function platform —
//! with a live progress bar, then prints the summary. The job goes through the same job manager
//! and the same worker sizing as one submitted to `cumulus up`. `--plan` predicts its time and
//! cost first (see [`crate::plan`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use cumulus_control::{UpConfig, UpHandle};
use cumulus_runtime::CumulusConfig;
use cumulus_trainer::job::JobSpec;
use cumulus_trainer::jobs::JobView;
use cumulus_trainer::report::{JobState, JobStatus};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::plan::PlanArgs;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The job file (TOML; see examples/jobs/).
    job: PathBuf,
    /// Output folder for the model, metrics.json and plots; overrides the job's `output`.
    #[arg(long, env = "CUMULUS_TRAIN_OUT")]
    out: Option<PathBuf>,
    /// Platform and pricing file (cumulus.toml); built-in defaults without it.
    #[arg(long, env = "CUMULUS_CONFIG")]
    config: Option<PathBuf>,
    /// Working folder for data shards and the parameter store's log and snapshots; a fresh
    /// temporary folder when absent.
    #[arg(long, env = "CUMULUS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Time limit of one worker invocation, in seconds; overrides the job's
    /// `[workers] timeout_secs`.
    #[arg(long, env = "CUMULUS_WORKER_TIMEOUT_SECS")]
    worker_timeout_secs: Option<u64>,
    #[command(flatten)]
    plan: PlanArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let job_file = args.job.display().to_string();
    let mut job = JobSpec::from_file(&args.job)?;
    if let Some(out) = &args.out {
        job.output = Some(out.clone());
    }
    if let Some(secs) = args.worker_timeout_secs {
        job.workers.timeout_secs = secs;
        job.validate(&format!("{job_file} with --worker-timeout-secs"))?;
    }
    // A local run writes to `runs/<name>` unless told otherwise, never into its work folder.
    job.output = Some(job.output_dir());
    let config = match &args.config {
        Some(file) => CumulusConfig::load(file)?,
        None => CumulusConfig::default(),
    };
    let temp;
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("cumulus-train-")
                .tempdir()
                .context("creating a working folder")?;
            temp.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut up = UpConfig::new(&work_dir);
        up.config = config;
        // One job at a time: trial runs and the run of `--plan --run` follow each other.
        up.max_running_jobs = 1;
        let handle = cumulus_control::run(up).await?;
        let result = if args.plan.plan {
            crate::plan::plan(args.plan, job, &job_file, &handle).await
        } else {
            train(&handle, job).await.map(|_| ())
        };
        handle.shutdown().await;
        result
    })
}

/// Runs `job` on the control plane `up` to its end with a progress bar, prints its summary, and
/// returns the job as it ended (an error unless it succeeded or was cancelled).
pub(crate) async fn train(up: &UpHandle, job: JobSpec) -> anyhow::Result<JobView> {
    let name = job.name.clone();
    let bar = progress_bar(&job);
    let id = up
        .jobs()
        .submit(job)
        .with_context(|| format!("job {name}"))?;
    let rx = up.jobs().subscribe(&id)?;
    // The first Ctrl-C or SIGTERM stops the job as a cancel does (its workers push what they
    // hold, the model so far is written); a second one exits at once.
    let (jobs, cancelled) = (up.jobs().clone(), id.clone());
    let interrupted = std::sync::Arc::new(std::sync::OnceLock::new());
    let seen = interrupted.clone();
    let bar_for_signals = bar.clone();
    let signals = tokio::spawn(async move {
        let first = cumulus_service::shutdown::received().await;
        let _ = seen.set(first);
        let line = format!(
            "{}: stopping {cancelled}: its workers push what they hold and the model so far is written (again to exit at once)",
            first.name()
        );
        if bar_for_signals.is_hidden() {
            eprintln!("{line}");
        } else {
            bar_for_signals.println(line);
        }
        let _ = jobs.cancel(&cancelled);
        let second = cumulus_service::shutdown::received().await;
        eprintln!("{}: exiting now", second.name());
        std::process::exit(i32::from(second.exit_code()));
    });
    render_progress(rx, &bar).await;
    signals.abort();
    bar.finish_and_clear();
    let view = up.jobs().get(&id)?;
    if view.state == JobState::Failed {
        bail!(
            "job {name}: {}",
            view.error.as_deref().unwrap_or("failed without a reason")
        );
    }
    let Some(m) = &view.metrics else {
        bail!("job {name} ended {:?} without a model", view.state);
    };
    let metric = [
        ("test_accuracy", m.test_accuracy),
        ("test_rmse", m.test_rmse),
        ("test_auc", m.test_auc),
    ]
    .into_iter()
    .find_map(|(k, v)| v.map(|v| format!("{k} {v:.4}")))
    .unwrap_or_default();
    println!(
        "{}: {metric} after {:.1} epochs, {} steps, {:.1} s",
        m.job, m.epochs, m.steps, m.wall_secs
    );
    let dense = m
        .entries_considered
        .saturating_mul(cumulus_trainer::filter::DENSE_BYTES_PER_ENTRY);
    println!(
        "pushed {} of {} bytes ({:.1}% filtered), pulled {} bytes, {} invocations ({} cold, {} failed), billed ${:.6}",
        m.bytes_pushed,
        dense,
        100.0 * m.bytes_filtered as f64 / dense.max(1) as f64,
        m.bytes_pulled,
        m.invocations,
        m.cold_starts,
        m.failed_invocations,
        m.billed_cost_usd
    );
    if m.gpu_steps > 0 {
        println!(
            "{} of {} steps ran forward and backward on the GPU executor",
            m.gpu_steps, m.steps
        );
    }
    if let Some(reason) = &m.stop_reason {
        println!("stopped: {reason}");
    }
    println!("model written to {}", view.output.display());
    if let Some(signal) = interrupted.get() {
        println!("interrupted by {}", signal.name());
        return Err(crate::Exit {
            code: signal.exit_code(),
            message: format!("job {name} was interrupted by {}", signal.name()),
        }
        .into());
    }
    Ok(view)
}

fn progress_bar(job: &JobSpec) -> ProgressBar {
    let bar = match job.stop.max_epochs {
        Some(epochs) => ProgressBar::new(u64::from(epochs) * 100),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
        .expect("the progress template is valid");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Follows the status until the job ends; each new phase is also printed as a line, so that
/// a log or a pipe (where the bar is hidden) shows what the job waits for.
async fn render_progress(mut rx: watch::Receiver<JobStatus>, bar: &ProgressBar) {
    let mut phase = String::new();
    loop {
        let st = rx.borrow_and_update().clone();
        if phase_kind(&st.phase) != phase_kind(&phase) {
            let line = format!("{}: {}", st.job_id, st.phase);
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        phase = st.phase.clone();
        bar.set_position((st.epoch * 100.0) as u64);
        let metric = st
            .metric_value
            .map(|v| format!("{} {v:.4}", st.metric))
            .unwrap_or_default();
        let secs = st.elapsed_secs.max(1e-9);
        bar.set_message(format!(
            "epoch {:.1} step {} loss {:.4} {metric} | {:.0} ex/s | pushed {} KiB, saved {} KiB | {} workers | ${:.6}",
            st.epoch,
            st.steps,
            st.loss,
            st.examples as f64 / secs,
            st.bytes_pushed / 1024,
            st.bytes_filtered() / 1024,
            st.workers,
            st.cost_usd
        ));
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// What identifies a phase for printing: its text without the numbers (so counts going up do
/// not print a line each), and only `round` for the rounds (one line when training starts).
pub(crate) fn phase_kind(phase: &str) -> String {
    if phase.starts_with("round") {
        return "round".to_string();
    }
    phase.chars().filter(|c| !c.is_ascii_digit()).collect()
}
