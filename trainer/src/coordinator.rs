//! The job coordinator: prepares the data and the parameter store, keeps one driver per worker
//! re-invoking its `train-worker` function, evaluates on the test split after every round of
//! reports, and decides stop, scale-in and re-invocation. With `checkpoint_every_steps` it also
//! writes a model-folder checkpoint at round boundaries ([`crate::checkpoint`]). At the end it
//! writes the model folder and `metrics.json`.
//!
//! A driver owns its worker's data cursor, clock and push sequence numbers, so a worker function
//! stays stateless: a failed invocation (crash, out of memory, deadline) is simply invoked again,
//! with a fresh range of sequence numbers so none of its pushes can be mistaken for a retry.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use cumulus_models::Model;
use cumulus_param_store::ParamStoreClient;
use cumulus_param_store::client::{ClientConfig, dense};
use cumulus_param_store::layout::SyncMode;
use cumulus_proto::paramstore::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::TrainerError;
use crate::autotune::{AutoTuneConfig, AutoTuner, Decision, Observation};
use crate::checkpoint::Checkpoints;
use crate::dataset::{self, Prepared};
use crate::evaluate::{JobMetric, measure, recalibrate_batch_norm};
use crate::invoker::{Invoked, Invoker};
use crate::job::{JobSpec, ModelSource, OptimizerExt};
use crate::partition;
use crate::report::{HistoryPoint, JobState, JobStatus, Metrics};
use crate::worker::WorkerTask;

/// A worker whose invocations fail this many times in a row fails the job.
const MAX_CONSECUTIVE_FAILURES: u32 = 5;
/// Elements per dense push when the coordinator writes the initial values.
const INIT_PUSH_ELEMENTS: usize = 1 << 20;

/// Where a run keeps its files and finds its store.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub job_id: String,
    /// Partitions are written under `work_dir/<job_id>/`.
    pub work_dir: PathBuf,
    /// Parameter-store shard addresses, in shard order.
    pub store: Vec<String>,
    /// Turns `true` to cancel the job: workers finish their current invocation, push what they
    /// hold and stop; the model reached so far is written.
    pub cancel: Option<watch::Receiver<bool>>,
}

/// What a finished job produced.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub metrics: Metrics,
    pub output_dir: PathBuf,
}

enum Event {
    Report(u32, Box<Invoked>),
    Failure(u32, String),
    Fatal(u32, String),
}

struct Shared {
    stop: AtomicBool,
    removed: Vec<AtomicBool>,
    examples: AtomicU64,
    /// Each worker's partition URL; replaced when a scale-in re-splits the training data.
    partitions: std::sync::Mutex<Vec<String>>,
}

