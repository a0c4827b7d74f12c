//! The job manager: the transport-agnostic core of the job API (DESIGN.md §5), used by
//! `cumulus up` and `cumulus train` alike. It accepts validated [`JobSpec`]s, runs each with
//! [`run_job`] in its own task, and answers list, get, subscribe and cancel. [`http`] only
//! translates these calls to REST and server-sent events.
//!
//! A job goes through `queued` (waiting for a running slot, then for room for its workers on
//! the [`WorkerFleet`]), `running`, and one of `succeeded`, `failed`, `cancelled`; its status's
//! `phase` says what it waits for. A job the fleet could never run (a tier the platform does not
//! offer, more workers than its capacity) is refused at submission with the limit named.
//!
//! Everything is bounded: at most `max_active` jobs are running or queued (more are refused with
//! [`JobsError::TooManyJobs`]), at most `max_running` run at once, and at most `max_finished`
//! finished jobs are remembered (the oldest is forgotten first).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use cumulus_trainer::fleet::InProcessFleet;
//! # use cumulus_trainer::jobs::{JobManager, ManagerConfig};
//! # async fn demo(job: cumulus_trainer::job::JobSpec) -> Result<(), cumulus_trainer::jobs::JobsError> {
//! let config = ManagerConfig::new("/tmp/cumulus-jobs", vec!["127.0.0.1:7000".into()]);
//! let fleet = Arc::new(InProcessFleet { time_limit: Duration::from_secs(60) });
//! let manager = JobManager::new(config, fleet);
//! let id = manager.submit(job)?;
//! let ended = manager.wait(&id).await?;
//! println!("{:?}", ended.state);
//! # Ok(()) }
//! ```

pub mod confine;
pub mod http;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cumulus_runtime::CancellationToken;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};

use crate::coordinator::{RunOptions, run_job};
use crate::evaluate::JobMetric;
use crate::fleet::{ReserveError, WorkerFleet};
use crate::job::{JobError, JobSpec};
use crate::metrics as m;
use crate::report::{JobState, JobStatus, JobSummary};

/// How often a job waiting for room for its workers tries again without being told.
const CAPACITY_RETRY: Duration = Duration::from_secs(2);

/// What the job API can refuse; each variant maps to one HTTP status in [`http`].
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    BadJob(#[from] JobError),
    /// A valid job this control plane cannot run as written; the message names the limit.
    #[error("the job cannot run here: {0}")]
    Unrunnable(String),
    /// The job would read or write outside the folders this control plane allows.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The job's output folder cannot be written.
    #[error("{0}")]
    BadOutput(String),
    #[error("no job {0:?}")]
    UnknownJob(String),
    #[error("too many jobs: {active} are running or queued, the limit is {limit}")]
    TooManyJobs { active: usize, limit: usize },
    #[error("the job manager is shutting down")]
    ShuttingDown,
}

/// Limits and shared resources of a [`JobManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Each job works under `work_dir/<id>`; its model goes to `work_dir/<id>/model` unless the
    /// job file names an `output`.
    pub work_dir: PathBuf,
    /// Parameter-store shard addresses, in shard order, shared by every job.
    pub store: Vec<String>,
    /// Jobs running at once; more wait in the queue.
    pub max_running: usize,
    /// Jobs running or queued; more are refused.
    pub max_active: usize,
    /// Finished jobs remembered for list and get.
    pub max_finished: usize,
    /// Where jobs without an `output` write their model folder: `<models>/<id>` (the model
    /// repository of the gateway under `cumulus up`, so a trained model can be loaded and
    /// served at once); `<work_dir>/<id>/model` when absent.
    pub models: Option<PathBuf>,
    /// Confine jobs to these folders (jobs that come over the network); `None` trusts them.
    pub confinement: Option<confine::Confinement>,
    /// The node's GPU executor (its socket): workers run their training steps there.
    pub gpu: Option<PathBuf>,
}

impl ManagerConfig {
    pub fn new(work_dir: impl Into<PathBuf>, store: Vec<String>) -> Self {
        Self {
            work_dir: work_dir.into(),
            store,
            max_running: 2,
            max_active: 16,
            max_finished: 1000,
            models: None,
            confinement: None,
            gpu: None,
        }
    }
}

