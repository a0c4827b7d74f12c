//! [`run`]: the gateway as a role — the model repository loaded into a [`Gateway`], served over
//! REST (with `/metrics`) and gRPC — returning a [`ServeHandle`] with the bound addresses and a
//! draining shutdown. `cumulus serve` and `cumulus up` both call it; tests start it on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cumulus_runtime::{CancellationToken, CumulusConfig, Platform};
use cumulus_service::telemetry::{PrometheusHandle, metrics_router};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::gateway::Gateway;
use crate::gpu::GpuExecutor;
use crate::protocol::InferBackend;
use crate::repository::Repository;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Repository(String),
    #[error("function platform: {0}")]
    Platform(#[from] cumulus_runtime::RuntimeError),
    #[error("{0}")]
    Gpu(String),
    #[error("binding {what} to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model repository: a folder of model folders.
    pub models: PathBuf,
    /// REST (KServe V2 and `/metrics`); Triton's default is 127.0.0.1:8000.
    pub http: SocketAddr,
    /// gRPC (`inference.GRPCInferenceService`); Triton's default is 127.0.0.1:8001.
    pub grpc: SocketAddr,
    /// `cumulus.toml`: `[inference]`, `[models.<name>]`, the platform, pricing.
    pub config: CumulusConfig,
    /// The function platform to run models on; `None` starts one from `config`.
    pub platform: Option<Platform>,
    /// The process's Prometheus recorder, rendered at `/metrics`.
    pub prometheus: Option<PrometheusHandle>,
    /// The node's GPU executor (its socket); `None` starts one when `[gpu]` asks for it.
    pub gpu: Option<PathBuf>,
}

/// A serving gateway.
#[derive(Debug)]
pub struct ServeHandle {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    owned_platform: Option<Platform>,
    owned_gpu: Option<GpuExecutor>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Loads the repository and serves it.
pub async fn run(cfg: ServeConfig) -> Result<ServeHandle, ServeError> {
    let repo = Repository::open(&cfg.models).map_err(ServeError::Repository)?;
    let (platform, owned_platform) = match cfg.platform {
        Some(p) => (p, None),
        None => {
            let p = Platform::new(cfg.config.clone())?;
            (p.clone(), Some(p))
        }
    };
    let bind = |what, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let http = bind("the REST endpoint", cfg.http).await?;
    let grpc = bind("the gRPC endpoint", cfg.grpc).await?;
    let local = |l: &tokio::net::TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let http_addr = local(&http, "the REST endpoint", cfg.http)?;
    let grpc_addr = local(&grpc, "the gRPC endpoint", cfg.grpc)?;

    let owned_gpu = match &cfg.gpu {
        Some(_) => None,
        None => {
            // The socket goes beside this process's other files unless the config names one.
            let dir = std::env::temp_dir().join(format!("cumulus-serve-{}", std::process::id()));
            if cfg.config.gpu.device != cumulus_runtime::GpuDevice::Cpu {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| ServeError::Gpu(format!("{}: {e}", dir.display())))?;
            }
            GpuExecutor::start(&cfg.config.gpu, &dir)
                .await
                .map_err(ServeError::Gpu)?
        }
    };
    let gpu = cfg
        .gpu
        .clone()
        .or_else(|| owned_gpu.as_ref().map(|g| g.socket.clone()));
    let gateway = Gateway::start(repo, cfg.config.clone(), Some(platform), gpu).await;
    let backend: Arc<dyn InferBackend> = gateway.clone();
    let stop = CancellationToken::new();
    let app = crate::http::router(backend.clone()).merge(metrics_router(cfg.prometheus));
    let stopped = stop.clone();
    let http_task = tokio::spawn(async move {
        let served = axum::serve(http, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the REST endpoint failed");
        }
    });
    let service = crate::grpc::service(backend);
    let stopped = stop.clone();
    let grpc_task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                async move { stopped.cancelled().await },
            )
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the gRPC endpoint failed");
        }
    });
    tracing::info!(%http_addr, %grpc_addr, models = %cfg.models.display(), "inference gateway serving");
    Ok(ServeHandle {
        http_addr,
        grpc_addr,
        gateway,
        owned_platform,
        owned_gpu,
        stop,
        tasks: vec![http_task, grpc_task],
    })
}

impl ServeHandle {
    /// Drains: readiness goes false and new requests are refused, every queued request is
    /// answered, then the endpoints close and the models' functions stop.
    pub async fn shutdown(self) {
        tracing::info!("inference gateway draining");
        self.gateway.shutdown().await;
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(p) = self.owned_platform {
            p.shutdown().await;
        }
        if let Some(g) = self.owned_gpu {
            g.stop().await;
        }
        tracing::info!("inference gateway stopped");
    }
}
