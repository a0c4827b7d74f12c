//! How the coordinator runs a worker invocation: through the function platform (real processes,
//! billed, limited), or in this process (tests and debugging). Both speak [`WorkerTask`] and
//! [`WorkerReport`], so the coordinator cannot tell them apart.
//!
//! An invocation that did not produce a report fails with an [`InvokeError`] that says which
//! decision it calls for: wait and retry (`Busy`), give up on the job (`BadTask`,
//! `OutOfMemory`), invoke again (`Failed`), or stop (`Cancelled`, `ShuttingDown`).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cumulus_runtime::{
    CancellationToken, FunctionFailure, Invocation, InvokeRequest, Platform, PoolStats,
    RuntimeError, StartKind,
};

use crate::worker::{self, WorkerReport, WorkerTask};

/// A finished invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub report: WorkerReport,
    /// What the invocation was billed, USD.
    pub cost_usd: f64,
    pub cold_start: bool,
}

/// Why an invocation produced no report, by the decision it calls for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// No instance could take it now (queue full): not the worker's fault; wait and retry.
    #[error("no instance free: {0}")]
    Busy(String),
    /// The task was refused as malformed: invoking it again cannot help.
    #[error("the worker refused its task: {0}")]
    BadTask(String),
    /// The worker ran out of memory at its tier: the same tier fails again.
    #[error("out of memory at {limit_mb} MB (raise [workers] memory_mb)")]
    OutOfMemory { limit_mb: u32 },
    /// The worker failed (crash, deadline, transport, an error inside it): invoke it again.
    #[error("{0}")]
    Failed(String),
    /// Given up before it reached an instance, because the job is stopping.
    #[error("cancelled before it started")]
    Cancelled,
    /// The platform is shutting down.
    #[error("the function platform is shutting down")]
    ShuttingDown,
}

impl From<RuntimeError> for InvokeError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::QueueFull { .. } | RuntimeError::CapacityExceeded { .. } => {
                Self::Busy(e.to_string())
            }
            RuntimeError::Function {
                failure: FunctionFailure::BadPayload,
                message,
                ..
            } => Self::BadTask(message),
            RuntimeError::Function {
                failure: FunctionFailure::Busy,
                ..
            } => Self::Busy(e.to_string()),
            RuntimeError::OutOfMemory { limit_mb, .. } => Self::OutOfMemory { limit_mb },
            RuntimeError::Cancelled { .. } => Self::Cancelled,
            RuntimeError::ShuttingDown | RuntimeError::NoRuntime => Self::ShuttingDown,
            RuntimeError::PayloadTooLarge { .. }
            | RuntimeError::InvalidFunctionName(_)
            | RuntimeError::InvalidConfig(_)
            | RuntimeError::ConfigFile { .. }
            | RuntimeError::AlreadyExists(_) => Self::BadTask(e.to_string()),
            RuntimeError::Function { .. }
            | RuntimeError::Timeout { .. }
            | RuntimeError::InstanceDied { .. }
            | RuntimeError::StartFailed { .. }
            | RuntimeError::Transport { .. }
            | RuntimeError::Io { .. } => Self::Failed(e.to_string()),
        }
    }
}

pub type InvokeFuture<'a> = Pin<Box<dyn Future<Output = Result<Invoked, InvokeError>> + Send + 'a>>;

/// Instances of a job's worker function, for the job's status while it waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Instances {
    pub alive: usize,
    pub starting: usize,
    pub queued: usize,
}

impl From<PoolStats> for Instances {
    fn from(s: PoolStats) -> Self {
        Self {
            alive: s.alive,
            starting: s.starting,
            queued: s.queued,
        }
    }
}

/// Runs one worker invocation.
pub trait Invoker: Send + Sync + 'static {
    /// Runs `task`; `cancel` abandons it while it still waits for an instance.
    fn invoke(&self, task: WorkerTask, cancel: CancellationToken) -> InvokeFuture<'_>;

    /// The worker function's instances, where the invoker can tell.
    fn instances(&self) -> Option<Instances> {
        None
    }

    /// What one invocation costs while it runs: USD per second and per invocation (so the
    /// coordinator can hold a cost limit before the bills of running invocations are in).
    fn price(&self) -> Option<(f64, f64)> {
        None
    }
}

/// Invokes the worker function `function` on the function platform.
#[derive(Debug, Clone)]
pub struct PlatformInvoker {
    platform: Platform,
    function: String,
    job: String,
}

impl PlatformInvoker {
    /// `function` is the platform's name for the job's worker function (see
    /// [`crate::fleet::worker_function_name`]).
    pub fn new(platform: Platform, function: impl Into<String>, job: impl Into<String>) -> Self {
        Self {
            platform,
            function: function.into(),
            job: job.into(),
        }
    }

    /// The platform's name of the function it invokes.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Invokes the worker function with `task`: its report and the platform's record of the call
    /// (start kind and latency, billing).
    pub async fn call(
        &self,
        task: &WorkerTask,
        cancel: CancellationToken,
    ) -> Result<(WorkerReport, Invocation), InvokeError> {
        let payload = serde_json::to_vec(task)
            .map_err(|e| InvokeError::BadTask(format!("encoding the task: {e}")))?;
        let done = self
            .platform
            .invoke_request(InvokeRequest {
                function: self.function.clone(),
                payload: Bytes::from(payload),
                deadline: None,
                job: Some(self.job.clone()),
                cancel: Some(cancel),
            })
            .await?;
        let report = serde_json::from_slice(&done.output)
            .map_err(|e| InvokeError::Failed(format!("unreadable report: {e}")))?;
        Ok((report, done))
    }
}

impl Invoker for PlatformInvoker {
    fn invoke(&self, task: WorkerTask, cancel: CancellationToken) -> InvokeFuture<'_> {
        Box::pin(async move {
            let (report, done) = self.call(&task, cancel).await?;
            Ok(Invoked {
                report,
                cost_usd: done.billing.cost_usd,
                cold_start: done.start == StartKind::Cold,
            })
        })
    }

    fn instances(&self) -> Option<Instances> {
        self.platform.stats(&self.function).map(Instances::from)
    }

    fn price(&self) -> Option<(f64, f64)> {
        let config = self.platform.config();
        let memory_mb = config.functions.spec(&self.function).memory_mb;
        let p = &config.pricing;
        Some((
            f64::from(memory_mb) / 1024.0 * p.gb_second_usd,
            p.invocation_usd,
        ))
    }
}

/// Runs [`worker::run_task`] in this process with a fixed time limit; nothing is billed.
#[derive(Debug, Clone, Copy)]
pub struct InProcessInvoker {
    pub time_limit: Duration,
}

impl Invoker for InProcessInvoker {
    fn invoke(&self, task: WorkerTask, cancel: CancellationToken) -> InvokeFuture<'_> {
        let deadline = Instant::now() + self.time_limit;
        Box::pin(async move {
            if cancel.is_cancelled() {
                return Err(InvokeError::Cancelled);
            }
            let report = worker::run_task(task, deadline)
                .await
                .map_err(|e| InvokeError::Failed(e.to_string()))?;
            Ok(Invoked {
                report,
                cost_usd: 0.0,
                cold_start: false,
            })
        })
    }
}
