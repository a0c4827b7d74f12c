//! The executor core, transport-agnostic: one OS thread (the *device thread*) owns the backend
//! (on CUDA: the context, every tenant's stream and cuBLAS handle, every resident weight) and
//! is driven by [`Command`]s over a channel. The gRPC service ([`crate::server`]) only
//! translates requests into commands and replies back.
//!
//! - [`scheduler`]: fair shares, in-flight limits, priorities, bounded queues;
//! - [`quota`]: per-allocation memory accounting against tenant quotas and the device limit;
//! - [`weights`]: reading models, one resident copy of each shared tensor;
//!
//! - [`device`]: the device thread: sessions, loads, the scheduler's dispatches;
//! - `launcher`: one thread per tenant, owning its stream: it launches the tenant's items,
//!   records an event after each item's downloads and polls those events (`cuEventQuery`)
//!   without blocking, then answers the tenant. Tokio workers only ever await a oneshot reply.

pub mod device;
pub(crate) mod launcher;
pub mod quota;
pub mod scheduler;
mod startup;
pub mod weights;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use cumulus_models::Loss;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::backend::BackendKind;
use crate::config::{ExecutorConfig, Grant, Priority};
use crate::error::{GpuError, Result};
use crate::tensor::HostTensor;
use weights::HostModel;

/// Receives from `rx`, polling (and yielding the CPU) for up to `spin` before blocking.
pub(crate) fn recv_spinning<T>(
    rx: &mpsc::Receiver<T>,
    spin: std::time::Duration,
) -> std::result::Result<T, mpsc::RecvError> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) if start.elapsed() >= spin => return rx.recv(),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

/// Where the device thread sends an answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// What a tenant's session was granted.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: String,
    pub tenant_id: u64,
    pub grant: Grant,
    pub backend: BackendKind,
}

/// A model made resident for a tenant: what `load_model` answers and every later call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelHandle {
    /// The tenant's handle of this model.
    pub id: u64,
    /// SHA-256 of config and weights: what tenants share by.
    pub model_hash: String,
    pub arch: String,
    /// Whether every tensor was already resident (uploaded by another tenant).
    pub shared: bool,
    /// Bytes of the range's weights, charged in full to the tenant's quota.
    pub weight_bytes: u64,
    pub first_layer: usize,
    pub last_layer: usize,
    /// `(name, kind)` of each layer.
    pub layers: Vec<(String, String)>,
}

/// The work of one item.
#[derive(Debug)]
pub enum Work {
    Forward(HostTensor),
    Train {
        input: HostTensor,
        targets: HostTensor,
        loss: Loss,
    },
}

impl Work {
    pub fn op(&self) -> &'static str {
        match self {
            Self::Forward(_) => "forward",
            Self::Train { .. } => "train_step",
        }
    }
}

/// The result of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOutput {
    /// `("output", y)` for a forward pass; every gradient by parameter name for a train step.
    pub tensors: Vec<(String, HostTensor)>,
    /// The mean loss of a train step.
    pub loss: Option<f32>,
    pub dispatch_seq: u64,
    pub queue_seconds: f64,
    pub device_seconds: f64,
}

/// One tenant, as stats report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStats {
    pub tenant_id: u64,
    pub name: String,
    pub weight: u32,
    pub priority: Priority,
    pub queued: u32,
    pub in_flight: u32,
    pub peak_in_flight: u32,
    pub memory_used_bytes: u64,
    pub memory_quota_bytes: u64,
    pub completed: u64,
    pub failed: u64,
    pub models: u32,
}

/// The executor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorStats {
    pub backend: String,
    pub device: String,
    pub resident_weight_bytes: u64,
    pub resident_tensors: u32,
    pub device_used_bytes: u64,
    pub device_limit_bytes: u64,
    pub dispatched: u64,
    pub tenants: Vec<TenantStats>,
}

/// A request to the device thread.
pub(crate) enum Command {
    Open {
        grant: Grant,
        reply: Reply<Opened>,
    },
    Close {
        session: String,
    },
    Load {
        session: String,
        model: Box<HostModel>,
        reply: Reply<ModelHandle>,
    },
    Unload {
        session: String,
        handle: u64,
        reply: Reply<bool>,
    },
    SetParams {
        session: String,
        handle: u64,
        params: Vec<(String, HostTensor)>,
        reply: Reply<u32>,
    },
    Submit {
        session: String,
        handle: u64,
        work: Work,
        reply: Reply<WorkOutput>,
        received: Instant,
        /// Bounds the work commands between the socket and the scheduler's queues.
        _permit: OwnedSemaphorePermit,
    },
    Stats {
        reply: Reply<ExecutorStats>,
    },
    /// A launcher finished an item of `tenant` (its place in flight is free).
    Completed {
        tenant: u64,
    },
    Pause(bool),
    Shutdown,
}

/// The device thread and the way to reach it.
pub(crate) struct Core {
    tx: mpsc::Sender<Command>,
    permits: Arc<Semaphore>,
    pub backend: BackendKind,
    pub device_name: String,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Core {
    /// Starts the device thread (probe, backend, kernels) and waits until it is ready.
    pub fn start(cfg: &ExecutorConfig) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_cfg = cfg.clone();
        let done = tx.clone();
        let thread = std::thread::Builder::new()
            .name("gpu-executor".into())
            .spawn(move || device::run(thread_cfg, rx, done, ready_tx))
            .map_err(|e| GpuError::Device(format!("cannot start the device thread: {e}")))?;
        let (backend, device_name) = ready_rx
            .recv()
            .map_err(|_| GpuError::Device("the device thread ended while starting".into()))??;
        Ok(Self {
            tx,
            permits: Arc::new(Semaphore::new(
                cfg.max_queue_total + cfg.max_in_flight_total,
            )),
            backend,
            device_name,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Sends a command that needs no work permit.
    pub fn send(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| GpuError::Unavailable("the executor has stopped".into()))
    }

    /// Sends a command and waits for its answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await
            .map_err(|_| GpuError::Unavailable("the executor stopped before answering".into()))?
    }

    /// A permit to submit one work item, refused at once when too many are already on their way.
    pub fn work_permit(&self) -> Result<OwnedSemaphorePermit> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| GpuError::QueueFull {
                queue: "executor intake".into(),
                limit: self.permits.available_permits() as u64,
            })
    }

    /// Stops the device thread after the work in flight and waits for it.
    pub fn stop(&self) {
        let _ = self.tx.send(Command::Shutdown);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.stop();
    }
}
