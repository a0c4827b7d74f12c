//! One driver per worker: keeps its `train-worker` function invoked until the job stops or the
//! auto-tuner removes the worker, and turns each invocation's outcome into an event for the
//! coordinator.
//!
//! A driver owns its worker's data cursor, clock and push sequence numbers, so a worker function
//! stays stateless: a failed invocation (crash, deadline) is simply invoked again, with a fresh
//! range of sequence numbers so none of its pushes can be mistaken for a retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cumulus_param_store::ParamStoreClient;
use cumulus_runtime::CancellationToken;
use tokio::sync::mpsc;

use crate::invoker::{InvokeError, Invoked, Invoker};
use crate::job::LrSchedule;
use crate::worker::WorkerTask;

/// A worker whose invocations fail this many times in a row fails the job.
pub(super) const MAX_CONSECUTIVE_FAILURES: u32 = 5;
/// A worker that finds no instance for this many tries in a row fails the job.
const MAX_BUSY_RETRIES: u32 = 120;
/// The top bit of [`Shared::started`]: set once the job stops; no invocation begins after it.
const STOPPED: u64 = 1 << 63;

/// What a driver tells the coordinator.
pub(super) enum Event {
    Report(u32, Box<Invoked>),
    Failure(u32, String),
    Fatal(u32, String),
}

/// What the coordinator and its drivers share.
pub(super) struct Shared {
    /// Cancelled when the job stops: no driver invokes again, invocations still waiting for an
    /// instance are abandoned, backoff sleeps end.
    pub stop: CancellationToken,
    /// Invocations begun, with [`STOPPED`] set once the job stops (one atomic word, so that
    /// "stopped" and "one more begins" can never interleave).
    started: AtomicU64,
    pub removed: Vec<AtomicBool>,
    pub examples: AtomicU64,
    /// Each worker's data shard URL; replaced when a scale-in re-splits the training data.
    pub shards: std::sync::Mutex<Vec<String>>,
    /// Local steps the job may still run (`stop.max_epochs`), handed out to invocations as
    /// they start and the unused part given back when they return: the epoch limit holds
    /// within a step even while every worker is in the middle of an invocation.
    steps_left: Option<AtomicU64>,
    /// When each worker's current invocation began (for the cost of running invocations).
    pub running: std::sync::Mutex<Vec<Option<std::time::Instant>>>,
}

impl Shared {
    /// `step_budget`: local steps the job may run in all, when it has an epoch limit.
    pub fn new(workers: u32, shards: Vec<String>, step_budget: Option<u64>) -> Self {
        Self {
            stop: CancellationToken::new(),
            started: AtomicU64::new(0),
            removed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            examples: AtomicU64::new(0),
            shards: std::sync::Mutex::new(shards),
            steps_left: step_budget.map(AtomicU64::new),
            running: std::sync::Mutex::new(vec![None; workers as usize]),
        }
    }

    fn active_workers(&self) -> u64 {
        self.removed
            .iter()
            .filter(|r| !r.load(Ordering::SeqCst))
            .count()
            .max(1) as u64
    }

    /// Takes this invocation's steps out of the budget: at most `want`, at most its share of
    /// what is left. `Some(0)`: the budget is spent.
    fn grant(&self, want: u32) -> u32 {
        let Some(left) = &self.steps_left else {
            return want;
        };
        let share_of = |l: u64| l.div_ceil(self.active_workers()).min(u64::from(want));
        let mut granted = 0;
        let _ = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
            granted = share_of(l);
            Some(l - granted)
        });
        granted as u32
    }

    /// Gives back the steps of a grant that were not run.
    fn give_back(&self, unused: u32) {
        if let Some(left) = &self.steps_left {
            left.fetch_add(u64::from(unused), Ordering::SeqCst);
        }
    }

    fn set_running(&self, k: u32, since: Option<std::time::Instant>) {
        if let Some(slot) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(k as usize)
        {
            *slot = since;
        }
    }

    /// Counts one more invocation, unless the job has stopped.
    fn begin_invocation(&self) -> bool {
        self.started
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                (v & STOPPED == 0).then_some(v + 1)
            })
            .is_ok()
    }

    /// Stops the job for every driver; returns the invocations begun until then.
    pub fn halt(&self) -> u64 {
        let before = self.started.fetch_or(STOPPED, Ordering::SeqCst);
        self.stop.cancel();
        before & !STOPPED
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Invocations begun so far.
    pub fn invocations_started(&self) -> u64 {
        self.started.load(Ordering::SeqCst) & !STOPPED
    }

    fn removed(&self, k: u32) -> bool {
        self.removed[k as usize].load(Ordering::SeqCst)
    }
}

