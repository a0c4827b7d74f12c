//! The HTTP server of one function instance (`cumulus fn <kind>`): `POST /invoke`, `GET /healthz`.
//!
//! The instance learns where to listen from its options (`--listen`, or `PORT` as Knative sets it).
//! With `addr_file`, it binds first and then writes its bound address there (atomically, by rename):
//! the local backend passes `127.0.0.1:0` and a file, so ports never race. Readiness is answering
//! `/healthz`; nothing is printed for the platform to parse.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::protocol::{
    DynFunctionKind, FunctionError, FunctionRegistry, HEADER_DEADLINE_MS, HEADER_FUNCTION,
    HEADER_MEMORY_MB, HEADER_REQUEST_ID, InvokeContext,
};
use crate::error::RuntimeError;

/// Deadline assumed when the caller sends none (Knative's default request timeout is 300 s).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

/// How one instance serves.
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Write the bound address to this file once serving.
    pub addr_file: Option<PathBuf>,
    /// Invocations run at once; more are answered 429.
    pub concurrency: usize,
    /// Largest accepted payload, bytes.
    pub max_body_bytes: usize,
    /// Exit when the parent process goes away (the local backend sets it, so no instance outlives
    /// a crashed platform).
    pub exit_with_parent: bool,
}

/// A serving instance.
#[derive(Debug)]
pub struct InstanceHandle {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl InstanceHandle {
    /// Stops accepting, lets running invocations finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), RuntimeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops (shutdown, or parent gone).
    pub async fn wait(self) -> Result<(), RuntimeError> {
        match self.task.await {
            Ok(r) => r.map_err(|e| RuntimeError::io("instance server", e)),
            Err(e) => Err(RuntimeError::io(
                "instance server task",
                std::io::Error::other(e),
            )),
        }
    }
}

#[derive(Clone)]
struct AppState {
    kind: Arc<dyn DynFunctionKind>,
    function: Arc<str>,
    slots: Arc<Semaphore>,
}

/// The instance's router, without a socket (tests call it with `oneshot`).
pub fn router(kind: Arc<dyn DynFunctionKind>, function: &str, options: &InstanceOptions) -> Router {
    let state = AppState {
        kind,
        function: Arc::from(function),
        slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
    };
    Router::new()
        .route("/invoke", post(invoke))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state)
}

/// Binds, writes the address file, and serves until shut down.
pub async fn serve(
    kind: Arc<dyn DynFunctionKind>,
    function: &str,
    options: InstanceOptions,
) -> Result<InstanceHandle, RuntimeError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| RuntimeError::io(format!("binding {}", options.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| RuntimeError::io("local address", e))?;
    let app = router(kind, function, &options);
    let (tx, rx) = oneshot::channel::<()>();
    let parent = options
        .exit_with_parent
        .then(std::os::unix::process::parent_id);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = rx => {}
                    _ = parent_gone(parent) => tracing::warn!("parent process gone; instance exits"),
                }
            })
            .await
    });
    if let Some(path) = &options.addr_file {
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, addr.to_string())
            .await
            .map_err(|e| RuntimeError::io(format!("writing {}", tmp.display()), e))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| RuntimeError::io(format!("renaming to {}", path.display()), e))?;
    }
    Ok(InstanceHandle {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// Resolves when the process's parent changes (it died and we were re-parented); never without one.
async fn parent_gone(parent: Option<u32>) {
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

use cumulus_service::error::json_error as error;

async fn invoke(State(state): State<AppState>, headers: HeaderMap, payload: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let deadline = match header(HEADER_DEADLINE_MS).map(str::parse::<u64>) {
        None => DEFAULT_DEADLINE,
        Some(Ok(ms)) => Duration::from_millis(ms),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{HEADER_DEADLINE_MS}: not a number of ms"),
            );
        }
    };
    let memory_mb = match header(HEADER_MEMORY_MB).map(str::parse::<u32>) {
        None => 0,
        Some(Ok(mb)) => mb,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{HEADER_MEMORY_MB}: not a number of MB"),
            );
        }
    };
    let Ok(_slot) = state.slots.clone().try_acquire_owned() else {
        return error(StatusCode::TOO_MANY_REQUESTS, "instance busy");
    };
    let ctx = InvokeContext {
        request_id: header(HEADER_REQUEST_ID).unwrap_or("-").to_owned(),
        function: header(HEADER_FUNCTION).map_or_else(|| state.function.to_string(), str::to_owned),
        memory_mb,
        deadline: tokio::time::Instant::now() + deadline,
    };
    match state.kind.invoke_boxed(ctx, payload).await {
        Ok(out) => (StatusCode::OK, out).into_response(),
        Err(FunctionError::BadPayload(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(FunctionError::Failed(m)) => {
            tracing::warn!(error = %m, "invocation failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, m)
        }
    }
}

/// Runs the instance of `kind` until SIGTERM or Ctrl-C (then drains) or until its parent goes away:
/// the body of `cumulus fn <kind>`. Builds its own Tokio runtime.
pub fn run_until_signal(
    registry: &FunctionRegistry,
    kind: &str,
    options: InstanceOptions,
) -> Result<(), RuntimeError> {
    let Some(handler) = registry.get(kind) else {
        let known: Vec<&str> = registry.names().collect();
        return Err(RuntimeError::InvalidConfig(format!(
            "unknown function kind {kind:?}; known kinds: {known:?}"
        )));
    };
    let function = std::env::var("CUMULUS_FUNCTION").unwrap_or_else(|_| kind.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::io("starting the Tokio runtime", e))?;
    runtime.block_on(async move {
        let handle = serve(handler, &function, options).await?;
        tracing::info!(addr = %handle.addr, kind, "function instance serving");
        let InstanceHandle {
            shutdown, mut task, ..
        } = handle;
        let joined = |r: Result<std::io::Result<()>, tokio::task::JoinError>| match r {
            Ok(r) => r.map_err(|e| RuntimeError::io("instance server", e)),
            Err(e) => Err(RuntimeError::io(
                "instance server task",
                std::io::Error::other(e),
            )),
        };
        tokio::select! {
            () = cumulus_service::shutdown::signal() => {}
            r = &mut task => return joined(r),
        }
        // Drain: stop accepting, let running invocations finish.
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
        joined(task.await)
    })
}