/// One job as list and get show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub state: JobState,
    /// False while it waits for a running slot or for room for its workers.
    pub started: bool,
    pub status: JobStatus,
    /// Where its model folder, metrics.json and plots are written.
    pub output: PathBuf,
    /// The final summary (`metrics.json`) of a job that ended with a model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JobSummary>,
    /// Why a failed job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    name: String,
    seq: u64,
    started: bool,
    finished: bool,
    output: PathBuf,
    status: watch::Receiver<JobStatus>,
    cancel: CancellationToken,
    metrics: Option<JobSummary>,
    error: Option<String>,
}

struct Inner {
    config: ManagerConfig,
    fleet: Arc<dyn WorkerFleet>,
    running: Arc<Semaphore>,
    jobs: Mutex<BTreeMap<String, Entry>>,
    counter: AtomicU64,
    /// Told whenever a job gives its workers back.
    capacity_freed: Notify,
}

/// Submits, runs, lists and cancels training jobs. Cheap to clone; clones share the jobs.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

/// Checks before anything runs that the job's output folder can be created and written, so a
/// job never trains to the end and then loses its model.
fn check_writable(dir: &std::path::Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("output {}: cannot write there: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".cumulus-write-check");
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The file under the work folder that keeps the last job number across restarts.
const COUNTER_FILE: &str = "job-counter";

/// The highest job number used in `work_dir` so far: the counter file's, or the highest
/// `<name>-<N>` folder a job left there, whichever is higher.
fn last_job_number(work_dir: &std::path::Path) -> u64 {
    let from_file = std::fs::read_to_string(work_dir.join(COUNTER_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let from_dirs = std::fs::read_dir(work_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            name.rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0);
    from_file.max(from_dirs)
}

/// Records `n` as the last job number (through a temporary file and a rename).
fn save_job_number(work_dir: &std::path::Path, n: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(work_dir)?;
    let tmp = work_dir.join(format!(".{COUNTER_FILE}.tmp"));
    std::fs::write(&tmp, n.to_string())?;
    std::fs::rename(&tmp, work_dir.join(COUNTER_FILE))
}

impl JobManager {
    /// A manager whose job numbers continue after those already used in its work folder, so
    /// a restarted control plane never gives a new job the id of an old one.
    pub fn new(config: ManagerConfig, fleet: Arc<dyn WorkerFleet>) -> Self {
        let running = Arc::new(Semaphore::new(config.max_running.max(1)));
        let last = last_job_number(&config.work_dir);
        Self {
            inner: Arc::new(Inner {
                config,
                fleet,
                running,
                jobs: Mutex::new(BTreeMap::new()),
                counter: AtomicU64::new(last),
                capacity_freed: Notify::new(),
            }),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned")
    }

    /// Parses and validates a job file body (`json` picks JSON over TOML), then submits it.
    pub fn submit_text(&self, text: &str, json: bool) -> Result<String, JobsError> {
        let job = if json {
            JobSpec::from_json_str("request body", text)?
        } else {
            JobSpec::from_toml_str("request body", text)?
        };
        self.submit(job)
    }

    /// Queues a validated job and returns its id; it starts when a running slot is free and its
    /// workers fit. Refused at once when its workers could never run here.
    pub fn submit(&self, mut job: JobSpec) -> Result<String, JobsError> {
        let inner = &self.inner;
        if inner.running.is_closed() {
            return Err(JobsError::ShuttingDown);
        }
        inner
            .fleet
            .check(&job)
            .map_err(|e| JobsError::Unrunnable(e.to_string()))?;
        let seq = inner.counter.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = save_job_number(&inner.config.work_dir, seq) {
            // The store refuses a job id it already holds, so a reuse after a restart would
            // fail loudly; still, say now that ids may not survive one.
            tracing::error!(error = %e, "cannot record the job counter; ids may repeat after a restart");
        }
        let id = format!("{}-{seq}", job.name);
        if job.output.is_none() {
            job.output = Some(match &inner.config.models {
                Some(models) => models.join(&id),
                None => inner.config.work_dir.join(&id).join("model"),
            });
        }
        if let Some(c) = &inner.config.confinement {
            c.check_job(&job).map_err(JobsError::Forbidden)?;
        }
        check_writable(&job.output_dir()).map_err(JobsError::BadOutput)?;
        let mut initial = JobStatus::new(
            &id,
            JobMetric::for_loss(job.training.loss),
            job.workers.count,
        );
        initial.phase = "queued: waiting for a running slot".to_string();
        let (status_tx, status_rx) = watch::channel(initial);
        let cancel = CancellationToken::new();
        {
            let mut jobs = self.jobs();
            let active = jobs.values().filter(|e| !e.finished).count();
            if active >= inner.config.max_active {
                return Err(JobsError::TooManyJobs {
                    active,
                    limit: inner.config.max_active,
                });
            }
            jobs.insert(
                id.clone(),
                Entry {
                    name: job.name.clone(),
                    seq,
                    started: false,
                    finished: false,
                    output: job.output_dir(),
                    status: status_rx,
                    cancel: cancel.clone(),
                    metrics: None,
                    error: None,
                },
            );
            report_counts(&jobs);
        }
        tracing::info!(job = %id, "job submitted");
        tokio::spawn(self.clone().drive(id.clone(), job, status_tx, cancel));
        Ok(id)
    }

    /// Waits for a slot and for room for the workers, runs the job, gives the workers back,
    /// records how it ended and closes its progress channel.
    async fn drive(
        self,
        id: String,
        job: JobSpec,
        status: watch::Sender<JobStatus>,
        cancel: CancellationToken,
    ) {
        let inner = &self.inner;
        let queued = |phase: String| {
            status.send_modify(|st| {
                st.state = JobState::Queued;
                st.phase = phase;
            });
        };
        let limit = inner.config.max_running;
        queued(format!(
            "queued: waiting for a running slot ({limit} job(s) run at once)"
        ));
        // A cancel that has already arrived wins over a slot that is free at the same time.
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            permit = inner.running.clone().acquire_owned() => permit.ok(),
        };
        let invoker = match permit {
            Some(_) => self.reserve(&id, &job, &cancel, &queued).await,
            None => Err(None),
        };
        let invoker = match invoker {
            Ok(invoker) => invoker,
            Err(None) => {
                // Cancelled (or shut down) before it started: nothing ran, nothing to write.
                status.send_modify(|st| {
                    st.state = JobState::Cancelled;
                    st.phase = "cancelled before it started".to_string();
                    st.stop_reason = Some("cancelled before it started".to_string());
                });
                self.finish(&id, JobState::Cancelled, None, None);
                return;
            }
            Err(Some(reason)) => {
                tracing::warn!(job = %id, %reason, "job cannot start");
                status.send_modify(|st| {
                    st.state = JobState::Failed;
                    st.phase = "failed".to_string();
                    st.stop_reason = Some(reason.clone());
                });
                self.finish(&id, JobState::Failed, None, Some(reason));
                return;
            }
        };
        // Keep the slot until the job has ended.
        let _permit = permit;
        self.update(&id, |e| e.started = true);
        let options = RunOptions {
            job_id: id.clone(),
            work_dir: inner.config.work_dir.join(&id),
            store: inner.config.store.clone(),
            cancel,
            gpu: inner.config.gpu.clone(),
        };
        tracing::info!(job = %id, "job started");
        let result = run_job(&job, &options, invoker, status.clone()).await;
        inner.fleet.release(&id).await;
        inner.capacity_freed.notify_waiters();
        match result {
            Ok(outcome) => {
                let state = status.borrow().state;
                tracing::info!(job = %id, ?state, "job ended");
                self.finish(&id, state, Some(outcome.summary), None);
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "job failed");
                status.send_modify(|st| {
                    st.state = JobState::Failed;
                    st.phase = "failed".to_string();
                    st.stop_reason = Some(e.to_string());
                });
                self.finish(&id, JobState::Failed, None, Some(e.to_string()));
            }
        }
        // Dropping `status` here closes every subscriber's channel: the job has ended.
    }

    /// Reserves the job's workers, waiting while they do not fit beside the running jobs.
    /// `Err(None)`: cancelled or shut down; `Err(Some(why))`: they can never run.
    async fn reserve(
        &self,
        id: &str,
        job: &JobSpec,
        cancel: &CancellationToken,
        queued: &impl Fn(String),
    ) -> Result<Arc<dyn crate::invoker::Invoker>, Option<String>> {
        let inner = &self.inner;
        loop {
            let freed = inner.capacity_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match inner.fleet.reserve(id, job) {
                Ok(invoker) => return Ok(invoker),
                Err(ReserveError::NotNow(why)) => {
                    queued(format!("queued: waiting for room for its workers: {why}"));
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Err(None),
                        () = &mut freed => {}
                        () = tokio::time::sleep(CAPACITY_RETRY) => {}
                    }
                }
                Err(ReserveError::Never(e)) => return Err(Some(e.to_string())),
                Err(ReserveError::ShuttingDown) => return Err(None),
            }
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        let mut jobs = self.jobs();
        if let Some(entry) = jobs.get_mut(id) {
            f(entry);
        }
        report_counts(&jobs);
    }

    fn finish(
        &self,
        id: &str,
        state: JobState,
        metrics: Option<JobSummary>,
        error: Option<String>,
    ) {
        m::job_ended(match state {
            JobState::Succeeded => "succeeded",
            JobState::Cancelled => "cancelled",
            JobState::Queued | JobState::Running | JobState::Failed => "failed",
        });
        let mut jobs = self.jobs();
        if let Some(entry) = jobs.get_mut(id) {
            entry.finished = true;
            entry.metrics = metrics;
            entry.error = error;
        }
        // Forget the oldest finished jobs beyond the limit.
        let mut finished: Vec<(u64, String)> = jobs
            .iter()
            .filter(|(_, e)| e.finished)
            .map(|(k, e)| (e.seq, k.clone()))
            .collect();
        if finished.len() > self.inner.config.max_finished {
            finished.sort();
            let excess = finished.len() - self.inner.config.max_finished;
            for (_, key) in finished.into_iter().take(excess) {
                jobs.remove(&key);
            }
        }
        report_counts(&jobs);
    }

    /// Every remembered job, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        let jobs = self.jobs();
        let mut views: Vec<(u64, JobView)> = jobs
            .iter()
            .map(|(id, e)| (e.seq, view(id, e, false)))
            .collect();
        views.sort_by_key(|(seq, _)| *seq);
        views.into_iter().map(|(_, v)| v).collect()
    }

    /// One job with its latest status, and its metrics or error once it has ended.
    pub fn get(&self, id: &str) -> Result<JobView, JobsError> {
        self.jobs()
            .get(id)
            .map(|e| view(id, e, true))
            .ok_or_else(|| JobsError::UnknownJob(id.to_string()))
    }

    /// The job's progress: the receiver sees every new status and reports the channel closed
    /// once the job has ended and its final status is in.
    pub fn subscribe(&self, id: &str) -> Result<watch::Receiver<JobStatus>, JobsError> {
        self.jobs()
            .get(id)
            .map(|e| e.status.clone())
            .ok_or_else(|| JobsError::UnknownJob(id.to_string()))
    }

    /// Waits until the job has ended; then the job as get shows it.
    pub async fn wait(&self, id: &str) -> Result<JobView, JobsError> {
        let mut rx = self.subscribe(id)?;
        while rx.changed().await.is_ok() {}
        self.get(id)
    }

    /// Asks the job to stop: its workers finish the step they are in and push what they hold,
    /// and the model so far is written. A finished job is left as it is. Returns the job as it
    /// stands.
    pub fn cancel(&self, id: &str) -> Result<JobView, JobsError> {
        let jobs = self.jobs();
        let entry = jobs
            .get(id)
            .ok_or_else(|| JobsError::UnknownJob(id.to_string()))?;
        if !entry.finished {
            tracing::info!(job = %id, "job cancel requested");
            entry.cancel.cancel();
        }
        Ok(view(id, entry, false))
    }

    /// Refuses new jobs, cancels every unfinished one and waits until all have ended.
    pub async fn shutdown(&self) {
        self.inner.running.close();
        let receivers: Vec<watch::Receiver<JobStatus>> = {
            let jobs = self.jobs();
            jobs.values()
                .filter(|e| !e.finished)
                .map(|e| {
                    e.cancel.cancel();
                    e.status.clone()
                })
                .collect()
        };
        for mut rx in receivers {
            while rx.changed().await.is_ok() {}
        }
    }
}

/// Sets the jobs gauge from the remembered jobs.
fn report_counts(jobs: &BTreeMap<String, Entry>) {
    let queued = jobs.values().filter(|e| !e.finished && !e.started).count();
    let running = jobs.values().filter(|e| !e.finished && e.started).count();
    m::jobs(queued, running);
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn view(id: &str, e: &Entry, with_metrics: bool) -> JobView {
    let status = e.status.borrow().clone();
    JobView {
        id: id.to_string(),
        name: e.name.clone(),
        // Until the manager has recorded the end, a started job is running whatever the
        // coordinator has already announced (it announces success before it writes the model).
        state: match (e.finished, e.started, status.state) {
            (true, _, state) | (false, _, state @ (JobState::Cancelled | JobState::Queued)) => {
                state
            }
            (false, true, _) => JobState::Running,
            (false, false, _) => JobState::Queued,
        },
        started: e.started,
        status,
        output: e.output.clone(),
        metrics: if with_metrics {
            e.metrics.clone()
        } else {
            None
        },
        error: e.error.clone(),
    }
}
