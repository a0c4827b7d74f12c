//! The job coordinator. A job runs in named phases:
//!
//! 1. **prepare** — read and split the data, build the model, write one data shard per worker,
//!    register the model's layout and initial values with the parameter store;
//! 2. **start** — one [`driver`] per worker keeps its `train-worker` function invoked;
//! 3. **rounds** — the reports of the workers' invocations are summed; once every active worker
//!    reported, the round ends: **evaluate** on the test split, write a checkpoint when due,
//!    decide **stop** (target, epochs, wall time, cost, cancel) or **scale-in** (the auto-tuner);
//! 4. **finish** — once every driver has returned (their workers pushed what they held), evaluate
//!    the final model and write the model folder, `metrics.json` and the plots.
//!
//! Stopping is prompt whatever the workers are doing: the drivers stop invoking, invocations
//! still waiting for an instance are abandoned, and the store's `Stop` ends every wait at a
//! barrier, so each running worker returns after the step it is in.
//!
//! The status channel gets the job's [`JobStatus`] after every event and once a second, with a
//! `phase` saying in words what it is doing or waiting for. Computation (data preparation,
//! evaluation, saving, plotting) runs on blocking threads, never on the async runtime that also
//! serves the store and the job API.

mod driver;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use cumulus_models::Model;
use cumulus_param_store::ParamStoreClient;
use cumulus_param_store::client::{ClientConfig, dense};
use cumulus_param_store::layout::SyncMode;
use cumulus_proto::paramstore::v1 as pb;
use cumulus_runtime::CancellationToken;
use tokio::sync::{mpsc, watch};

use crate::TrainerError;
use crate::autotune::{AutoTuneConfig, AutoTuner, Decision, Observation};
use crate::blocking;
use crate::checkpoint::Checkpoints;
use crate::data_shards;
use crate::dataset::{self, Prepared};
use crate::evaluate::{JobMetric, measure, recalibrate_batch_norm};
use crate::invoker::{Invoked, Invoker};
use crate::job::{JobSpec, ModelSource, OptimizerExt};
use crate::metrics as m;
use crate::report::{HistoryPoint, JobState, JobStatus, JobSummary};
use crate::worker::WorkerTask;
use driver::{Driver, Event, Shared};

/// Elements per dense push when the coordinator writes the initial values.
const INIT_PUSH_ELEMENTS: usize = 1 << 20;
/// How often the status is refreshed while nothing else happens.
const STATUS_TICK: Duration = Duration::from_secs(1);

/// Where a run keeps its files and finds its store.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub job_id: String,
    /// Data shards are written under `work_dir/<job_id>/`.
    pub work_dir: PathBuf,
    /// Parameter-store shard addresses, in shard order.
    pub store: Vec<String>,
    /// Cancel it to stop the job: workers finish the step they are in, push what they hold
    /// and return; the model reached so far is written.
    pub cancel: CancellationToken,
    /// The node's GPU executor (its socket), where workers run their training steps.
    pub gpu: Option<PathBuf>,
}

/// What a finished job produced.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub summary: JobSummary,
    pub output_dir: PathBuf,
}

/// Runs `job` to the end. `status` receives the job's progress.
pub async fn run_job(
    job: &JobSpec,
    options: &RunOptions,
    invoker: Arc<dyn Invoker>,
    status: watch::Sender<JobStatus>,
) -> Result<JobOutcome, TrainerError> {
    let mut coordinator = Coordinator::prepare(job, options, status).await?;
    let events = coordinator.start(invoker);
    coordinator.rounds(events).await;
    coordinator.finish().await
}

/// The sums of the round in progress.
#[derive(Default)]
struct Round {
    number: u64,
    reports: u32,
    loss_sum: f64,
    losses: u64,
}

