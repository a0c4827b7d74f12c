//! `cumulus train JOB.toml`: runs one job to the end on the embedded default — a parameter-store
//! shard in this process, worker functions as local processes (`cumulus fn train-worker`) on the
//! function platform — with a live progress bar, then writes the model folder and metrics.json.
//! `--plan` predicts its time and cost first (see [`crate::plan`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cumulus_param_store::{ShardConfig, ShardHandle};
use cumulus_runtime::{CumulusConfig, Platform};
use cumulus_trainer::coordinator::{JobOutcome, RunOptions, run_job};
use cumulus_trainer::invoker::PlatformInvoker;
use cumulus_trainer::job::JobSpec;
use cumulus_trainer::report::JobStatus;
use cumulus_trainer::worker;
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
    /// Working folder for dataset partitions and the parameter store's log and snapshots;
    /// a fresh temporary folder when absent.
    #[arg(long, env = "CUMULUS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Deadline of one worker invocation, in seconds (the function's time limit).
    #[arg(long, env = "CUMULUS_WORKER_TIMEOUT_SECS", default_value_t = 120)]
    worker_timeout_secs: u64,
    #[command(flatten)]
    plan: PlanArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let job_file = args.job.display().to_string();
    let mut job = JobSpec::from_file(&args.job)?;
    if let Some(out) = &args.out {
        job.output = Some(out.clone());
    }
    let mut config = match &args.config {
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
    if args.plan.plan {
        return runtime.block_on(crate::plan::plan(
            args.plan,
            job,
            &job_file,
            config,
            &work_dir,
            args.worker_timeout_secs,
        ));
    }
    worker_config(&mut config, &job, args.worker_timeout_secs);
    runtime.block_on(train(job, config, work_dir)).map(|_| ())
}

/// The worker function: one instance per worker, at the job's memory tier.
pub(crate) fn worker_config(config: &mut CumulusConfig, job: &JobSpec, timeout_secs: u64) {
    let entry = config
        .functions
        .overrides
        .entry(worker::KIND.to_string())
        .or_default();
    entry.memory_mb = Some(job.workers.memory_mb);
    entry.max_instances = Some(job.workers.count as usize);
    entry.timeout_ms = Some(timeout_secs.saturating_mul(1000));
    entry.queue_capacity = entry.queue_capacity.or(Some(job.workers.count as usize));
}

/// The embedded default's long-lived parts, shared by `cumulus train` and `cumulus up`: one
/// parameter-store shard in this process and the function platform.
pub(crate) struct Embedded {
    pub shard: ShardHandle,
    pub platform: Platform,
}

impl Embedded {
    /// Starts the shard (its log and snapshots under `work_dir/param-store`) and the platform.
    pub async fn start(config: CumulusConfig, work_dir: &Path) -> anyhow::Result<Self> {
        let store_dir = work_dir.join("param-store");
        let mut shard_config = ShardConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), &store_dir);
        // This shard lives and dies with this process, so an fsync per push would buy nothing:
        // a crash here ends the job with its store. Separate `cumulus param-store` shards fsync.
        shard_config.wal_fsync = false;
        let shard = cumulus_param_store::run(shard_config)
            .await
            .context("starting the parameter store")?;
        let platform = Platform::new(config).context("starting the function platform")?;
        Ok(Self { shard, platform })
    }

    /// Stops the platform's instances, then the shard.
    pub async fn stop(self) {
        self.platform.shutdown().await;
        if let Err(e) = self.shard.stop().await {
            tracing::warn!(error = %e, "stopping the parameter store");
        }
    }
}

/// Runs `job` to the end with a progress bar and prints its summary.
pub(crate) async fn train(
    job: JobSpec,
    config: CumulusConfig,
    work_dir: PathBuf,
) -> anyhow::Result<JobOutcome> {
    let embedded = Embedded::start(config, &work_dir).await?;
    let platform = embedded.platform.clone();
    let job_id = format!(
        "{}-{}",
        job.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let options = RunOptions {
        job_id: job_id.clone(),
        work_dir: work_dir.join("jobs"),
        store: vec![embedded.shard.addr.to_string()],
        cancel: None,
    };
    let invoker = Arc::new(PlatformInvoker::new(
        platform.clone(),
        worker::KIND,
        job_id.clone(),
    ));
    let (tx, rx) = watch::channel(JobStatus::new(
        &job_id,
        cumulus_trainer::evaluate::JobMetric::for_loss(job.training.loss),
        job.workers.count,
    ));
    let bar = progress_bar(&job);
    let render = tokio::spawn(render_progress(rx, bar.clone()));
    let result = run_job(&job, &options, invoker, tx).await;
    render.abort();
    bar.finish_and_clear();
    embedded.stop().await;
    let outcome = result.with_context(|| format!("job {}", job.name))?;
    let m = &outcome.metrics;
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
    if let Some(reason) = &m.stop_reason {
        println!("stopped: {reason}");
    }
    println!("model written to {}", outcome.output_dir.display());
    Ok(outcome)
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

async fn render_progress(mut rx: watch::Receiver<JobStatus>, bar: ProgressBar) {
    while rx.changed().await.is_ok() {
        let st = rx.borrow_and_update().clone();
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
    }
}
