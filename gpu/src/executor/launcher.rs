//! A tenant's launcher thread: it owns the tenant's stream (on CUDA: the stream and its cuBLAS
//! handle), launches the items the scheduler dispatches to it, polls their completion events and
//! answers the tenant directly.
//!
//! Why a thread per tenant: small-batch inference is dominated by the host's cost of launching
//! kernels (a few microseconds per launch, per cuBLAS call, per allocation), and one thread
//! launching for every tenant would serialize exactly the work that sharing the device is meant
//! to overlap. The CUDA context is one (shared by all threads of the process); every thread only
//! touches its own stream. On the CPU backend the threads run tenants' work in parallel.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::time::Instant;

use super::quota::Ledger;
use super::scheduler::TenantId;
use super::weights::LoadedModel;
use super::{Command, Reply, Work, WorkOutput};
use crate::backend::Backend;
use crate::error::{GpuError, Result};
use crate::metrics as m;
use crate::program::exec::{Exec, Tracked};
use crate::program::train::train_step;
use crate::tensor::HostTensor;

/// Completed and failed items of one tenant (read by stats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// One dispatched item on its way to the launcher.
pub(crate) struct Launch<B: Backend> {
    pub model: Arc<LoadedModel<B>>,
    pub work: Work,
    pub reply: Reply<WorkOutput>,
    pub seq: u64,
    pub queue_seconds: f64,
}

struct InFlight<B: Backend> {
    pending: B::Pending,
    /// The item's buffers, kept (and charged) until its downloads are done.
    _keep: Vec<Tracked<B>>,
    /// Name and shape of each download, in order; the loss comes first for a train step.
    outputs: Vec<(String, Vec<usize>)>,
    has_loss: bool,
    _model: Arc<LoadedModel<B>>,
    reply: Reply<WorkOutput>,
    seq: u64,
    queue_seconds: f64,
    started: Instant,
    op: &'static str,
}

/// What a launcher needs.
pub(crate) struct Launcher<B: Backend> {
    pub backend: Arc<B>,
    pub stream: B::Stream,
    pub ledger: Ledger,
    pub tenant: TenantId,
    pub max_elements: usize,
    pub reserve: u64,
    pub done: mpsc::Sender<Command>,
    pub counters: Arc<Counters>,
    pub spin: std::time::Duration,
    /// The last `mem_get_info` answer and when it was asked (a driver call per item would be
    /// a measurable part of a small item's host cost).
    pub free_memory: std::cell::Cell<Option<(Instant, u64)>>,
}

/// Pairs downloaded values with their names and shapes.
#[allow(clippy::type_complexity)]
fn collect_output(
    values: Vec<Vec<f32>>,
    outputs: &[(String, Vec<usize>)],
    has_loss: bool,
) -> Result<(Vec<(String, HostTensor)>, Option<f32>)> {
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut loss = None;
    for (i, ((name, shape), mut v)) in outputs.iter().zip(values).enumerate() {
        let n: usize = shape.iter().product();
        v.truncate(n);
        if has_loss && i == 0 {
            loss = v.first().copied();
            continue;
        }
        tensors.push((name.clone(), HostTensor::f32(shape.clone(), v)?));
    }
    Ok((tensors, loss))
}

fn panic_error(what: &str) -> GpuError {
    GpuError::Device(format!("internal: a panic while {what} (this is a bug)"))
}

