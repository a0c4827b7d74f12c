//! How the coordinator runs a worker invocation: through the function platform (real processes,
//! billed, limited), or in this process (tests and debugging). Both speak [`WorkerTask`] and
//! [`WorkerReport`], so the coordinator cannot tell them apart.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cumulus_runtime::{Invocation, InvokeRequest, Platform, StartKind};

use crate::TrainerError;
use crate::worker::{self, WorkerReport, WorkerTask};

/// A finished invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub report: WorkerReport,
    /// What the invocation was billed, USD.
    pub cost_usd: f64,
    pub cold_start: bool,
}

pub type InvokeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Invoked, TrainerError>> + Send + 'a>>;

/// Runs one worker invocation.
pub trait Invoker: Send + Sync + 'static {
    fn invoke(&self, task: WorkerTask) -> InvokeFuture<'_>;
}

/// Invokes the `train-worker` function on the function platform.
#[derive(Debug, Clone)]
pub struct PlatformInvoker {
    platform: Platform,
    function: String,
    job: String,
}

impl PlatformInvoker {
    /// `function` is the platform's name for the worker function (usually [`worker::KIND`]).
    pub fn new(platform: Platform, function: impl Into<String>, job: impl Into<String>) -> Self {
        Self {
            platform,
            function: function.into(),
            job: job.into(),
        }
    }
}

impl PlatformInvoker {
    /// Invokes the worker function with `task`: its report and the platform's record of the call
    /// (start kind and latency, billing).
    pub async fn call(
        &self,
        task: &WorkerTask,
    ) -> Result<(WorkerReport, Invocation), TrainerError> {
        let worker = task.worker;
        let payload = serde_json::to_vec(task).map_err(|e| TrainerError::Worker {
            worker,
            reason: format!("encoding the task: {e}"),
        })?;
        let done = self
            .platform
            .invoke_request(InvokeRequest {
                function: self.function.clone(),
                payload: Bytes::from(payload),
                deadline: None,
                job: Some(self.job.clone()),
            })
            .await?;
        let report = serde_json::from_slice(&done.output).map_err(|e| TrainerError::Worker {
            worker,
            reason: format!("unreadable report: {e}"),
        })?;
        Ok((report, done))
    }
}

impl Invoker for PlatformInvoker {
    fn invoke(&self, task: WorkerTask) -> InvokeFuture<'_> {
        Box::pin(async move {
            let (report, done) = self.call(&task).await?;
            Ok(Invoked {
                report,
                cost_usd: done.billing.cost_usd,
                cold_start: done.start == StartKind::Cold,
            })
        })
    }
}

/// Runs [`worker::run_task`] in this process with a fixed time limit; nothing is billed.
#[derive(Debug, Clone, Copy)]
pub struct InProcessInvoker {
    pub time_limit: Duration,
}

impl Invoker for InProcessInvoker {
    fn invoke(&self, task: WorkerTask) -> InvokeFuture<'_> {
        let deadline = Instant::now() + self.time_limit;
        Box::pin(async move {
            let report = worker::run_task(task, deadline).await?;
            Ok(Invoked {
                report,
                cost_usd: 0.0,
                cold_start: false,
            })
        })
    }
}
