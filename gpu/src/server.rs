//! [`run`]: start the executor (device thread + gRPC on a Unix socket or loopback TCP) and get an
//! [`ExecutorHandle`] with the bound address and a shutdown. The gRPC service only translates:
//! every request is validated and bounded here, then becomes one command to the device thread.
//!
//! ```no_run
//! # async fn demo() -> cumulus_gpu::Result<()> {
//! use cumulus_gpu::{ExecutorConfig, Listen};
//!
//! let handle = cumulus_gpu::run(ExecutorConfig::new(Listen::Unix("/tmp/gpu.sock".into()))).await?;
//! println!("serving on {:?} with the {} backend", handle.listen, handle.backend);
//! handle.stop().await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use cumulus_proto::gpu::v1 as pb;
use pb::gpu_executor_server::{GpuExecutor, GpuExecutorServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::backend::BackendKind;
use crate::config::{ExecutorConfig, Listen, TenantOptions};
use crate::error::{GpuError, Result};
use crate::executor::weights::{ModelSource, read_model};
use crate::executor::{Command, Core, ExecutorStats, Work};
use crate::wire;

/// A running executor.
pub struct ExecutorHandle {
    /// Where it listens (the bound port when TCP port 0 was asked for).
    pub listen: Listen,
    /// The backend it chose.
    pub backend: BackendKind,
    /// The device, as the backend describes it.
    pub device: String,
    shutdown: watch::Sender<bool>,
    core: Arc<Core>,
    task: JoinHandle<Result<()>>,
}

impl std::fmt::Debug for ExecutorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorHandle")
            .field("listen", &self.listen)
            .field("backend", &self.backend)
            .field("device", &self.device)
            .finish()
    }
}

impl ExecutorHandle {
    /// The executor's state, read in-process.
    pub async fn stats(&self) -> Result<ExecutorStats> {
        self.core.call(|reply| Command::Stats { reply }).await
    }

    /// Stops (or resumes) dispatching new work; work on the device finishes. For maintenance,
    /// and for tests that queue work first and then release it all at once.
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.core.send(Command::Pause(paused))
    }

    /// Stops serving (sessions end, queued work is refused, work on the device finishes) and
    /// waits until everything has stopped.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        let served = self
            .task
            .await
            .map_err(|e| GpuError::Transport(format!("server task: {e}")))?;
        let core = self.core;
        // Joining the device thread blocks: not on a runtime worker.
        tokio::task::spawn_blocking(move || core.stop())
            .await
            .map_err(|e| GpuError::Device(format!("device thread: {e}")))?;
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("gpu executor stopped");
        served
    }
}

/// Removes a socket file nobody listens on; refuses one in use.
fn clear_stale_socket(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(GpuError::config(
            "listen",
            format!("{} is in use by a running executor", path.display()),
        ));
    }
    std::fs::remove_file(path).map_err(|source| GpuError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Starts the executor: validates `cfg`, opens the backend on the device thread (the log says
/// which backend and why), binds the socket and serves until [`ExecutorHandle::stop`].
pub async fn run(cfg: ExecutorConfig) -> Result<ExecutorHandle> {
    cfg.validate()?;
    let core = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Core::start(&cfg))
            .await
            .map_err(|e| GpuError::Device(format!("device thread start: {e}")))??
    };
    let core = Arc::new(core);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let service = Service {
        core: core.clone(),
        cfg: Arc::new(cfg.clone()),
        shutdown: shutdown_rx.clone(),
    };
    let grpc = GpuExecutorServer::new(service)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .add_service(grpc);
    let mut stop = shutdown_rx.clone();
    let signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let (listen, task) = match &cfg.listen {
        Listen::Unix(path) => {
            clear_stale_socket(path)?;
            let listener = tokio::net::UnixListener::bind(path).map_err(|source| GpuError::Io {
                path: path.clone(),
                source,
            })?;
            let incoming = UnixListenerStream::new(listener);
            let fut = builder.serve_with_incoming_shutdown(incoming, signal);
            (Listen::Unix(path.clone()), tokio::spawn(fut))
        }
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| GpuError::Transport(format!("bind {addr}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| GpuError::Transport(e.to_string()))?;
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let fut = builder.serve_with_incoming_shutdown(incoming, signal);
            (Listen::Tcp(bound), tokio::spawn(fut))
        }
    };
    let task = tokio::spawn(async move {
        task.await
            .map_err(|e| GpuError::Transport(format!("server task: {e}")))?
            .map_err(|e| GpuError::Transport(e.to_string()))
    });
    tracing::info!(listen = ?listen, backend = %core.backend, device = %core.device_name, "gpu executor serving");
    Ok(ExecutorHandle {
        listen,
        backend: core.backend,
        device: core.device_name.clone(),
        shutdown,
        core,
        task,
    })
}

struct Service {
    core: Arc<Core>,
    cfg: Arc<ExecutorConfig>,
    shutdown: watch::Receiver<bool>,
}

/// Ends the tenant's session when its `Open` stream is dropped (the client went away).
struct SessionGuard {
    core: Arc<Core>,
    session: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let _ = self.core.send(Command::Close {
            session: std::mem::take(&mut self.session),
        });
    }
}