/// Runs `job` to the end. `status` receives the job's progress after every round.
pub async fn run_job(
    job: &JobSpec,
    options: &RunOptions,
    invoker: Arc<dyn Invoker>,
    status: watch::Sender<JobStatus>,
) -> Result<JobOutcome, TrainerError> {
    let started = Instant::now();
    let data = dataset::prepare(&job.data, job.seed)?;
    let model = match &job.model {
        ModelSource::Arch(config) => Model::with_seed(config, &Device::Cpu, job.seed)?,
        ModelSource::Folder(dir) => Model::load(dir, &Device::Cpu)?,
    };
    let data = data.shaped_for(model.config())?;
    let output_dir = job.output_dir();
    // Cleared after the model is loaded, so a job may fine-tune from its own last checkpoint.
    let mut checkpoints = Checkpoints::new(&output_dir, job.checkpoint_every_steps);
    checkpoints.clear()?;
    let metric = JobMetric::for_loss(job.training.loss);
    let workers = job.workers.count;

    let part_dir = options.work_dir.join(&options.job_id);
    let mut partitions = Vec::new();
    for (k, (x, y)) in data.partitions(workers, job.seed)?.iter().enumerate() {
        let url = partition::file_url(&part_dir.join(format!("part-{k}.safetensors")))?;
        partition::write(&url, x, y).await?;
        partitions.push(url);
    }

    let client = ParamStoreClient::connect(&options.store, ClientConfig::default()).await?;
    register(&client, &options.job_id, &model, job.workers.sync, workers).await?;

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        removed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        examples: AtomicU64::new(0),
        partitions: std::sync::Mutex::new(partitions.clone()),
    });
    let (tx, mut rx) = mpsc::channel::<Event>(workers as usize * 4);
    let base_lr = job.training.optimizer.learning_rate();
    for k in 0..workers {
        let template = WorkerTask {
            job_id: options.job_id.clone(),
            worker: k,
            store: options.store.clone(),
            model: model.config().clone(),
            training: job.training.clone(),
            significance: job.workers.significance,
            partition: partitions[k as usize].clone(),
            cursor: 0,
            clock: 0,
            seq: 0,
            steps: job.training.steps_per_invocation,
            lr: base_lr,
            wait_for_clock: job.workers.sync != SyncMode::Asp,
            half_values: job.workers.wire_precision == crate::job::WirePrecision::F16,
        };
        let driver = Driver {
            template,
            invoker: invoker.clone(),
            shared: shared.clone(),
            client: client.clone(),
            tx: tx.clone(),
            train_len: data.train_len() as u64,
            schedule: job.training.lr_schedule.clone(),
            max_epochs: job.stop.max_epochs.unwrap_or(1),
        };
        tokio::spawn(driver.run());
    }
    drop(tx);

    let mut tuner = job
        .autotune
        .enabled
        .then(|| {
            AutoTuner::new(AutoTuneConfig {
                tolerance: job.autotune.tolerance,
                min_workers: job.autotune.min_workers,
                ..AutoTuneConfig::default()
            })
        })
        .transpose()?;
    let mut st = JobStatus::new(&options.job_id, metric, workers);
    let mut history = Vec::new();
    let mut round_reports = 0u32;
    let mut round_loss = (0.0, 0u64);
    let mut fatal = None;
    let mut local_steps = 0u64;
    let mut scale_ins = 0u64;
    // The metric of the model saved when the target was met, if it was.
    let mut kept = None;
    let mut cancel = options.cancel.clone();
    loop {
        let event = tokio::select! {
            event = rx.recv() => match event {
                Some(event) => event,
                None => break,
            },
            Ok(()) = wait_for_cancel(&mut cancel), if st.state == JobState::Running => {
                tracing::info!("job cancelled");
                st.state = JobState::Cancelled;
                st.stop_reason = Some("cancelled".to_string());
                halt(&shared, &client, &options.job_id).await;
                status.send_replace(st.clone());
                continue;
            }
        };
        match event {
            Event::Report(k, inv) => {
                let r = &inv.report;
                for s in &r.steps {
                    st.entries_considered += s.considered;
                    st.entries_sent += s.sent;
                    st.bytes_pushed += s.bytes;
                    round_loss.0 += s.loss;
                    round_loss.1 += 1;
                }
                st.entries_sent += r.drained;
                st.bytes_pushed += r.drained_bytes;
                st.bytes_pulled += r.pulled_bytes;
                st.invocations += 1;
                st.cold_starts += u64::from(inv.cold_start);
                st.cost_usd += inv.cost_usd;
                st.steps += r.steps.len() as u64;
                st.clock = st.clock.max(r.clock);
                let batch = job.training.batch_size as u64;
                st.examples += r.steps.len() as u64 * batch;
                if let Some(t) = tuner.as_mut()
                    && !r.steps.is_empty()
                {
                    local_steps += r.steps.len() as u64;
                    let n = r.steps.len() as f64;
                    t.observe(Observation {
                        step: local_steps,
                        examples: st.examples as f64,
                        loss: r.steps.iter().map(|s| s.loss).sum::<f64>() / n,
                        workers: st.workers,
                        step_secs: r.steps.iter().map(|s| s.step_secs).sum::<f64>() / n,
                    })?;
                }
                tracing::debug!(worker = k, steps = r.steps.len(), "report");
                round_reports += 1;
            }
            Event::Failure(k, reason) => {
                st.failures += 1;
                tracing::warn!(worker = k, %reason, "worker invocation failed; invoking it again");
            }
            Event::Fatal(k, reason) => {
                fatal.get_or_insert(TrainerError::Worker { worker: k, reason });
                halt(&shared, &client, &options.job_id).await;
            }
        }
        shared.examples.store(st.examples, Ordering::Relaxed);
        if round_reports < st.workers || shared.stop.load(Ordering::SeqCst) {
            continue;
        }
        // One round: every active worker reported once since the last evaluation.
        round_reports = 0;
        st.elapsed_secs = started.elapsed().as_secs_f64();
        st.epoch = st.examples as f64 / data.train_len().max(1) as f64;
        if round_loss.1 > 0 {
            st.loss = round_loss.0 / round_loss.1 as f64;
        }
        round_loss = (0.0, 0);
        st.metric_value = Some(evaluate(&client, &options.job_id, &model, &data, metric).await?);
        history.push(HistoryPoint::of(&st));
        if checkpoints.due(st.steps) {
            // `model` holds what `evaluate` just pulled from the store.
            let dir = checkpoints.write(&model, st.steps)?;
            tracing::info!(steps = st.steps, dir = %dir.display(), "checkpoint written");
        }
        if let Some((reason, target_met)) = stop_reason(job, &st, metric) {
            tracing::info!(%reason, "stopping");
            st.stop_reason = Some(reason);
            halt(&shared, &client, &options.job_id).await;
            if target_met {
                // The model just measured is the one that met the target: keep it, whatever
                // the invocations still in flight push before they return.
                model.save(&output_dir)?;
                kept = st.metric_value;
            }
        } else if let Some(t) = tuner.as_mut()
            && let Decision::RemoveWorker {
                predicted_now,
                predicted_fewer,
            } = t.decide()
            && let Some(k) = (0..workers)
                .rev()
                .find(|&k| !shared.removed[k as usize].load(Ordering::SeqCst))
        {
            tracing::info!(
                worker = k,
                predicted_now,
                predicted_fewer,
                "auto-tuner removes a worker"
            );
            shared.removed[k as usize].store(true, Ordering::SeqCst);
            st.workers -= 1;
            scale_ins += 1;
            // The removed worker's partition would no longer be trained on: the remaining
            // workers share the whole training split again.
            let active: Vec<u32> = (0..workers)
                .filter(|&k| !shared.removed[k as usize].load(Ordering::SeqCst))
                .collect();
            resplit(&data, &active, job.seed, scale_ins, &part_dir, &shared).await?;
        }
        status.send_replace(st.clone());
    }
    if let Some(e) = fatal {
        st.state = JobState::Failed;
        status.send_replace(st.clone());
        return Err(e);
    }

    // Every driver has stopped and pushed what it held: the store has the final model.
    st.elapsed_secs = started.elapsed().as_secs_f64();
    st.epoch = st.examples as f64 / data.train_len().max(1) as f64;
    if st.state == JobState::Running {
        st.state = JobState::Succeeded;
    }
    match kept {
        Some(value) => st.metric_value = Some(value),
        None => {
            let value = evaluate(&client, &options.job_id, &model, &data, metric).await?;
            st.metric_value = Some(value);
            history.push(HistoryPoint::of(&st));
            model.save(&output_dir)?;
        }
    }
    status.send_replace(st.clone());
    let metrics = Metrics::new(job, &st, &data, history);
    metrics.write(&output_dir)?;
    crate::plot::write_plots(&metrics, &output_dir)?;
    Ok(JobOutcome {
        metrics,
        output_dir,
    })
}