struct Coordinator<'a> {
    job: &'a JobSpec,
    options: &'a RunOptions,
    status: watch::Sender<JobStatus>,
    started: Instant,
    data: Arc<Prepared>,
    model: Arc<Model>,
    metric: JobMetric,
    output_dir: PathBuf,
    checkpoints: Option<Checkpoints>,
    shard_dir: PathBuf,
    client: ParamStoreClient,
    shared: Arc<Shared>,
    invoker: Option<Arc<dyn Invoker>>,
    st: JobStatus,
    history: Vec<HistoryPoint>,
    tuner: Option<AutoTuner>,
    round: Round,
    local_steps: u64,
    scale_ins: u64,
    /// The metric of the model saved when the target was met, if it was.
    kept: Option<f64>,
    fatal: Option<TrainerError>,
    /// Why the job stopped, once it has.
    stopping: Option<String>,
}

impl<'a> Coordinator<'a> {
    /// Phase 1: data, model, data shards, the store's layout and initial values.
    async fn prepare(
        job: &'a JobSpec,
        options: &'a RunOptions,
        status: watch::Sender<JobStatus>,
    ) -> Result<Self, TrainerError> {
        let started = Instant::now();
        let mut st = status.borrow().clone();
        st.state = JobState::Running;
        let say = |st: &mut JobStatus, phase: &str| {
            st.phase = phase.to_string();
            st.elapsed_secs = started.elapsed().as_secs_f64();
            status.send_replace(st.clone());
        };
        say(&mut st, "preparing the data");
        let (spec, seed, source) = (job.data.clone(), job.seed, job.model.clone());
        let loss = job.training.loss;
        let (data, model) = blocking::run("preparing the data and the model", move || {
            let model = match &source {
                ModelSource::Arch(config) => Model::with_seed(config, &Device::Cpu, seed)?,
                ModelSource::Folder(dir) => Model::load(dir, &Device::Cpu)?,
            };
            dataset::check_loss_fits(loss, model.config()).map_err(TrainerError::Data)?;
            let data = dataset::prepare(&spec, seed, Some((loss, model.config())))?;
            let data = data.shaped_for(model.config())?;
            Ok((data, model))
        })
        .await?;
        let output_dir = job.output_dir();
        // Cleared after the model is loaded, so a job may fine-tune from its own last checkpoint.
        let checkpoints = Checkpoints::new(&output_dir, job.checkpoint_every_steps);
        checkpoints.clear()?;
        let workers = job.workers.count;

        say(&mut st, &format!("writing {workers} data shards"));
        let data = Arc::new(data);
        let shard_dir = options.work_dir.join(&options.job_id);
        let shards = write_shards(&data, workers, job.seed, &shard_dir, "part").await?;

        say(&mut st, "registering the model with the parameter store");
        let client = ParamStoreClient::connect(&options.store, ClientConfig::default()).await?;
        register(&client, &options.job_id, &model, job.workers.sync, workers).await?;

        let budget = step_budget(job, &data);
        let tuner = job
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
        Ok(Self {
            job,
            options,
            status,
            started,
            data,
            model: Arc::new(model),
            metric: JobMetric::for_loss(job.training.loss),
            output_dir,
            checkpoints: Some(checkpoints),
            shard_dir,
            client,
            shared: Arc::new(Shared::new(workers, shards, budget)),
            invoker: None,
            st,
            history: Vec::new(),
            tuner,
            round: Round::default(),
            local_steps: 0,
            scale_ins: 0,
            kept: None,
            fatal: None,
            stopping: None,
        })
    }

    /// Phase 2: one driver per worker. Returns the channel of their events.
    fn start(&mut self, invoker: Arc<dyn Invoker>) -> mpsc::Receiver<Event> {
        let job = self.job;
        let workers = job.workers.count;
        let (tx, rx) = mpsc::channel::<Event>(workers as usize * 4);
        let shards = self
            .shared
            .shards
            .lock()
            .expect("never held across a panic")
            .clone();
        let base_lr = job.training.optimizer.learning_rate();
        for k in 0..workers {
            let template = WorkerTask {
                job_id: self.options.job_id.clone(),
                worker: k,
                store: self.options.store.clone(),
                model: self.model.config().clone(),
                training: job.training.clone(),
                significance: job.workers.significance,
                partition: shards[k as usize].clone(),
                cursor: 0,
                clock: 0,
                seq: 0,
                steps: job.training.steps_per_invocation,
                lr: base_lr,
                wait_for_clock: job.workers.sync != SyncMode::Asp,
                half_values: job.workers.wire_precision == crate::job::WirePrecision::F16,
                gpu: self.options.gpu.clone(),
            };
            let driver = Driver {
                template,
                invoker: invoker.clone(),
                shared: self.shared.clone(),
                client: self.client.clone(),
                tx: tx.clone(),
                train_len: self.data.train_len() as u64,
                schedule: job.training.lr_schedule.clone(),
                max_epochs: job.stop.max_epochs.unwrap_or(1),
            };
            tokio::spawn(driver.run());
        }
        self.invoker = Some(invoker);
        self.st.phase = format!("starting {workers} workers");
        self.publish();
        rx
    }

