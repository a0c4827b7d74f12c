//! The device thread: picks the backend (the startup log says which and why), then serves
//! commands: sessions, loads (one resident copy per tensor), and the [`Scheduler`]'s dispatches,
//! which it hands to each tenant's [launcher](super::launcher) thread. It blocks on its channel
//! whenever nothing can be dispatched: completions arrive as commands too.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use rand::Rng;

use super::launcher::{Counters, Launch, Launcher};
use super::quota::{Account, Charge, Ledger};
use super::scheduler::{Dispatch, Scheduler, TenantId, TenantShare};
use super::startup::Chosen;
use super::weights::{HostModel, LoadedModel, Registry, WeightTensor};
use super::{Command, ExecutorStats, ModelHandle, Opened, Reply, TenantStats, Work, WorkOutput};
use crate::backend::{Backend, BackendKind};
use crate::config::{ExecutorConfig, Grant};
use crate::error::{GpuError, Result};
use crate::metrics as m;
use crate::tensor::HostTensor;

/// Host-memory stand-in for the device limit of the CPU backend.
const CPU_DEFAULT_LIMIT: u64 = 16 << 30;

/// Entry point of the device thread: opens a backend, reports readiness, serves until
/// [`Command::Shutdown`] or until every sender is gone.
pub(crate) fn run(
    cfg: ExecutorConfig,
    rx: mpsc::Receiver<Command>,
    done: mpsc::Sender<Command>,
    ready: mpsc::Sender<Result<(BackendKind, String)>>,
) {
    match super::startup::open_backend(&cfg) {
        #[cfg(feature = "cuda")]
        Chosen::Cuda(b) => serve(*b, cfg, rx, done, ready),
        Chosen::Cpu(b, reason) => {
            tracing::info!(%reason, "gpu executor backend: cpu");
            serve(b, cfg, rx, done, ready)
        }
        Chosen::Failed(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

struct TenantModel<B: Backend> {
    model: Arc<LoadedModel<B>>,
    _charge: Charge,
}

struct Tenant<B: Backend> {
    grant: Grant,
    account: Arc<Account>,
    models: HashMap<u64, TenantModel<B>>,
    next_handle: u64,
    launcher: mpsc::Sender<Launch<B>>,
    counters: Arc<Counters>,
}

struct Queued<B: Backend> {
    model: Arc<LoadedModel<B>>,
    work: Work,
    reply: Reply<WorkOutput>,
    received: Instant,
}

struct Device<B: Backend> {
    backend: Arc<B>,
    cfg: ExecutorConfig,
    device: Arc<Account>,
    loader: B::Stream,
    registry: Registry<B>,
    tenants: HashMap<TenantId, Tenant<B>>,
    sessions: HashMap<String, TenantId>,
    sched: Scheduler<Queued<B>>,
    paused: bool,
    next_tenant: TenantId,
    /// Launcher threads, joined at shutdown (a closed tenant's ends after its last item).
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Sends completions back to this thread's own channel.
    done: mpsc::Sender<Command>,
}

fn serve<B: Backend>(
    backend: B,
    cfg: ExecutorConfig,
    rx: mpsc::Receiver<Command>,
    done: mpsc::Sender<Command>,
    ready: mpsc::Sender<Result<(BackendKind, String)>>,
) {
    let setup = || -> Result<Device<B>> {
        let limit = match (cfg.device_memory_limit, backend.kind()) {
            (Some(l), _) => l,
            (None, BackendKind::Cpu) => CPU_DEFAULT_LIMIT,
            (None, BackendKind::Cuda) => backend.memory_info()?.1 / 10 * 9,
        };
        Ok(Device {
            loader: backend.new_stream(crate::config::Priority::Normal)?,
            device: Account::device(limit),
            registry: Registry::default(),
            tenants: HashMap::new(),
            sessions: HashMap::new(),
            sched: Scheduler::new(
                cfg.max_queue_total,
                cfg.max_in_flight_total,
                cfg.latency_lead,
            ),
            paused: false,
            next_tenant: 1,
            threads: Vec::new(),
            done,
            backend: Arc::new(backend),
            cfg,
        })
    };
    let mut dev = match setup() {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok((dev.backend.kind(), dev.backend.device_name())));
    dev.run(rx);
}

impl<B: Backend> Device<B> {
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        // Nothing here waits on the device: completions come back as commands, so blocking on
        // the channel is right whenever there is nothing to do.
        let spin = std::time::Duration::from_micros(self.cfg.spin_micros);
        while let Ok(cmd) = super::recv_spinning(&rx, spin) {
            let mut stopping = self.handle(cmd);
            while let Ok(cmd) = rx.try_recv() {
                stopping |= self.handle(cmd);
            }
            if stopping {
                break;
            }
            self.dispatch();
        }
        self.refuse_queued();
        // Closing every tenant's channel lets its launcher finish what is on the device.
        self.tenants.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        tracing::info!("gpu executor device thread stopped");
    }

    /// Handles one command; `true` means stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Open { grant, reply } => {
                let _ = reply.send(self.open(grant));
            }
            Command::Close { session } => self.close(&session),
            Command::Load {
                session,
                model,
                reply,
            } => {
                let _ = reply.send(self.load(&session, *model));
            }
            Command::Unload {
                session,
                handle,
                reply,
            } => {
                let _ = reply.send(self.unload(&session, handle));
            }
            Command::SetParams {
                session,
                handle,
                params,
                reply,
            } => {
                let _ = reply.send(self.set_params(&session, handle, params));
            }
            Command::Submit {
                session,
                handle,
                work,
                reply,
                received,
                _permit,
            } => self.submit(&session, handle, work, reply, received),
            Command::Stats { reply } => {
                let _ = reply.send(Ok(self.stats()));
            }
            Command::Completed { tenant } => self.sched.complete(tenant),
            Command::Pause(p) => self.paused = p,
            Command::Shutdown => return true,
        }
        false
    }

    fn tenant_of(&self, session: &str) -> Result<TenantId> {
        self.sessions
            .get(session)
            .copied()
            .ok_or(GpuError::UnknownSession)
    }

    fn open(&mut self, grant: Grant) -> Result<Opened> {
        if self.tenants.len() >= self.cfg.max_tenants {
            return Err(GpuError::QueueFull {
                queue: "tenant table".into(),
                limit: self.cfg.max_tenants as u64,
            });
        }
        let id = self.next_tenant;
        self.next_tenant += 1;
        let stream = self.backend.new_stream(grant.priority)?;
        self.threads.retain(|t| !t.is_finished());
        let session: String = {
            let mut rng = rand::rng();
            (0..4)
                .map(|_| format!("{:08x}", rng.random::<u32>()))
                .collect()
        };
        self.sched.add_tenant(
            id,
            TenantShare {
                weight: grant.weight,
                priority: grant.priority,
                max_in_flight: grant.max_in_flight,
                max_queue: self.cfg.max_queue_per_tenant,
            },
        );
        let label = if grant.name.is_empty() {
            format!("tenant-{id}")
        } else {
            grant.name.clone()
        };
        let account = Account::new(label, grant.memory_quota_bytes);
        let counters = Arc::new(Counters::default());
        let (launch_tx, launch_rx) = mpsc::channel();
        let launcher = Launcher {
            backend: self.backend.clone(),
            stream,
            ledger: Ledger::new(account.clone(), self.device.clone()),
            tenant: id,
            max_elements: self.cfg.max_buffer_elements,
            reserve: self.cfg.device_memory_reserve,
            done: self.done.clone(),
            counters: counters.clone(),
            spin: std::time::Duration::from_micros(self.cfg.spin_micros),
            free_memory: std::cell::Cell::new(None),
        };
        let thread = std::thread::Builder::new()
            .name(format!("gpu-tenant-{id}"))
            .spawn(move || launcher.run(launch_rx))
            .map_err(|e| GpuError::Device(format!("cannot start a launcher thread: {e}")))?;
        self.threads.push(thread);
        self.tenants.insert(
            id,
            Tenant {
                account,
                grant: grant.clone(),
                models: HashMap::new(),
                next_handle: 1,
                launcher: launch_tx,
                counters,
            },
        );
        self.sessions.insert(session.clone(), id);
        tracing::info!(tenant = id, name = %grant.name, weight = grant.weight, priority = grant.priority.as_str(), "tenant opened");
        metrics::gauge!(m::TENANTS).set(self.tenants.len() as f64);
        Ok(Opened {
            session,
            tenant_id: id,
            grant,
            backend: self.backend.kind(),
        })
    }

    /// Ends a session: its queued work is refused, its models released (the weights leave the
    /// device once no other tenant and no work in flight holds them).
    fn close(&mut self, session: &str) {
        let Some(id) = self.sessions.remove(session) else {
            return;
        };
        for q in self.sched.remove_tenant(id) {
            let _ = q
                .reply
                .send(Err(GpuError::Unavailable("the session was closed".into())));
        }
        self.tenants.remove(&id);
        self.registry.purge();
        tracing::info!(tenant = id, "tenant closed");
        metrics::gauge!(m::TENANTS).set(self.tenants.len() as f64);
        self.update_memory_gauges();
    }

    fn load(&mut self, session: &str, model: HostModel) -> Result<ModelHandle> {
        let id = self.tenant_of(session)?;
        let bytes = model.program.weight_bytes();
        let tenant = self.tenants.get(&id).ok_or(GpuError::UnknownSession)?;
        // The tenant pays the full size whether or not the weights are already resident.
        let charge = Charge::new(&[&tenant.account], bytes)?;
        let (loaded, shared) = self.registry.load(
            &self.backend,
            &self.loader,
            &self.device,
            self.cfg.device_memory_reserve,
            model,
        )?;
        // Other tenants' streams read these weights: the upload must be complete first.
        self.backend.synchronize(&self.loader)?;
        let (first, last) = loaded.program.range();
        let info = ModelHandle {
            id: 0,
            model_hash: loaded.hash.clone(),
            arch: loaded.program.arch().to_string(),
            shared,
            weight_bytes: bytes,
            first_layer: first,
            last_layer: last,
            layers: loaded
                .program
                .layers()
                .iter()
                .map(|l| (l.name.clone(), l.kind.to_string()))
                .collect(),
        };
        let tenant = self.tenants.get_mut(&id).ok_or(GpuError::UnknownSession)?;
        let handle = tenant.next_handle;
        tenant.next_handle += 1;
        tenant.models.insert(
            handle,
            TenantModel {
                model: Arc::new(loaded),
                _charge: charge,
            },
        );
        tracing::info!(tenant = id, handle, hash = %info.model_hash, shared, bytes, "model loaded");
        self.update_memory_gauges();
        Ok(ModelHandle { id: handle, ..info })
    }

    fn unload(&mut self, session: &str, handle: u64) -> Result<bool> {
        let id = self.tenant_of(session)?;
        let tenant = self.tenants.get_mut(&id).ok_or(GpuError::UnknownSession)?;
        let gone = tenant
            .models
            .remove(&handle)
            .ok_or(GpuError::UnknownHandle(handle))?;
        let freed = Arc::strong_count(&gone.model) == 1
            && gone.model.weights.iter().all(|w| Arc::strong_count(w) == 1);
        drop(gone);
        self.registry.purge();
        self.update_memory_gauges();
        Ok(freed)
    }

    /// Replaces parameters of one tenant's model; shared tensors are copied first (the copy is
    /// the tenant's alone and charged to the device; the tenant already pays the full size).
    fn set_params(
        &mut self,
        session: &str,
        handle: u64,
        params: Vec<(String, HostTensor)>,
    ) -> Result<u32> {
        let id = self.tenant_of(session)?;
        let tenant = self.tenants.get_mut(&id).ok_or(GpuError::UnknownSession)?;
        let entry = tenant
            .models
            .get_mut(&handle)
            .ok_or(GpuError::UnknownHandle(handle))?;
        let specs: Vec<_> = entry.model.program.params().cloned().collect();
        let mut weights = entry.model.weights.clone();
        let mut copied = 0;
        for (name, value) in params {
            let i = specs.iter().position(|s| s.name == name).ok_or_else(|| {
                GpuError::InvalidRequest(format!("`{name}` is not a parameter of this model range"))
            })?;
            if value.shape() != specs[i].shape.as_slice() {
                return Err(GpuError::InvalidRequest(format!(
                    "`{name}` has shape {:?}, the model needs {:?}",
                    value.shape(),
                    specs[i].shape
                )));
            }
            let data = value
                .as_f32()
                .ok_or_else(|| GpuError::InvalidRequest(format!("`{name}` must be FP32")))?;
            if data.iter().any(|v| !v.is_finite()) {
                return Err(GpuError::InvalidRequest(format!(
                    "`{name}` holds NaN or infinite values"
                )));
            }
            if Arc::strong_count(&weights[i]) > 1 {
                copied += 1;
            }
            let charge = Charge::new(&[&self.device], data.len() as u64 * 4)?;
            let buf = self.backend.upload(&self.loader, data)?;
            weights[i] = Arc::new(WeightTensor::new(buf, charge));
        }
        // The tenant's later work runs on its own stream: the copies must be complete first.
        self.backend.synchronize(&self.loader)?;
        let model = LoadedModel {
            hash: entry.model.hash.clone(),
            program: entry.model.program.clone(),
            weights,
        };
        entry.model = Arc::new(model);
        self.registry.purge();
        self.update_memory_gauges();
        Ok(copied)
    }

    fn submit(
        &mut self,
        session: &str,
        handle: u64,
        work: Work,
        reply: Reply<WorkOutput>,
        received: Instant,
    ) {
        let op = work.op();
        let queued = (|| {
            let id = self.tenant_of(session)?;
            let tenant = self.tenants.get(&id).ok_or(GpuError::UnknownSession)?;
            let model = tenant
                .models
                .get(&handle)
                .ok_or(GpuError::UnknownHandle(handle))?
                .model
                .clone();
            // Refuse bad input now, before it takes a place in the queue.
            let input = match &work {
                Work::Forward(x) => x,
                Work::Train { input, .. } => {
                    model.program.check_trainable()?;
                    input
                }
            };
            model.program.check_input(input)?;
            let cost = model.program.flops(input.shape());
            Ok((id, model, cost))
        })();
        match queued {
            Err(e) => {
                self.count_outcome(op, &e);
                let _ = reply.send(Err(e));
            }
            Ok((id, model, cost)) => {
                let item = Queued {
                    model,
                    work,
                    reply,
                    received,
                };
                if let Err(refused) = self.sched.enqueue(id, item, cost) {
                    self.count_outcome(op, &refused.error);
                    let _ = refused.item.reply.send(Err(refused.error));
                }
            }
        }
        metrics::gauge!(m::QUEUED).set(self.sched.queued() as f64);
    }

    fn refuse_queued(&mut self) {
        let ids: Vec<TenantId> = self.tenants.keys().copied().collect();
        for id in ids {
            for q in self.sched.remove_tenant(id) {
                let _ = q.reply.send(Err(GpuError::Unavailable(
                    "the executor is stopping".into(),
                )));
            }
        }
    }

    fn count_outcome(&self, op: &'static str, e: &GpuError) {
        metrics::counter!(m::REQUESTS_TOTAL, "op" => op, "outcome" => e.tag()).increment(1);
    }

    /// Hands every item the scheduler allows to its tenant's launcher.
    fn dispatch(&mut self) {
        if self.paused {
            return;
        }
        while let Some(d) = self.sched.next_dispatch() {
            self.start(d);
        }
        metrics::gauge!(m::QUEUED).set(self.sched.queued() as f64);
        metrics::gauge!(m::IN_FLIGHT).set(self.sched.in_flight() as f64);
    }

    fn start(&mut self, d: Dispatch<Queued<B>>) {
        let Queued {
            model,
            work,
            reply,
            received,
        } = d.item;
        let queue_seconds = received.elapsed().as_secs_f64();
        let Some(tenant) = self.tenants.get(&d.tenant) else {
            self.sched.complete(d.tenant);
            let _ = reply.send(Err(GpuError::UnknownSession));
            return;
        };
        let priority = tenant.grant.priority.as_str();
        metrics::histogram!(m::QUEUE_SECONDS, "op" => work.op(), "priority" => priority)
            .record(queue_seconds);
        let launch = Launch {
            model,
            work,
            reply,
            seq: d.seq,
            queue_seconds,
        };
        if let Err(mpsc::SendError(l)) = tenant.launcher.send(launch) {
            // The launcher is gone (it can only end by a bug): fail this tenant's item alone.
            self.sched.complete(d.tenant);
            let _ = l.reply.send(Err(GpuError::Device(
                "the tenant's launcher has stopped".into(),
            )));
        }
    }

    fn update_memory_gauges(&mut self) {
        let (_, weights) = self.registry.resident();
        metrics::gauge!(m::MEMORY_BYTES, "kind" => "used").set(self.device.used() as f64);
        metrics::gauge!(m::MEMORY_BYTES, "kind" => "limit").set(self.device.limit() as f64);
        metrics::gauge!(m::MEMORY_BYTES, "kind" => "shared_weights").set(weights as f64);
    }

    fn stats(&mut self) -> ExecutorStats {
        let (tensors, bytes) = self.registry.resident();
        let mut tenants: Vec<TenantStats> = self
            .tenants
            .iter()
            .map(|(&id, t)| {
                let q = self
                    .sched
                    .stats(id)
                    .unwrap_or(super::scheduler::QueueStats {
                        queued: 0,
                        in_flight: 0,
                        peak_in_flight: 0,
                    });
                TenantStats {
                    tenant_id: id,
                    name: t.grant.name.clone(),
                    weight: t.grant.weight,
                    priority: t.grant.priority,
                    queued: q.queued as u32,
                    in_flight: q.in_flight,
                    peak_in_flight: q.peak_in_flight,
                    memory_used_bytes: t.account.used(),
                    memory_quota_bytes: t.account.limit(),
                    completed: t.counters.completed.load(Ordering::Relaxed),
                    failed: t.counters.failed.load(Ordering::Relaxed),
                    models: t.models.len() as u32,
                }
            })
            .collect();
        tenants.sort_by_key(|t| t.tenant_id);
        ExecutorStats {
            backend: self.backend.kind().as_str().to_string(),
            device: self.backend.device_name(),
            resident_weight_bytes: bytes,
            resident_tensors: tensors as u32,
            device_used_bytes: self.device.used(),
            device_limit_bytes: self.device.limit(),
            dispatched: self.sched.dispatched(),
            tenants,
        }
    }
}
