//! The coordinator end to end in one process: a real parameter-store shard on 127.0.0.1:0 and
//! worker invocations run in-process (the function platform's process path is covered by the
//! e2e crate). Digits must reach the job's target under each synchronization mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cumulus_param_store::ShardConfig;
use cumulus_runtime::CancellationToken;
use cumulus_trainer::coordinator::{RunOptions, run_job};
use cumulus_trainer::evaluate::JobMetric;
use cumulus_trainer::invoker::{InProcessInvoker, InvokeError, InvokeFuture, Invoker};
use cumulus_trainer::job::{JobSpec, WirePrecision};
use cumulus_trainer::report::{JobState, JobStatus, JobSummary, METRICS_FILE};
use cumulus_trainer::worker::WorkerTask;
use tokio::sync::watch;

mod common;

/// A real shard on 127.0.0.1:0 keeping its files under `dir/store`.
async fn shard(dir: &std::path::Path) -> cumulus_param_store::ShardHandle {
    let mut config = ShardConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("store"));
    config.wal_fsync = false;
    cumulus_param_store::run(config).await.unwrap()
}

fn digits_job(sync: &str, v: f32, out: &std::path::Path) -> JobSpec {
    let head = format!(
        "name = \"digits-{}\"\noutput = \"{}\"",
        sync.replace(':', "-"),
        out.display()
    );
    let workers = format!("sync = \"{sync}\"\nsignificance = {v}");
    let text = common::digits_job(&head, &workers, "target_accuracy = 0.95\nmax_epochs = 60");
    JobSpec::from_toml_str("test.toml", &text).expect("the test job is valid")
}

async fn train(sync: &str, v: f32) -> (JobSummary, JobStatus, tempfile::TempDir) {
    train_at(sync, v, WirePrecision::F32).await
}

