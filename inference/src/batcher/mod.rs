//! The per-model batcher: a bounded queue in front of the model's executor and one dispatcher
//! task that forms batches under the model's latency SLO ([`policy`]).
//!
//! Admission happens at once, under the queue's lock: a request that finds the queue full, or
//! whose estimated completion (the rows ahead of it, the batches in flight, the profiled
//! execution time) is past its deadline, is refused with a retry hint — never queued to miss
//! its SLO. (An idle model admits whatever the estimate says, so the estimate is always
//! measured again; batches that started an instance are left out of it.) The dispatcher waits for a free instance, then asks the policy whether to send what
//! is queued or wait for more; at dispatch, a request that can no longer make its deadline is
//! refused rather than run late. A batch concatenates whole requests in arrival order (rows of
//! one request never split, requests never mixed within a row) and its output is split back
//! the same way.
//!
//! [`Batcher::close`] stops admitting, runs everything already queued, and returns when the
//! last batch has answered: a draining shutdown.

pub mod policy;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cumulus_runtime::ModelServing;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::executor::{ExecError, Executor};
use crate::metrics as m;
use crate::stage::RawTensor;
use policy::{Decision, Policy, Profile};

/// A request's answer from its batch.
#[derive(Debug, Clone)]
pub struct Answer {
    pub output: RawTensor,
    /// Time in the queue, until its batch was sent.
    pub queued: Duration,
    /// Time its batch took to execute.
    pub executed: Duration,
    /// Rows of the batch it ran in.
    pub batch_rows: usize,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// Refused to protect the SLO: the queue is full or the deadline cannot be met.
    #[error("{reason}")]
    Overloaded {
        retry_after: Duration,
        reason: String,
    },
    /// The input does not fit the model.
    #[error("{0}")]
    BadInput(String),
    /// The model is being unloaded or the server is stopping.
    #[error("{0}")]
    Unavailable(String),
    /// The batch failed.
    #[error("{0}")]
    Failed(String),
}

struct Pending {
    input: RawTensor,
    rows: usize,
    arrived: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Answer, BatchError>>,
}

struct State {
    queue: VecDeque<Pending>,
    queued_rows: usize,
    policy: Policy,
    in_flight: usize,
    last_arrival: Option<Instant>,
    closed: bool,
}

struct Shared {
    model: String,
    state: Mutex<State>,
    wake: Notify,
    executor: Arc<dyn Executor>,
    slots: Arc<Semaphore>,
    max_queue: usize,
    max_batch: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One model's queue and dispatcher.
pub struct Batcher {
    shared: Arc<Shared>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.shared.model)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the dispatcher of `model` (metrics label) over `executor`, batching by `serving`
    /// from the measured `profile`.
    pub fn start(
        model: &str,
        serving: &ModelServing,
        executor: Arc<dyn Executor>,
        profile: Profile,
    ) -> Self {
        let shared = Arc::new(Shared {
            model: model.to_string(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_rows: 0,
                policy: Policy::new(serving, profile),
                in_flight: 0,
                last_arrival: None,
                closed: false,
            }),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(executor.parallelism().max(1))),
            executor,
            max_queue: serving.max_queue,
            max_batch: serving.max_batch_size,
        });
        let dispatcher = tokio::spawn(dispatch(shared.clone()));
        Self {
            shared,
            dispatcher: Mutex::new(Some(dispatcher)),
        }
    }

    /// The batch bound now (for metadata and tests).
    pub fn bound(&self) -> usize {
        self.shared.lock().policy.bound()
    }

    /// The current profile's estimate for a batch of `rows`, ms.
    pub fn exec_ms(&self, rows: usize) -> f64 {
        self.shared.lock().policy.exec_ms(rows)
    }

    /// Queues `input` (its first dimension is its rows) and waits for its answer.
    pub async fn submit(&self, input: RawTensor) -> Result<Answer, BatchError> {
        let s = &self.shared;
        let rows = input.rows();
        if rows == 0 {
            return Err(BatchError::BadInput("the input has no rows".into()));
        }
        if rows > s.max_batch {
            return Err(BatchError::BadInput(format!(
                "{rows} rows exceed the model's max_batch_size of {}",
                s.max_batch
            )));
        }
        let (reply, answer) = oneshot::channel();
        {
            let mut st = s.lock();
            if st.closed {
                return Err(BatchError::Unavailable(format!(
                    "model {} is being unloaded",
                    s.model
                )));
            }
            let slo = st.policy.slo();
            if let Some(refusal) = refusal(s, &st, rows) {
                return Err(refusal);
            }
            let now = Instant::now();
            if let Some(last) = st.last_arrival {
                st.policy.arrived(rows, now.saturating_duration_since(last));
            }
            st.last_arrival = Some(now);
            st.queued_rows += rows;
            st.queue.push_back(Pending {
                input,
                rows,
                arrived: now,
                deadline: now + slo,
                reply,
            });
        }
        s.wake.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(BatchError::Failed("the batcher stopped".into())))
    }

    /// Whether a request of `rows` rows would be admitted now (`Err`: the refusal it would get),
    /// without queueing anything: what a front end asks before it spends time decoding a body,
    /// so an overloaded model sheds load at the price of reading bytes, not parsing tensors.
    pub fn admits(&self, rows: usize) -> Result<(), BatchError> {
        let st = self.shared.lock();
        if st.closed {
            return Err(BatchError::Unavailable(format!(
                "model {} is being unloaded",
                self.shared.model
            )));
        }
        refusal(&self.shared, &st, rows.max(1)).map_or(Ok(()), Err)
    }

    /// Stops admitting, runs what is queued, waits for the last batch, then closes the
    /// executor.
    pub async fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let task = self
            .dispatcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // Every batch in flight holds a slot: once all are back, nothing is running.
        let n = self.shared.executor.parallelism().max(1) as u32;
        let _all = self.shared.slots.acquire_many(n).await;
        self.shared.executor.close().await;
    }
}