    /// Phase 3: events until every driver has returned.
    async fn rounds(&mut self, mut events: mpsc::Receiver<Event>) {
        let mut tick = tokio::time::interval(STATUS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cancel = self.options.cancel.clone();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                () = cancel.cancelled(), if self.stopping.is_none() => {
                    tracing::info!("job cancelled");
                    self.st.state = JobState::Cancelled;
                    self.stop("cancelled".to_string()).await;
                }
                _ = tick.tick() => {
                    self.check_limits().await;
                    self.refresh_phase().await;
                }
            }
        }
    }

    /// Stops the job once a limit that does not need an evaluation is passed — wall time,
    /// cost (the running invocations' cost so far included), epochs — without waiting for the
    /// round to end: the workers stop after the step they are in.
    async fn check_limits(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let s = &self.job.stop;
        let elapsed = self.started.elapsed().as_secs_f64();
        let reason = if let Some(w) = s.max_wall_secs.filter(|&w| elapsed >= w) {
            Some(format!("wall-time limit of {w} s"))
        } else if let Some(c) = s.max_cost_usd.filter(|&c| self.cost_so_far() >= c) {
            Some(format!("cost limit of ${c}"))
        } else {
            s.max_epochs
                .filter(|&e| {
                    self.st.examples as f64 / self.data.train_len().max(1) as f64 >= f64::from(e)
                })
                .map(|e| format!("{e} epochs done"))
        };
        if let Some(reason) = reason {
            tracing::info!(%reason, "stopping mid-round");
            self.stop(reason).await;
        }
    }

    /// The cost billed so far plus what the invocations still running have cost until now.
    fn cost_so_far(&self) -> f64 {
        let Some((per_second, per_invocation)) = self.invoker.as_ref().and_then(|i| i.price())
        else {
            return self.st.cost_usd;
        };
        let running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let live: f64 = running
            .iter()
            .flatten()
            .map(|since| since.elapsed().as_secs_f64() * per_second + per_invocation)
            .sum();
        self.st.cost_usd + live
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Report(k, inv) => {
                self.on_report(k, &inv);
                if let Err(e) = self.maybe_end_round().await {
                    self.fail(e).await;
                }
                self.check_limits().await;
            }
            Event::Failure(k, reason) => {
                self.st.failures += 1;
                m::invocation_failed();
                tracing::warn!(worker = k, %reason, "worker invocation failed; invoking it again");
            }
            Event::Fatal(k, reason) => {
                self.fail(TrainerError::Worker { worker: k, reason }).await;
            }
        }
        self.publish();
    }

    fn on_report(&mut self, k: u32, inv: &Invoked) {
        let st = &mut self.st;
        let r = &inv.report;
        for s in &r.steps {
            st.entries_considered += s.considered;
            st.entries_sent += s.sent;
            st.bytes_pushed += s.bytes;
            self.round.loss_sum += s.loss;
            self.round.losses += 1;
        }
        st.entries_sent += r.drained;
        st.bytes_pushed += r.drained_bytes;
        st.bytes_pulled += r.pulled_bytes;
        st.invocations += 1;
        st.cold_starts += u64::from(inv.cold_start);
        st.cost_usd += inv.cost_usd;
        st.steps += r.steps.len() as u64;
        st.gpu_steps += r.gpu_steps;
        st.clock = st.clock.max(r.clock);
        let batch = self.job.training.batch_size as u64;
        st.examples += r.steps.len() as u64 * batch;
        m::report(
            r.steps.len() as u64,
            r.steps.iter().map(|s| s.bytes).sum::<u64>() + r.drained_bytes,
        );
        if let Some(t) = self.tuner.as_mut()
            && !r.steps.is_empty()
        {
            self.local_steps += r.steps.len() as u64;
            let n = r.steps.len() as f64;
            let observed = t.observe(Observation {
                step: self.local_steps,
                examples: st.examples as f64,
                loss: r.steps.iter().map(|s| s.loss).sum::<f64>() / n,
                workers: st.workers,
                step_secs: r.steps.iter().map(|s| s.step_secs).sum::<f64>() / n,
            });
            if let Err(e) = observed {
                tracing::warn!(error = %e, "auto-tuner observation refused");
            }
        }
        self.shared.examples.store(st.examples, Ordering::Relaxed);
        tracing::debug!(worker = k, steps = r.steps.len(), "report");
        self.round.reports += 1;
    }

    /// Ends the round once every active worker reported since the last one: evaluate, then
    /// stop or scale in.
    async fn maybe_end_round(&mut self) -> Result<(), TrainerError> {
        if self.round.reports < self.st.workers || self.stopping.is_some() {
            return Ok(());
        }
        let round_started = Instant::now();
        let round = std::mem::take(&mut self.round);
        self.round.number = round.number + 1;
        let st = &mut self.st;
        st.elapsed_secs = self.started.elapsed().as_secs_f64();
        st.epoch = st.examples as f64 / self.data.train_len().max(1) as f64;
        if round.losses > 0 {
            st.loss = round.loss_sum / round.losses as f64;
        }
        st.phase = format!("round {}: evaluating on the test split", round.number + 1);
        self.publish();
        let value = self.evaluate().await?;
        self.st.metric_value = Some(value);
        self.history.push(HistoryPoint::of(&self.st));
        self.checkpoint().await?;
        if let Some((reason, target_met)) = stop_reason(self.job, &self.st, self.metric) {
            tracing::info!(%reason, "stopping");
            self.stop(reason).await;
            if target_met {
                // The model just measured is the one that met the target: keep it, whatever
                // the invocations still in flight push before they return.
                self.save_model().await?;
                self.kept = self.st.metric_value;
            }
        } else {
            self.scale_in().await?;
        }
        m::round(round_started.elapsed());
        Ok(())
    }

    async fn checkpoint(&mut self) -> Result<(), TrainerError> {
        let steps = self.st.steps;
        let Some(mut checkpoints) = self.checkpoints.take() else {
            return Ok(());
        };
        if !checkpoints.due(steps) {
            self.checkpoints = Some(checkpoints);
            return Ok(());
        }
        // `model` holds what `evaluate` just pulled from the store.
        let model = self.model.clone();
        let (checkpoints, written) = tokio::task::spawn_blocking(move || {
            let written = checkpoints.write(&model, steps);
            (checkpoints, written)
        })
        .await
        .map_err(|e| TrainerError::Compute(format!("writing a checkpoint: {e}")))?;
        self.checkpoints = Some(checkpoints);
        let dir = written?;
        tracing::info!(steps, dir = %dir.display(), "checkpoint written");
        Ok(())
    }

    /// The auto-tuner's decision: remove a worker, and share the training data anew among the
    /// remaining ones (the removed worker's shard would no longer be trained on).
    async fn scale_in(&mut self) -> Result<(), TrainerError> {
        let workers = self.job.workers.count;
        let Some(t) = self.tuner.as_mut() else {
            return Ok(());
        };
        let Decision::RemoveWorker {
            predicted_now,
            predicted_fewer,
        } = t.decide()
        else {
            return Ok(());
        };
        let Some(k) = (0..workers)
            .rev()
            .find(|&k| !self.shared.removed[k as usize].load(Ordering::SeqCst))
        else {
            return Ok(());
        };
        tracing::info!(
            worker = k,
            predicted_now,
            predicted_fewer,
            "auto-tuner removes a worker"
        );
        self.shared.removed[k as usize].store(true, Ordering::SeqCst);
        self.st.workers -= 1;
        self.scale_ins += 1;
        let active: Vec<u32> = (0..workers)
            .filter(|&k| !self.shared.removed[k as usize].load(Ordering::SeqCst))
            .collect();
        let prefix = format!("part-g{}", self.scale_ins);
        let seed = self.job.seed.wrapping_add(self.scale_ins);
        let urls = write_shards(
            &self.data,
            active.len() as u32,
            seed,
            &self.shard_dir,
            &prefix,
        )
        .await?;
        let mut assigned = self
            .shared
            .shards
            .lock()
            .expect("never held across a panic");
        for (&k, url) in active.iter().zip(urls) {
            assigned[k as usize] = url;
        }
        Ok(())
    }

    /// Stops the job: no driver invokes its worker again, invocations waiting for an instance
    /// are abandoned, and the running ones learn it from the store (every wait at a barrier
    /// ends) and return after the step they are in.
    async fn stop(&mut self, reason: String) {
        if self.stopping.is_some() {
            return;
        }
        let begun = self.shared.halt();
        if let Err(e) = self.client.stop(&self.options.job_id).await {
            tracing::warn!(error = %e, "could not ask the running workers to stop");
        }
        tracing::info!(%reason, invocations_begun = begun, "job stopping");
        self.st.stop_reason = Some(reason.clone());
        self.stopping = Some(reason);
        self.refresh_phase().await;
    }

    async fn fail(&mut self, e: TrainerError) {
        tracing::warn!(error = %e, "job failing");
        if self.fatal.is_none() {
            self.fatal = Some(e);
        }
        self.stop("failed".to_string()).await;
    }

    /// Says in the status what the job is doing or waiting for right now.
    async fn refresh_phase(&mut self) {
        self.st.elapsed_secs = self.started.elapsed().as_secs_f64();
        let workers = self.st.workers;
        let instances = self.invoker.as_ref().and_then(|i| i.instances());
        let clocks = match self.stopping {
            None => self.clock_range().await,
            Some(_) => None,
        };
        let phase = if let Some(reason) = &self.stopping {
            let up = instances.map_or(String::new(), |i| format!(" ({} still running)", i.alive));
            format!("stopping ({reason}): waiting for the workers to push what they hold{up}")
        } else if self.st.invocations == 0 && clocks.is_none_or(|(_, hi)| hi == 0) {
            match instances {
                Some(i) => format!(
                    "starting workers: {} of {workers} instances up, {} starting, {} waiting for one",
                    i.alive, i.starting, i.queued
                ),
                None => format!("starting {workers} workers"),
            }
        } else {
            let barrier = match clocks {
                Some((lo, hi)) if self.job.workers.sync != SyncMode::Asp && lo < hi => format!(
                    "; clocks {lo}..{hi}: workers ahead wait at the barrier for the slowest"
                ),
                Some((lo, hi)) => format!("; clocks {lo}..{hi}"),
                None => String::new(),
            };
            format!(
                "round {}: {} of {workers} workers reported{barrier}",
                self.round.number + 1,
                self.round.reports.min(workers)
            )
        };
        self.st.phase = phase;
        self.publish();
    }

    /// The slowest and fastest worker clocks of this job, from the store.
    async fn clock_range(&self) -> Option<(u64, u64)> {
        let stats = self.client.stats().await.ok()?;
        let mut range: Option<(u64, u64)> = None;
        for job in stats.iter().flat_map(|s| &s.jobs) {
            if job.job_id == self.options.job_id {
                let (lo, hi) = range.unwrap_or((u64::MAX, 0));
                range = Some((lo.min(job.min_clock), hi.max(job.max_clock)));
            }
        }
        range
    }

    fn publish(&mut self) {
        self.st.invocations_started = self.shared.invocations_started();
        self.status.send_replace(self.st.clone());
    }

    /// Pulls the current model into `model` and measures it on the test split (BatchNorm
    /// statistics re-estimated for these weights first: the store holds parameters only).
    async fn evaluate(&self) -> Result<f64, TrainerError> {
        let started = Instant::now();
        let values = self.client.pull_all(&self.options.job_id, None).await?;
        let (model, data, metric) = (self.model.clone(), self.data.clone(), self.metric);
        let value = blocking::run("evaluating the model", move || {
            for (name, values) in values {
                let var = model
                    .var(&name)
                    .ok_or_else(|| TrainerError::UnknownTensor(name.clone()))?;
                let shape = var.as_tensor().shape().clone();
                model.set_param(&name, &Tensor::from_vec(values, shape, &Device::Cpu)?)?;
            }
            recalibrate_batch_norm(&model, &data.train_x)?;
            measure(&model, &data.test_x, &data.test_y, metric)
        })
        .await?;
        m::evaluation(started.elapsed());
        Ok(value)
    }

    async fn save_model(&self) -> Result<(), TrainerError> {
        let (model, dir) = (self.model.clone(), self.output_dir.clone());
        blocking::run("saving the model", move || Ok(model.save(&dir)?)).await
    }

    /// Phase 4: every driver has stopped and pushed what it held, so the store has the final
    /// model: evaluate it (unless the one that met the target was kept) and write it all.
    async fn finish(mut self) -> Result<JobOutcome, TrainerError> {
        if let Some(e) = self.fatal.take() {
            self.st.state = JobState::Failed;
            self.st.phase = "failed".to_string();
            self.publish();
            return Err(e);
        }
        let st = &mut self.st;
        st.elapsed_secs = self.started.elapsed().as_secs_f64();
        st.epoch = st.examples as f64 / self.data.train_len().max(1) as f64;
        if st.state == JobState::Running {
            st.state = JobState::Succeeded;
        }
        match self.kept {
            Some(value) => self.st.metric_value = Some(value),
            None => {
                self.st.phase = "evaluating the final model".to_string();
                self.publish();
                let value = self.evaluate().await?;
                self.st.metric_value = Some(value);
                self.history.push(HistoryPoint::of(&self.st));
                self.st.phase = format!("writing the model to {}", self.output_dir.display());
                self.publish();
                self.save_model().await?;
            }
        }
        let summary = JobSummary::new(
            self.job,
            &self.st,
            &self.data,
            std::mem::take(&mut self.history),
        );
        let (written, dir) = (summary.clone(), self.output_dir.clone());
        blocking::run("writing metrics.json and the plots", move || {
            written.write(&dir)?;
            crate::plot::write_plots(&written, &dir)?;
            Ok(())
        })
        .await?;
        self.st.phase = match self.st.state {
            JobState::Cancelled => "cancelled".to_string(),
            _ => "done".to_string(),
        };
        self.publish();
        Ok(JobOutcome {
            summary,
            output_dir: self.output_dir,
        })
    }
}

/// The local steps `stop.max_epochs` allows in all (`None` without an epoch limit).
fn step_budget(job: &JobSpec, data: &Prepared) -> Option<u64> {
    let epochs = u64::from(job.stop.max_epochs?);
    let batch = job.training.batch_size.max(1) as u64;
    Some((epochs * data.train_len() as u64).div_ceil(batch).max(1))
}

/// Splits the training data into `workers` shards (seeded) and writes each under `dir` as
/// `<prefix>-<k>.safetensors`; returns their URLs in worker order.
async fn write_shards(
    data: &Arc<Prepared>,
    workers: u32,
    seed: u64,
    dir: &std::path::Path,
    prefix: &str,
) -> Result<Vec<String>, TrainerError> {
    let d = data.clone();
    let parts = blocking::run("splitting the data", move || d.partitions(workers, seed)).await?;
    let mut urls = Vec::with_capacity(parts.len());
    for (k, (x, y)) in parts.iter().enumerate() {
        let url = data_shards::file_url(&dir.join(format!("{prefix}-{k}.safetensors")))?;
        data_shards::write(&url, x, y).await?;
        urls.push(url);
    }
    Ok(urls)
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