/// The `Open` response stream: the `Opened` event, then nothing until shutdown.
struct SessionStream {
    inner: ReceiverStream<std::result::Result<pb::SessionEvent, Status>>,
    _guard: SessionGuard,
}

impl Stream for SessionStream {
    type Item = std::result::Result<pb::SessionEvent, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

fn status(e: GpuError) -> Status {
    if matches!(
        e,
        GpuError::Device(_) | GpuError::KernelCompile(_) | GpuError::Io { .. }
    ) {
        tracing::error!(error = %e, "gpu executor request failed");
    }
    e.to_status()
}

impl Service {
    async fn submit(&self, session: String, handle: u64, work: Work) -> Result<crate::WorkOutput> {
        let permit = self.core.work_permit()?;
        let received = Instant::now();
        self.core
            .call(|reply| Command::Submit {
                session,
                handle,
                work,
                reply,
                received,
                _permit: permit,
            })
            .await
    }
}

#[tonic::async_trait]
impl GpuExecutor for Service {
    type OpenStream = SessionStream;

    async fn open(
        &self,
        request: Request<pb::OpenRequest>,
    ) -> std::result::Result<Response<SessionStream>, Status> {
        let r = request.into_inner();
        let opts = TenantOptions {
            name: r.name,
            weight: r.weight,
            priority: wire::priority_from_proto(r.priority).map_err(status)?,
            max_in_flight: r.max_in_flight,
            memory_quota_bytes: r.memory_quota_bytes,
        };
        let grant = self.cfg.grant(&opts).map_err(status)?;
        let opened = self
            .core
            .call(|reply| Command::Open { grant, reply })
            .await
            .map_err(status)?;
        let guard = SessionGuard {
            core: self.core.clone(),
            session: opened.session.clone(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let event = pb::SessionEvent {
            event: Some(pb::session_event::Event::Opened(pb::Opened {
                session: opened.session,
                tenant_id: opened.tenant_id,
                backend: opened.backend.as_str().to_string(),
                weight: opened.grant.weight,
                max_in_flight: opened.grant.max_in_flight,
                memory_quota_bytes: opened.grant.memory_quota_bytes,
                priority: wire::priority_to_proto(opened.grant.priority) as i32,
            })),
        };
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            // Holding `tx` keeps the stream open; it ends at shutdown or when the client leaves.
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(SessionStream {
            inner: ReceiverStream::new(rx),
            _guard: guard,
        }))
    }

    async fn load_model(
        &self,
        request: Request<pb::LoadModelRequest>,
    ) -> std::result::Result<Response<pb::LoadModelResponse>, Status> {
        let r = request.into_inner();
        let source = match r.source {
            Some(pb::load_model_request::Source::Folder(dir)) => ModelSource::Folder(dir.into()),
            Some(pb::load_model_request::Source::Inline(m)) => ModelSource::Inline {
                config_json: m.config_json,
                safetensors: m.safetensors,
            },
            None => {
                return Err(status(GpuError::InvalidRequest(
                    "missing model source (folder or inline)".into(),
                )));
            }
        };
        let cfg = self.cfg.clone();
        let (first, last) = (r.first_layer as usize, r.last_layer.map(|l| l as usize));
        let training = r.training;
        let model = tokio::task::spawn_blocking(move || {
            read_model(
                &source,
                first,
                last,
                training,
                &cfg.model_roots,
                cfg.max_quota_bytes,
            )
        })
        .await
        .map_err(|e| status(GpuError::Device(format!("model reader: {e}"))))?
        .map_err(status)?;
        let session = r.session;
        let loaded = self
            .core
            .call(|reply| Command::Load {
                session,
                model: Box::new(model),
                reply,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(wire::model_to_proto(&loaded)))
    }

    async fn unload_model(
        &self,
        request: Request<pb::UnloadModelRequest>,
    ) -> std::result::Result<Response<pb::UnloadModelResponse>, Status> {
        let r = request.into_inner();
        let freed = self
            .core
            .call(|reply| Command::Unload {
                session: r.session,
                handle: r.handle,
                reply,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UnloadModelResponse { freed }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> std::result::Result<Response<pb::ForwardResponse>, Status> {
        let r = request.into_inner();
        let input = wire::tensor(r.input.as_ref(), "input", self.cfg.max_tensor_elements)
            .map_err(status)?;
        let out = self
            .submit(r.session, r.handle, Work::Forward(input))
            .await
            .map_err(status)?;
        Ok(Response::new(wire::forward_to_proto(out).map_err(status)?))
    }

    async fn set_params(
        &self,
        request: Request<pb::SetParamsRequest>,
    ) -> std::result::Result<Response<pb::SetParamsResponse>, Status> {
        let r = request.into_inner();
        let params = wire::from_named(&r.params, self.cfg.max_tensor_elements).map_err(status)?;
        let copied = self
            .core
            .call(|reply| Command::SetParams {
                session: r.session,
                handle: r.handle,
                params,
                reply,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetParamsResponse { copied }))
    }

    async fn train_step(
        &self,
        request: Request<pb::TrainStepRequest>,
    ) -> std::result::Result<Response<pb::TrainStepResponse>, Status> {
        let r = request.into_inner();
        let max = self.cfg.max_tensor_elements;
        let input = wire::tensor(r.input.as_ref(), "input", max).map_err(status)?;
        let targets = wire::tensor(r.targets.as_ref(), "targets", max).map_err(status)?;
        let loss = wire::loss_from_proto(r.loss).map_err(status)?;
        let work = Work::Train {
            input,
            targets,
            loss,
        };
        let out = self
            .submit(r.session, r.handle, work)
            .await
            .map_err(status)?;
        Ok(Response::new(wire::train_to_proto(out)))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> std::result::Result<Response<pb::StatsResponse>, Status> {
        let stats = self
            .core
            .call(|reply| Command::Stats { reply })
            .await
            .map_err(status)?;
        Ok(Response::new(wire::stats_to_proto(&stats)))
    }
}

/// The `cumulus gpu-executor` role: serves on its own multi-threaded runtime until SIGINT or
/// SIGTERM, then stops (work on the device finishes). Prints `listening on PATH-or-ADDR` and
/// `backend: ...` on stdout once serving, for scripts and tests. Metrics are recorded through the
/// `metrics` facade: the binary installs the recorder and calls [`crate::metrics::describe`].
pub fn serve_until_signal(cfg: ExecutorConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gpu-executor-rpc")
        .build()
        .map_err(|e| GpuError::Device(format!("runtime: {e}")))?;
    rt.block_on(async move {
        let handle = run(cfg).await?;
        match &handle.listen {
            Listen::Unix(p) => println!("listening on {}", p.display()),
            Listen::Tcp(a) => println!("listening on {a}"),
        }
        println!("backend: {} ({})", handle.backend, handle.device);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| GpuError::Device(format!("signal handler: {e}")))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received, stopping the gpu executor");
        handle.stop().await
    })
}