async fn train_at(
    sync: &str,
    v: f32,
    precision: WirePrecision,
) -> (JobSummary, JobStatus, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let shard = shard(dir.path()).await;
    let out = dir.path().join("model");
    let mut job = digits_job(sync, v, &out);
    job.workers.wire_precision = precision;
    let options = RunOptions {
        job_id: job.name.clone(),
        work_dir: dir.path().join("jobs"),
        store: vec![shard.addr.to_string()],
        cancel: CancellationToken::new(),
        gpu: None,
    };
    let invoker = Arc::new(InProcessInvoker {
        time_limit: Duration::from_secs(120),
    });
    let (tx, rx) = watch::channel(JobStatus::new(&job.name, JobMetric::Accuracy, 2));
    let outcome = run_job(&job, &options, invoker, tx).await.unwrap();
    assert_eq!(outcome.output_dir, out);
    let written: JobSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join(METRICS_FILE)).unwrap()).unwrap();
    assert_eq!(written, outcome.summary);
    shard.stop().await.unwrap();
    let status = rx.borrow().clone();
    (outcome.summary, status, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bsp_with_the_filter_reaches_the_target_and_sends_less() {
    let (m, status, dir) = train("bsp", 0.3).await;
    assert_eq!(status.state, JobState::Succeeded);
    let acc = m
        .test_accuracy
        .expect("a classification job reports accuracy");
    assert!(acc >= 0.95, "test accuracy {acc}");
    assert!(
        m.stop_reason
            .as_deref()
            .unwrap()
            .contains("reached the target")
    );
    assert!(m.entries_sent < m.entries_considered, "{m:?}");
    // Savings against pushing every tensor whole (4 bytes per entry); sent entries cost their
    // value and a gap-coded index, so at least 5 bytes each.
    assert_eq!(m.bytes_filtered, m.entries_considered * 4 - m.bytes_pushed);
    assert!(m.bytes_pushed >= m.entries_sent * 5, "{m:?}");
    // The saved model is the one that was measured.
    let model = cumulus_models::Model::load(dir.path().join("model"), &candle_core::Device::Cpu)
        .expect("the output folder holds a loadable model");
    assert_eq!(model.config().arch(), "mlp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssp_and_asp_reach_the_target_too() {
    for sync in ["ssp:2", "asp"] {
        let (m, _, _dir) = train(sync, 0.1).await;
        let acc = m.test_accuracy.unwrap();
        assert!(acc >= 0.95, "{sync}: test accuracy {acc}");
        assert_eq!(m.sync, sync);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_filter_sends_a_fraction_of_what_v_zero_sends() {
    let (all, _, _d0) = train("bsp", 0.0).await;
    let (filtered, _, _d1) = train("bsp", 0.3).await;
    let share = |m: &JobSummary| m.entries_sent as f64 / m.entries_considered as f64;
    // v = 0 holds back only exact zeros (pixels that are always blank never get a gradient).
    assert!(share(&all) > 0.5, "v = 0 sent {:.3}", share(&all));
    assert!(
        share(&filtered) < 0.5 * share(&all),
        "v = 0.3 sent {:.3}, v = 0 {:.3}",
        share(&filtered),
        share(&all)
    );
    assert!(filtered.test_accuracy.unwrap() >= 0.95);
    assert!(all.test_accuracy.unwrap() >= 0.95);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_in_f16_reach_the_target_with_fewer_bytes_per_entry() {
    let (m, status, _dir) = train_at("bsp", 0.3, WirePrecision::F16).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert!(m.test_accuracy.unwrap() >= 0.95, "{m:?}");
    // Each step pushes f16 values (2 bytes) with gap-coded indices (1–3 bytes); only the final
    // drains go in f32. In f32 every entry costs at least 5.
    let per_entry = m.bytes_pushed as f64 / m.entries_sent as f64;
    assert!(
        per_entry < 4.0,
        "{per_entry:.2} bytes per pushed entry: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_job_stops_after_the_current_invocations_and_writes_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let shard = shard(dir.path()).await;
    let out = dir.path().join("model");
    let mut job = digits_job("bsp", 0.1, &out);
    // A target no model reaches: only the cancel can end it early.
    job.stop.target_accuracy = Some(1.0);
    job.stop.max_epochs = Some(10_000);
    let cancel = CancellationToken::new();
    let options = RunOptions {
        job_id: job.name.clone(),
        work_dir: dir.path().join("jobs"),
        store: vec![shard.addr.to_string()],
        cancel: cancel.clone(),
        gpu: None,
    };
    let invoker = Arc::new(InProcessInvoker {
        time_limit: Duration::from_secs(120),
    });
    let (tx, mut rx) = watch::channel(JobStatus::new(&job.name, JobMetric::Accuracy, 2));
    let run = tokio::spawn(async move { run_job(&job, &options, invoker, tx).await });
    // Cancel once the first round was evaluated.
    rx.wait_for(|s| s.metric_value.is_some()).await.unwrap();
    cancel.cancel();
    let outcome = run.await.unwrap().unwrap();
    let status = rx.borrow().clone();
    assert_eq!(status.state, JobState::Cancelled);
    assert_eq!(outcome.summary.stop_reason.as_deref(), Some("cancelled"));
    assert!(out.join(METRICS_FILE).is_file());
    assert!(
        outcome.summary.epochs < 100.0,
        "{:?}",
        outcome.summary.epochs
    );
    shard.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_are_loadable_model_folders_and_only_the_newest_three_remain() {
    let dir = tempfile::tempdir().unwrap();
    let shard = shard(dir.path()).await;
    let out = dir.path().join("model");
    let mut job = digits_job("bsp", 0.1, &out);
    // A fixed length (no target) of 2 workers x 20 steps a round: about 9 rounds of 40 steps.
    job.stop.target_accuracy = None;
    job.stop.max_epochs = Some(8);
    job.checkpoint_every_steps = 50;
    // A checkpoint of an earlier run into the same folder is not this run's: it goes.
    let stale = out.join("checkpoints").join("step-999999");
    std::fs::create_dir_all(&stale).unwrap();
    let options = RunOptions {
        job_id: job.name.clone(),
        work_dir: dir.path().join("jobs"),
        store: vec![shard.addr.to_string()],
        cancel: CancellationToken::new(),
        gpu: None,
    };
    let invoker = Arc::new(InProcessInvoker {
        time_limit: Duration::from_secs(120),
    });
    let (tx, _rx) = watch::channel(JobStatus::new(&job.name, JobMetric::Accuracy, 2));
    let outcome = run_job(&job, &options, invoker, tx).await.unwrap();
    shard.stop().await.unwrap();
    let m = outcome.summary;
    assert!(
        m.steps >= 5 * 50,
        "only {} steps: too few to test pruning",
        m.steps
    );

    let ckpt_dir = out.join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&ckpt_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut steps: Vec<u64> = names
        .iter()
        .map(|n| {
            n.strip_prefix("step-")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unexpected entry {n:?} in {names:?}"))
        })
        .collect();
    steps.sort();
    assert_eq!(steps.len(), 3, "{names:?}");
    // The newest three: the last one at most one round (40 steps) before the end, each at or
    // past its own multiple of the interval, and more than one interval apart from the next.
    assert!(
        steps[2] <= m.steps && steps[2] + 40 >= m.steps,
        "{steps:?} of {}",
        m.steps
    );
    assert!(steps.windows(2).all(|w| w[1] / 50 > w[0] / 50), "{steps:?}");

    let device = candle_core::Device::Cpu;
    let load = |s: u64| {
        cumulus_models::Model::load(ckpt_dir.join(format!("step-{s}")), &device)
            .expect("a checkpoint is a loadable model folder")
    };
    let (oldest, newest) = (load(steps[0]), load(steps[2]));
    assert_eq!(newest.config().arch(), "mlp");
    // Training went on between the two: the checkpoints hold different weights.
    let weights = |model: &cumulus_models::Model| {
        let mut all = Vec::new();
        for (_, var) in model.named_vars(true) {
            all.extend(
                var.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        all
    };
    assert_ne!(weights(&oldest), weights(&newest));
}

/// Worker 0 trains for real; worker 1's invocations never reach an instance (as if its instance
/// never came up): they wait until they are cancelled. So worker 0 ends up waiting at the BSP
/// barrier for worker 1. Every call made after the test saw the job cancelled is counted.
struct OneStuckWorker {
    real: InProcessInvoker,
    calls: AtomicU64,
    cancel_seen: Arc<AtomicBool>,
    calls_after_cancel: AtomicU64,
}

impl Invoker for OneStuckWorker {
    fn invoke(&self, task: WorkerTask, cancel: CancellationToken) -> InvokeFuture<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.cancel_seen.load(Ordering::SeqCst) {
            self.calls_after_cancel.fetch_add(1, Ordering::SeqCst);
        }
        if task.worker == 0 {
            return self.real.invoke(task, cancel);
        }
        Box::pin(async move {
            cancel.cancelled().await;
            Err(InvokeError::Cancelled)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_reaches_a_worker_waiting_at_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let shard = shard(dir.path()).await;
    let out = dir.path().join("model");
    let mut job = digits_job("bsp", 0.1, &out);
    job.stop.target_accuracy = Some(1.0);
    job.stop.max_epochs = Some(10_000);
    job.training.steps_per_invocation = 1_000;
    let cancel = CancellationToken::new();
    let options = RunOptions {
        job_id: job.name.clone(),
        work_dir: dir.path().join("jobs"),
        store: vec![shard.addr.to_string()],
        cancel: cancel.clone(),
        gpu: None,
    };
    let cancel_seen = Arc::new(AtomicBool::new(false));
    let invoker = Arc::new(OneStuckWorker {
        real: InProcessInvoker {
            time_limit: Duration::from_secs(600),
        },
        calls: AtomicU64::new(0),
        cancel_seen: cancel_seen.clone(),
        calls_after_cancel: AtomicU64::new(0),
    });
    let (tx, mut rx) = watch::channel(JobStatus::new(&job.name, JobMetric::Accuracy, 2));
    let job_id = job.name.clone();
    let counting = invoker.clone();
    let run = tokio::spawn(async move { run_job(&job, &options, counting, tx).await });

    // Worker 0 has run its first step (clock 1) and now waits for worker 1 at clock 0.
    let client = cumulus_param_store::ParamStoreClient::connect(
        &[shard.addr.to_string()],
        Default::default(),
    )
    .await
    .unwrap();
    let waiting = async {
        loop {
            let stats = client.stats().await.unwrap();
            let at_barrier = stats
                .iter()
                .flat_map(|s| &s.jobs)
                .any(|j| j.job_id == job_id && j.max_clock >= 1 && j.min_clock == 0);
            if at_barrier {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), waiting)
        .await
        .expect("worker 0 reaches the barrier");
    // The status says so while it waits.
    let limit = Duration::from_secs(60);
    tokio::time::timeout(limit, rx.wait_for(|s| s.phase.contains("barrier")))
        .await
        .expect("the phase names the barrier")
        .unwrap();

    cancel.cancel();
    tokio::time::timeout(limit, rx.wait_for(|s| s.state == JobState::Cancelled))
        .await
        .expect("the cancel is seen")
        .unwrap();
    cancel_seen.store(true, Ordering::SeqCst);
    // Without the store ending the barrier wait, worker 0 would wait out its 300 s clock limit.
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a cancelled job ends while its worker waits at the barrier")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.summary.stop_reason.as_deref(), Some("cancelled"));
    assert!(out.join(METRICS_FILE).is_file());
    assert!(out.join("model.safetensors").is_file());
    assert_eq!(invoker.calls_after_cancel.load(Ordering::SeqCst), 0);
    assert_eq!(
        invoker.calls.load(Ordering::SeqCst),
        2,
        "one invocation per worker"
    );
    let last = rx.borrow().clone();
    assert_eq!(last.invocations_started, 2);
    shard.stop().await.unwrap();
}

/// The in-process worker, priced like a 1 GB function (for the cost limit).
struct Priced(InProcessInvoker);

impl Invoker for Priced {
    fn invoke(&self, task: WorkerTask, cancel: CancellationToken) -> InvokeFuture<'_> {
        self.0.invoke(task, cancel)
    }
    fn price(&self) -> Option<(f64, f64)> {
        Some((0.001, 0.0))
    }
}

/// Runs `job` with invocations far longer than the job's limits allow, within a bound.
async fn run_with_long_invocations(mut job: JobSpec, invoker: Arc<dyn Invoker>) -> JobSummary {
    let dir = tempfile::tempdir().unwrap();
    let shard = shard(dir.path()).await;
    job.stop.target_accuracy = Some(1.0);
    job.training.steps_per_invocation = 1_000_000;
    let options = RunOptions {
        job_id: job.name.clone(),
        work_dir: dir.path().join("jobs"),
        store: vec![shard.addr.to_string()],
        cancel: CancellationToken::new(),
        gpu: None,
    };
    let (tx, _rx) = watch::channel(JobStatus::new(&job.name, JobMetric::Accuracy, 2));
    let run = run_job(&job, &options, invoker, tx);
    let outcome = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the limit stops the invocations in flight")
        .unwrap();
    shard.stop().await.unwrap();
    outcome.summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_stop_invocations_in_flight_not_only_at_the_end_of_a_round() {
    let dir = tempfile::tempdir().unwrap();
    let in_process = || InProcessInvoker {
        time_limit: Duration::from_secs(600),
    };

    // Epochs: 8 workers in one endless invocation each stop at 2 epochs, within a step each.
    let mut job = digits_job("bsp", 0.1, &dir.path().join("epochs"));
    job.workers.count = 8;
    job.stop.max_epochs = Some(2);
    job.stop.max_wall_secs = None;
    let m = run_with_long_invocations(job, Arc::new(in_process())).await;
    let one_step_each = 8.0 * 32.0 / m.train_examples as f64;
    assert!(
        m.epochs >= 2.0 && m.epochs <= 2.0 + one_step_each,
        "{} epochs",
        m.epochs
    );
    assert_eq!(m.stop_reason.as_deref(), Some("2 epochs done"));

    // Wall time: 1 s, although each invocation would run for ages.
    let mut job = digits_job("bsp", 0.1, &dir.path().join("wall"));
    job.stop.max_epochs = Some(100_000);
    job.stop.max_wall_secs = Some(1.0);
    let m = run_with_long_invocations(job, Arc::new(in_process())).await;
    assert_eq!(m.stop_reason.as_deref(), Some("wall-time limit of 1 s"));

    // Cost: the running invocations' cost counts before their bills are in.
    let mut job = digits_job("bsp", 0.1, &dir.path().join("cost"));
    job.stop.max_epochs = Some(100_000);
    job.stop.max_cost_usd = Some(0.002);
    let m = run_with_long_invocations(job, Arc::new(Priced(in_process()))).await;
    assert_eq!(m.stop_reason.as_deref(), Some("cost limit of $0.002"));
}