/// Keeps one worker invoked until the job stops or the worker is removed.
pub(super) struct Driver {
    pub template: WorkerTask,
    pub invoker: Arc<dyn Invoker>,
    pub shared: Arc<Shared>,
    pub client: ParamStoreClient,
    pub tx: mpsc::Sender<Event>,
    pub train_len: u64,
    pub schedule: LrSchedule,
    pub max_epochs: u32,
}

impl Driver {
    pub async fn run(self) {
        let k = self.template.worker;
        let base_lr = self.template.lr;
        let mut task = self.template.clone();
        let mut invocation = 0u64;
        let mut failures = 0u32;
        let mut busy = 0u32;
        let steps_per_invocation = self.template.steps;
        while !self.shared.removed(k) {
            let granted = self.shared.grant(steps_per_invocation);
            if granted == 0 {
                // The epoch limit's steps are spent (by this worker's share or others').
                break;
            }
            if !self.shared.begin_invocation() {
                self.shared.give_back(granted);
                break;
            }
            task.steps = granted;
            invocation += 1;
            // A fresh range of sequence numbers per invocation: a push of a failed invocation
            // can never shadow one of the next.
            task.seq = invocation << 32;
            let shard = self
                .shared
                .shards
                .lock()
                .expect("never held across a panic")[k as usize]
                .clone();
            if shard != task.partition {
                // A new share of the data after a scale-in: start at its beginning.
                task.partition = shard;
                task.cursor = 0;
            }
            let epoch = self.shared.examples.load(Ordering::Relaxed) / self.train_len.max(1);
            task.lr = base_lr * self.schedule.factor(epoch as u32, self.max_epochs);
            self.shared.set_running(k, Some(std::time::Instant::now()));
            let outcome = self
                .invoker
                .invoke(task.clone(), self.shared.stop.clone())
                .await;
            self.shared.set_running(k, None);
            let ran = outcome
                .as_ref()
                .map_or(0, |done| done.report.steps.len() as u32);
            self.shared.give_back(granted.saturating_sub(ran));
            let event = match outcome {
                Ok(done) if done.report.steps.is_empty() && !self.shared.is_stopped() => {
                    // Nothing was trained: the time limit is shorter than one step and its drain.
                    Err(InvokeError::Failed(
                        "the invocation's time limit left no time for a single step \
                         (raise [workers] timeout_secs)"
                            .to_string(),
                    ))
                }
                other => other,
            };
            let retry_after = match event {
                Ok(done) => {
                    (failures, busy) = (0, 0);
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
                    continue;
                }
                Err(InvokeError::Cancelled | InvokeError::ShuttingDown) => break,
                Err(e @ (InvokeError::BadTask(_) | InvokeError::OutOfMemory { .. })) => {
                    // The same task fails the same way again.
                    let _ = self.tx.send(Event::Fatal(k, e.to_string())).await;
                    break;
                }
                Err(InvokeError::Busy(reason)) => {
                    busy += 1;
                    if busy >= MAX_BUSY_RETRIES {
                        let reason = format!("no instance free after {busy} tries: {reason}");
                        let _ = self.tx.send(Event::Fatal(k, reason)).await;
                        break;
                    }
                    Duration::from_millis(500)
                }
                Err(InvokeError::Failed(reason)) => {
                    failures += 1;
                    let event = if failures >= MAX_CONSECUTIVE_FAILURES {
                        Event::Fatal(
                            k,
                            format!("{failures} invocations failed in a row, last: {reason}"),
                        )
                    } else {
                        Event::Failure(k, reason)
                    };
                    let fatal = matches!(event, Event::Fatal(..));
                    if self.tx.send(event).await.is_err() || fatal {
                        break;
                    }
                    Duration::from_millis(100 * u64::from(failures))
                }
            };
            tokio::select! {
                () = tokio::time::sleep(retry_after) => {}
                () = self.shared.stop.cancelled() => break,
            }
        }
        // Stop holding the others back; what this worker held was pushed when it returned.
        if let Err(e) = self.client.leave(&task.job_id, k).await {
            tracing::warn!(worker = k, error = %e, "could not leave the job's clock");
        }
    }
}