/// Resolves once `cancel` turns true; never when there is no cancel signal.
async fn wait_for_cancel(cancel: &mut Option<watch::Receiver<bool>>) -> Result<(), ()> {
    match cancel {
        Some(rx) => rx.wait_for(|&c| c).await.map(|_| ()).map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// Stops the job: no driver invokes its worker again, and the invocations in flight learn it from
/// their next clock answer and return after the step they are in (instead of running out their
/// step budget, billed for nothing). If the store cannot be told, they just run to their end.
async fn halt(shared: &Shared, client: &ParamStoreClient, job_id: &str) {
    shared.stop.store(true, Ordering::SeqCst);
    if let Err(e) = client.stop(job_id).await {
        tracing::warn!(error = %e, "could not ask the running workers to stop");
    }
}

/// Why the job should stop now, if it should, and whether the reason is its target metric.
fn stop_reason(job: &JobSpec, st: &JobStatus, metric: JobMetric) -> Option<(String, bool)> {
    let s = &job.stop;
    let target = match metric {
        JobMetric::Accuracy => s.target_accuracy,
        JobMetric::Rmse => s.target_rmse,
        JobMetric::Auc => s.target_auc,
    };
    if let (Some(t), Some(v)) = (target, st.metric_value)
        && metric.reached(v, t)
    {
        return Some((
            format!("{} {v:.4} reached the target {t}", metric.key()),
            true,
        ));
    }
    if let Some(e) = s.max_epochs
        && st.epoch >= f64::from(e)
    {
        return Some((format!("{e} epochs done"), false));
    }
    if let Some(w) = s.max_wall_secs
        && st.elapsed_secs >= w
    {
        return Some((format!("wall-time limit of {w} s"), false));
    }
    if let Some(c) = s.max_cost_usd
        && st.cost_usd >= c
    {
        return Some((format!("cost limit of ${c}"), false));
    }
    None
}

/// Registers the layout (zeros) and pushes the model's initial values as dense deltas, in
/// pieces that stay far below gRPC's message limit whatever the model's size.
async fn register(
    client: &ParamStoreClient,
    job_id: &str,
    model: &Model,
    sync: SyncMode,
    workers: u32,
) -> Result<(), TrainerError> {
    let vars = model.named_vars(true);
    client
        .register(pb::RegisterRequest {
            job_id: job_id.to_string(),
            tensors: tensor_specs(model),
            sync: sync.to_string(),
            workers,
            chunk_size: 0,
        })
        .await?;
    let mut seq = 0;
    for (name, var) in &vars {
        let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        for (i, piece) in values.chunks(INIT_PUSH_ELEMENTS).enumerate() {
            seq += 1;
            let start = (i * INIT_PUSH_ELEMENTS) as u64;
            // Worker 0's own pushes start at sequence 2^32, far above these.
            client
                .push(job_id, 0, 0, seq, vec![dense(name, start, piece.to_vec())])
                .await?;
        }
    }
    Ok(())
}

/// The parameter-store layout of a model: its trainable tensors, names and shapes (values are
/// pushed after registration).
pub fn tensor_specs(model: &Model) -> Vec<pb::TensorSpec> {
    model
        .named_vars(true)
        .iter()
        .map(|(name, var)| pb::TensorSpec {
            name: name.clone(),
            shape: var.dims().iter().map(|&d| d as u64).collect(),
            init: None,
        })
        .collect()
}

/// Pulls the current model into `model` (BatchNorm statistics re-estimated on training
/// examples) and measures it on the test split.
async fn evaluate(
    client: &ParamStoreClient,
    job_id: &str,
    model: &Model,
    data: &Prepared,
    metric: JobMetric,
) -> Result<f64, TrainerError> {
    for (name, values) in client.pull_all(job_id, None).await? {
        let var = model
            .var(&name)
            .ok_or_else(|| TrainerError::UnknownTensor(name.clone()))?;
        let shape = var.as_tensor().shape().clone();
        model.set_param(&name, &Tensor::from_vec(values, shape, &Device::Cpu)?)?;
    }
    // The store holds parameters only; BatchNorm statistics are re-estimated for these weights.
    recalibrate_batch_norm(model, &data.train_x)?;
    measure(model, &data.test_x, &data.test_y, metric)
}

/// Splits the training data anew among the `active` workers after scale-in number `generation`
/// and hands each its new partition; a driver picks it up at its next invocation.
async fn resplit(
    data: &Prepared,
    active: &[u32],
    seed: u64,
    generation: u64,
    part_dir: &std::path::Path,
    shared: &Shared,
) -> Result<(), TrainerError> {
    let mut urls = Vec::with_capacity(active.len());
    let parts = data.partitions(active.len() as u32, seed.wrapping_add(generation))?;
    for (i, (x, y)) in parts.iter().enumerate() {
        let file = part_dir.join(format!("part-g{generation}-{i}.safetensors"));
        let url = partition::file_url(&file)?;
        partition::write(&url, x, y).await?;
        urls.push(url);
    }
    let mut assigned = shared.partitions.lock().expect("never held across a panic");
    for (&k, url) in active.iter().zip(urls) {
        assigned[k as usize] = url;
    }
    Ok(())
}

/// Keeps one worker invoked until the job stops or the worker is removed.
struct Driver {
    template: WorkerTask,
    invoker: Arc<dyn Invoker>,
    shared: Arc<Shared>,
    client: ParamStoreClient,
    tx: mpsc::Sender<Event>,
    train_len: u64,
    schedule: crate::job::LrSchedule,
    max_epochs: u32,
}

impl Driver {
    async fn run(self) {
        let k = self.template.worker;
        let base_lr = self.template.lr;
        let mut task = self.template.clone();
        let mut invocation = 0u64;
        let mut failures = 0u32;
        while !self.shared.stop.load(Ordering::SeqCst)
            && !self.shared.removed[k as usize].load(Ordering::SeqCst)
        {
            invocation += 1;
            // A fresh range of sequence numbers per invocation: a push of a failed invocation
            // can never shadow one of the next.
            task.seq = invocation << 32;
            let partition = self
                .shared
                .partitions
                .lock()
                .expect("never held across a panic")[k as usize]
                .clone();
            if partition != task.partition {
                // A new share of the data after a scale-in: start at its beginning.
                task.partition = partition;
                task.cursor = 0;
            }
            let epoch = self.shared.examples.load(Ordering::Relaxed) / self.train_len.max(1);
            task.lr = base_lr * self.schedule.factor(epoch as u32, self.max_epochs);
            let outcome = match self.invoker.invoke(task.clone()).await {
                Ok(done) if done.report.steps.is_empty() => {
                    // Nothing was trained: the time limit is shorter than one step and its drain.
                    Err("the invocation's time limit left no time for a single step".to_string())
                }
                Ok(done) => Ok(done),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(done) => {
                    failures = 0;
                    task.cursor = done.report.cursor;
                    task.clock = done.report.clock;
                    if self
                        .tx
                        .send(Event::Report(k, Box::new(done)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let event = if failures >= MAX_CONSECUTIVE_FAILURES {
                        Event::Fatal(
                            k,
                            format!("{failures} invocations failed in a row, last: {e}"),
                        )
                    } else {
                        Event::Failure(k, e)
                    };
                    let fatal = matches!(event, Event::Fatal(..));
                    if self.tx.send(event).await.is_err() || fatal {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                }
            }
        }
        // Stop holding the others back; what this worker held was pushed when it returned.
        if let Err(e) = self.client.leave(&task.job_id, k).await {
            tracing::warn!(worker = k, error = %e, "could not leave the job's clock");
        }
    }
}