impl<B: Backend> Launcher<B> {
    /// Serves until the device thread drops the sender and the last item has completed.
    pub fn run(self, rx: mpsc::Receiver<Launch<B>>) {
        if let Err(e) = self.backend.bind_thread() {
            // Every launch would fail the same way; each says so to the tenant.
            tracing::error!(tenant = self.tenant, error = %e, "launcher cannot bind the device");
        }
        let mut in_flight: Vec<InFlight<B>> = Vec::new();
        let mut open = true;
        loop {
            if in_flight.is_empty() {
                if !open {
                    break;
                }
                match super::recv_spinning(&rx, self.spin) {
                    Ok(l) => self.start(l, &mut in_flight),
                    Err(_) => break,
                }
            }
            let mut progressed = false;
            loop {
                match rx.try_recv() {
                    Ok(l) => {
                        self.start(l, &mut in_flight);
                        progressed = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            progressed |= self.poll(&mut in_flight);
            if !progressed && !in_flight.is_empty() {
                // Work is on the device: keep polling its events, never sleeping past them.
                std::thread::yield_now();
            }
        }
    }

    fn finished(&self, op: &'static str, outcome: std::result::Result<(), &GpuError>) {
        match outcome {
            Ok(()) => {
                self.counters.completed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => "ok").increment(1);
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => e.tag()).increment(1);
            }
        }
        let _ = self.done.send(Command::Completed {
            tenant: self.tenant,
        });
    }

    fn start(&self, l: Launch<B>, in_flight: &mut Vec<InFlight<B>>) {
        let Launch {
            model,
            work,
            reply,
            seq,
            queue_seconds,
        } = l;
        let op = work.op();
        let started = Instant::now();
        let launched = catch_unwind(AssertUnwindSafe(|| self.launch(&model, work)))
            .unwrap_or_else(|_| Err(panic_error("launching")));
        match launched {
            Ok((pending, keep, outputs, has_loss)) => in_flight.push(InFlight {
                pending,
                _keep: keep,
                outputs,
                has_loss,
                _model: model,
                reply,
                seq,
                queue_seconds,
                started,
                op,
            }),
            Err(e) => {
                if matches!(e, GpuError::Device(_)) {
                    tracing::error!(tenant = self.tenant, error = %e, "work item failed to launch");
                }
                self.finished(op, Err(&e));
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Enqueues one item's work and downloads on the tenant's stream.
    #[allow(clippy::type_complexity)]
    fn launch(
        &self,
        model: &LoadedModel<B>,
        work: Work,
    ) -> Result<(B::Pending, Vec<Tracked<B>>, Vec<(String, Vec<usize>)>, bool)> {
        let free = match self.free_memory.get() {
            Some((at, free)) if at.elapsed() < std::time::Duration::from_millis(2) => free,
            _ => {
                let (free, _) = self.backend.memory_info()?;
                self.free_memory.set(Some((Instant::now(), free)));
                free
            }
        };
        if free < self.reserve {
            return Err(GpuError::DeviceMemory {
                requested: self.reserve,
                available: free,
            });
        }
        let b = &*self.backend;
        let ex = Exec::new(b, &self.stream, self.ledger.clone(), self.max_elements);
        let weights = model.buffers();
        match work {
            Work::Forward(x) => {
                let y = model.program.forward(&ex, &weights, &x)?;
                let pending = b.download(&self.stream, &[&*y.buf])?;
                Ok((
                    pending,
                    vec![y.buf],
                    vec![("output".into(), y.shape)],
                    false,
                ))
            }
            Work::Train {
                input,
                targets,
                loss,
            } => {
                let step = train_step(&model.program, &ex, &weights, &input, &targets, loss)?;
                let mut outputs = vec![("loss".to_string(), vec![1])];
                outputs.extend(
                    model
                        .program
                        .params()
                        .map(|p| (p.name.clone(), p.shape.clone())),
                );
                let mut keep = vec![step.loss];
                keep.extend(step.grads);
                let bufs: Vec<&B::Buf> = keep.iter().map(|t| &**t).collect();
                let pending = b.download(&self.stream, &bufs)?;
                Ok((pending, keep, outputs, true))
            }
        }
    }

    /// Answers every item whose downloads are done; `true` when any was.
    fn poll(&self, in_flight: &mut Vec<InFlight<B>>) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < in_flight.len() {
            // A device error counts as done: `finish` reports it to the item's tenant.
            let done = self.backend.poll(&in_flight[i].pending).unwrap_or(true);
            if !done {
                i += 1;
                continue;
            }
            any = true;
            let item = in_flight.swap_remove(i);
            let device_seconds = item.started.elapsed().as_secs_f64();
            let (outputs, has_loss) = (item.outputs, item.has_loss);
            let backend = &self.backend;
            let pending = item.pending;
            let result = catch_unwind(AssertUnwindSafe(move || {
                backend
                    .finish(pending)
                    .and_then(|values| collect_output(values, &outputs, has_loss))
            }))
            .unwrap_or_else(|_| Err(panic_error("collecting a result")));
            let result = result.map(|(tensors, loss)| WorkOutput {
                tensors,
                loss,
                dispatch_seq: item.seq,
                queue_seconds: item.queue_seconds,
                device_seconds,
            });
            metrics::histogram!(m::KERNEL_SECONDS, "op" => item.op, "backend" => self.backend.kind().as_str())
                .record(device_seconds);
            match &result {
                Ok(_) => self.finished(item.op, Ok(())),
                Err(e) => {
                    tracing::error!(tenant = self.tenant, error = %e, "work item failed on the device");
                    self.finished(item.op, Err(e));
                }
            }
            let _ = item.reply.send(result);
        }
        any
    }
}
