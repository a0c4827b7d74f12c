//! The job manager: the transport-agnostic core of the job API (DESIGN.md §5). It accepts
//! validated [`JobSpec`]s, runs each with [`run_job`] in its own task, and answers list, get,
//! subscribe and cancel. [`http`] only translates these calls to REST and server-sent events.
//!
//! Everything is bounded: at most `max_active` jobs are running or queued (more are refused with
//! [`JobsError::TooManyJobs`]), at most `max_running` run at once, and at most `max_finished`
//! finished jobs are remembered (the oldest is forgotten first).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use cumulus_trainer::invoker::{InProcessInvoker, Invoker};
//! # use cumulus_trainer::jobs::{JobManager, ManagerConfig};
//! # async fn demo(job: cumulus_trainer::job::JobSpec) -> Result<(), cumulus_trainer::jobs::JobsError> {
//! let config = ManagerConfig::new("/tmp/cumulus-jobs", vec!["127.0.0.1:7000".into()]);
//! let factory = Arc::new(|_id: &str| -> Arc<dyn Invoker> {
//!     Arc::new(InProcessInvoker { time_limit: Duration::from_secs(60) })
//! });
//! let manager = JobManager::new(config, factory);
//! let id = manager.submit(job)?;
//! let mut progress = manager.subscribe(&id)?;
//! while progress.changed().await.is_ok() {}
//! println!("{:?}", manager.get(&id)?.status.state);
//! # Ok(()) }
//! ```

pub mod http;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::coordinator::{RunOptions, run_job};
use crate::evaluate::JobMetric;
use crate::invoker::Invoker;
use crate::job::{JobError, JobSpec};
use crate::report::{JobState, JobStatus, Metrics};

/// Makes the invoker of one job, given its id.
pub type InvokerFactory = Arc<dyn Fn(&str) -> Arc<dyn Invoker> + Send + Sync>;

/// What the job API can refuse; each variant maps to one HTTP status in [`http`].
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    BadJob(#[from] JobError),
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
}

impl ManagerConfig {
    pub fn new(work_dir: impl Into<PathBuf>, store: Vec<String>) -> Self {
        Self {
            work_dir: work_dir.into(),
            store,
            max_running: 2,
            max_active: 16,
            max_finished: 1000,
        }
    }
}

/// One job as list and get show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub state: JobState,
    /// False while it waits for a free slot.
    pub started: bool,
    pub status: JobStatus,
    /// The final metrics of a job that ended with a model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Why a failed job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    name: String,
    seq: u64,
    started: bool,
    finished: bool,
    status: watch::Receiver<JobStatus>,
    cancel: watch::Sender<bool>,
    metrics: Option<Metrics>,
    error: Option<String>,
}

struct Inner {
    config: ManagerConfig,
    factory: InvokerFactory,
    running: Arc<Semaphore>,
    jobs: Mutex<BTreeMap<String, Entry>>,
    counter: AtomicU64,
}