/// The share of the SLO a request's estimated completion may take at admission.
const ADMIT_HEADROOM: f64 = 0.8;

/// The refusal a request of `rows` rows gets now, if any: the queue is full, or its estimated
/// completion (the rows ahead of it, the batches in flight) is past its SLO. With nothing
/// queued or running the request goes at once whatever the estimate says, so a profile that
/// has drifted high is measured again instead of refusing every request for ever.
fn refusal(s: &Shared, st: &State, rows: usize) -> Option<BatchError> {
    let slo = st.policy.slo();
    let parallelism = s.executor.parallelism();
    if st.queue.len() >= s.max_queue {
        let wait = st
            .policy
            .eta_ms(st.queued_rows, 0, st.in_flight, parallelism);
        return Some(BatchError::Overloaded {
            retry_after: Duration::from_secs_f64(wait / 1e3),
            reason: format!(
                "model {}: the queue is full ({} requests)",
                s.model, s.max_queue
            ),
        });
    }
    let eta_ms = st
        .policy
        .eta_ms(st.queued_rows, rows, st.in_flight, parallelism);
    let eta = Duration::from_secs_f64(eta_ms / 1e3);
    let idle = st.queue.is_empty() && st.in_flight == 0;
    // The estimate is made of mean batch times: admitting up to the whole SLO would let the
    // slower batches carry the admitted tail past it.
    (eta > slo.mul_f64(ADMIT_HEADROOM) && !idle).then(|| BatchError::Overloaded {
        retry_after: eta.saturating_sub(slo),
        reason: format!(
            "model {}: a request now would finish in about {eta_ms:.1} ms, past its {} ms SLO",
            s.model,
            slo.as_millis()
        ),
    })
}

/// Forms batches until the batcher is closed and its queue is empty.
async fn dispatch(s: Arc<Shared>) {
    loop {
        let Ok(permit) = s.slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = next_batch(&s).await else {
            return;
        };
        tokio::spawn(run_batch(s.clone(), batch, permit));
    }
}