/// Submits, runs, lists and cancels training jobs. Cheap to clone; clones share the jobs.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl JobManager {
    pub fn new(config: ManagerConfig, factory: InvokerFactory) -> Self {
        let running = Arc::new(Semaphore::new(config.max_running.max(1)));
        Self {
            inner: Arc::new(Inner {
                config,
                factory,
                running,
                jobs: Mutex::new(BTreeMap::new()),
                counter: AtomicU64::new(0),
            }),
        }
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

    /// Queues a validated job and returns its id; it starts when a running slot is free.
    pub fn submit(&self, job: JobSpec) -> Result<String, JobsError> {
        let inner = &self.inner;
        if inner.running.is_closed() {
            return Err(JobsError::ShuttingDown);
        }
        let seq = inner.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-{seq}", job.name);
        let (status_tx, status_rx) = watch::channel(JobStatus::new(
            &id,
            JobMetric::for_loss(job.training.loss),
            job.workers.count,
        ));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        {
            let mut jobs = inner.jobs.lock().expect("the jobs lock is never poisoned");
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
                    status: status_rx,
                    cancel: cancel_tx,
                    metrics: None,
                    error: None,
                },
            );
        }
        tracing::info!(job = %id, "job submitted");
        tokio::spawn(self.clone().drive(id.clone(), job, status_tx, cancel_rx));
        Ok(id)
    }

    /// Waits for a slot, runs the job, records how it ended and closes its progress channel.
    async fn drive(
        self,
        id: String,
        mut job: JobSpec,
        status: watch::Sender<JobStatus>,
        mut cancel: watch::Receiver<bool>,
    ) {
        let inner = &self.inner;
        // A cancel that has already arrived wins over a slot that is free at the same time.
        let permit = tokio::select! {
            biased;
            _ = cancel.wait_for(|&c| c) => None,
            permit = inner.running.clone().acquire_owned() => permit.ok(),
        };
        let Some(_permit) = permit else {
            // Cancelled (or shut down) before it started: nothing ran, nothing to write.
            status.send_modify(|st| {
                st.state = JobState::Cancelled;
                st.stop_reason = Some("cancelled before it started".to_string());
            });
            self.finish(&id, None, None);
            return;
        };
        self.update(&id, |e| e.started = true);
        let work_dir = inner.config.work_dir.join(&id);
        if job.output.is_none() {
            job.output = Some(work_dir.join("model"));
        }
        let options = RunOptions {
            job_id: id.clone(),
            work_dir,
            store: inner.config.store.clone(),
            cancel: Some(cancel),
        };
        let invoker = (inner.factory)(&id);
        tracing::info!(job = %id, "job started");
        match run_job(&job, &options, invoker, status.clone()).await {
            Ok(outcome) => {
                let state = status.borrow().state;
                tracing::info!(job = %id, ?state, "job ended");
                self.finish(&id, Some(outcome.metrics), None);
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "job failed");
                status.send_modify(|st| {
                    st.state = JobState::Failed;
                    st.stop_reason = Some(e.to_string());
                });
                self.finish(&id, None, Some(e.to_string()));
            }
        }
        // Dropping `status` here closes every subscriber's channel: the job has ended.
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        let mut jobs = self
            .inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned");
        if let Some(entry) = jobs.get_mut(id) {
            f(entry);
        }
    }

    fn finish(&self, id: &str, metrics: Option<Metrics>, error: Option<String>) {
        let mut jobs = self
            .inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned");
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
    }

    /// Every remembered job, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned");
        let mut views: Vec<(u64, JobView)> = jobs
            .iter()
            .map(|(id, e)| (e.seq, view(id, e, false)))
            .collect();
        views.sort_by_key(|(seq, _)| *seq);
        views.into_iter().map(|(_, v)| v).collect()
    }

    /// One job with its latest status, and its metrics or error once it has ended.
    pub fn get(&self, id: &str) -> Result<JobView, JobsError> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned");
        jobs.get(id)
            .map(|e| view(id, e, true))
            .ok_or_else(|| JobsError::UnknownJob(id.to_string()))
    }

    /// The job's progress: the receiver sees every new status and reports the channel closed
    /// once the job has ended and its final status is in.
    pub fn subscribe(&self, id: &str) -> Result<watch::Receiver<JobStatus>, JobsError> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned");
        jobs.get(id)
            .map(|e| e.status.clone())
            .ok_or_else(|| JobsError::UnknownJob(id.to_string()))
    }

    /// Asks the job to stop: its workers finish their invocation and the model so far is
    /// written. A finished job is left as it is. Returns the job as it stands.
    pub fn cancel(&self, id: &str) -> Result<JobView, JobsError> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .expect("the jobs lock is never poisoned");
        let entry = jobs
            .get(id)
            .ok_or_else(|| JobsError::UnknownJob(id.to_string()))?;
        if !entry.finished {
            tracing::info!(job = %id, "job cancel requested");
            entry.cancel.send_replace(true);
        }
        Ok(view(id, entry, false))
    }

    /// Refuses new jobs, cancels every unfinished one and waits until all have ended.
    pub async fn shutdown(&self) {
        self.inner.running.close();
        let receivers: Vec<watch::Receiver<JobStatus>> = {
            let jobs = self
                .inner
                .jobs
                .lock()
                .expect("the jobs lock is never poisoned");
            jobs.values()
                .filter(|e| !e.finished)
                .map(|e| {
                    e.cancel.send_replace(true);
                    e.status.clone()
                })
                .collect()
        };
        for mut rx in receivers {
            while rx.changed().await.is_ok() {}
        }
    }
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
        // Until the manager has recorded the end, the job is running whatever the coordinator
        // has already announced (it announces success before it writes the model).
        state: if e.finished || status.state == JobState::Cancelled {
            status.state
        } else {
            JobState::Running
        },
        started: e.started,
        status,
        metrics: if with_metrics {
            e.metrics.clone()
        } else {
            None
        },
        error: e.error.clone(),
    }
}