/// Waits until the policy sends a batch; `None` once closed and drained.
async fn next_batch(s: &Shared) -> Option<Vec<Pending>> {
    loop {
        let notified = s.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = {
            let mut st = s.lock();
            refuse_late(s, &mut st);
            match st.queue.front() {
                None if st.closed => return None,
                None => None,
                Some(head) => {
                    let decision = if st.closed {
                        Decision::Dispatch(st.policy.bound())
                    } else {
                        st.policy.decide(st.queued_rows, head.arrived.elapsed())
                    };
                    match decision {
                        Decision::Dispatch(bound) => return Some(take(&mut st, bound)),
                        Decision::Wait(d) => Some(d),
                    }
                }
            }
        };
        match wait {
            None => notified.await,
            Some(d) => {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// Refuses queued requests that can no longer finish within their deadline.
fn refuse_late(s: &Shared, st: &mut State) {
    let now = Instant::now();
    let mut kept = VecDeque::with_capacity(st.queue.len());
    while let Some(p) = st.queue.pop_front() {
        let exec = Duration::from_secs_f64(st.policy.exec_ms(p.rows) / 1e3);
        // An idle model runs its oldest request whatever the estimate: that measures it again.
        let probe = kept.is_empty() && st.in_flight == 0 && now < p.deadline;
        if now + exec > p.deadline && !st.closed && !probe {
            st.queued_rows -= p.rows;
            m::refused_late(&s.model);
            let _ = p.reply.send(Err(BatchError::Overloaded {
                retry_after: exec,
                reason: format!(
                    "model {}: the request waited {} ms and can no longer meet its SLO",
                    s.model,
                    now.saturating_duration_since(p.arrived).as_millis()
                ),
            }));
        } else {
            kept.push_back(p);
        }
    }
    st.queue = kept;
}

/// Takes whole requests from the front while they fit `bound` rows and the head's row shape.
fn take(st: &mut State, bound: usize) -> Vec<Pending> {
    let mut batch: Vec<Pending> = Vec::new();
    let mut rows = 0;
    while let Some(p) = st.queue.front() {
        let fits = batch.is_empty()
            || (rows + p.rows <= bound
                && p.input.dtype == batch[0].input.dtype
                && p.input.shape.get(1..) == batch[0].input.shape.get(1..));
        if !fits {
            break;
        }
        let p = st.queue.pop_front().expect("front was just seen");
        rows += p.rows;
        st.queued_rows -= p.rows;
        batch.push(p);
    }
    st.in_flight += 1;
    batch
}

async fn run_batch(s: Arc<Shared>, batch: Vec<Pending>, permit: OwnedSemaphorePermit) {
    let sent = Instant::now();
    let rows: Vec<usize> = batch.iter().map(|p| p.rows).collect();
    let total: usize = rows.iter().sum();
    let inputs: Vec<&RawTensor> = batch.iter().map(|p| &p.input).collect();
    let result = match RawTensor::concat(&inputs) {
        Ok(input) => s.executor.execute(input).await,
        Err(e) => Err(ExecError::Failed(e)),
    };
    m::batch(
        &s.model,
        total,
        result.as_ref().ok().map(|e| (e.took, e.compute, e.cold)),
    );
    match result.and_then(|done| {
        let parts = done.output.split(&rows).map_err(ExecError::Failed)?;
        Ok((done, parts))
    }) {
        Ok((done, parts)) => {
            // The state first, the answers after: a client that sends its next request the
            // moment it has this answer finds the model as this batch left it.
            {
                let mut st = s.lock();
                // A batch that started an instance (scale-out, or after scale to zero)
                // measured the start, not the batch: it would poison the profile, and with it
                // admission.
                if !done.cold {
                    st.policy.ran(total, done.took.as_secs_f64() * 1e3);
                }
                st.in_flight -= 1;
            }
            for (p, output) in batch.into_iter().zip(parts) {
                let _ = p.reply.send(Ok(Answer {
                    output,
                    queued: sent.saturating_duration_since(p.arrived),
                    executed: done.took,
                    batch_rows: total,
                }));
            }
        }
        Err(e) => {
            let error = match e {
                ExecError::BadInput(m) => BatchError::BadInput(m),
                ExecError::Busy(m) => BatchError::Overloaded {
                    retry_after: Duration::from_secs(1),
                    reason: m,
                },
                ExecError::ShuttingDown => BatchError::Unavailable("shutting down".into()),
                ExecError::Failed(m) => BatchError::Failed(m),
            };
            tracing::warn!(model = %s.model, rows = total, error = %error, "batch failed");
            s.lock().in_flight -= 1;
            for p in batch {
                let _ = p.reply.send(Err(error.clone()));
            }
        }
    }
    drop(permit);
    s.wake.notify_one();
}

/// Measures `t_exec(b)` for b = 1, 2, 4, … up to `max_batch` with batches of `row` (one row of
/// the model's input, zeros), after one warm-up batch that may start an instance.
pub async fn profile(
    executor: &dyn Executor,
    row: &RawTensor,
    max_batch: usize,
) -> Result<Profile, ExecError> {
    const REPEATS: usize = 5;
    // The first calls start an instance and load the model: not what a batch costs.
    for _ in 0..2 {
        executor.execute(row.clone()).await?;
    }
    let mut sizes = Vec::new();
    let mut b = 1;
    while b < max_batch {
        sizes.push(b);
        b *= 2;
    }
    sizes.push(max_batch);
    let mut points = Vec::with_capacity(sizes.len());
    for b in sizes {
        let parts = vec![row; b];
        let input = RawTensor::concat(&parts).map_err(ExecError::Failed)?;
        let mut times = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            times.push(executor.execute(input.clone()).await?.took.as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        points.push((b, times[REPEATS / 2]));
    }
    Profile::new(points).ok_or_else(|| ExecError::Failed("the profile measured nothing".into()))
}
