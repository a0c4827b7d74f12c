//! The all-in-one control plane of Cumulus as a library: [`run`] assembles the parameter store
//! (one shard in this process, or external shards), the function platform, the job manager with
//! its workers on the platform ([`PlatformFleet`]), the HTTP API (`/v1/jobs…`, `/metrics`) and,
//! when asked, the inference gateway over a model repository that jobs write their models
//! into; it returns an [`UpHandle`] with every bound address and a shutdown.
//!
//! `cumulus up`, `cumulus train` and `cumulus train --plan` are thin callers of it, so a job runs
//! the same way whichever entry point a user takes; the serving half (gateway, GPU executor)
//! joins here. This crate sits above trainer, runtime and param-store (DESIGN.md §3:
//! `cli -> control -> {trainer, inference, param-store, runtime, gpu}`), and below the binary.
//!
//! ```no_run
//! # async fn demo(job: cumulus_trainer::job::JobSpec) -> Result<(), cumulus_control::ControlError> {
//! let dir = std::env::temp_dir().join("cumulus-demo");
//! let mut config = cumulus_control::UpConfig::new(dir);
//! config.http = Some("127.0.0.1:0".parse().unwrap());
//! let up = cumulus_control::run(config).await?;
//! println!("jobs at http://{}/v1/jobs", up.http_addr.unwrap());
//! let id = up.jobs().submit(job).expect("a runnable job");
//! let ended = up.jobs().wait(&id).await.expect("it was just submitted");
//! println!("{id}: {:?}", ended.state);
//! up.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use cumulus_inference::gpu::GpuExecutor;
use cumulus_inference::server::{ServeConfig, ServeHandle};
use cumulus_param_store::{ShardConfig, ShardHandle};
use cumulus_runtime::{CancellationToken, CumulusConfig, Platform};
use cumulus_service::auth::BearerTokens;
use cumulus_service::telemetry::{PrometheusHandle, metrics_router};
use cumulus_trainer::fleet::PlatformFleet;
use cumulus_trainer::jobs::confine::Confinement;
use cumulus_trainer::jobs::{JobManager, ManagerConfig, http};
use tokio::task::JoinHandle;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("parameter store: {0}")]
    Store(#[from] cumulus_param_store::StoreError),
    #[error("function platform: {0}")]
    Platform(#[from] cumulus_runtime::RuntimeError),
    #[error("binding the HTTP API to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid control-plane settings: {0}")]
    Config(String),
    #[error("inference gateway: {0}")]
    Serve(#[from] cumulus_inference::server::ServeError),
    #[error("{0}")]
    Gpu(String),
    #[error("model repository {path}: {source}")]
    Models {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the parameter store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// One shard in this process, its log and snapshots under `<work_dir>/param-store`.
    Embedded,
    /// Running `cumulus param-store` shards, in shard order.
    External(Vec<String>),
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// `cumulus.toml`: pricing, the function platform, auth.
    pub config: CumulusConfig,
    /// The HTTP API (job API and `/metrics`); `None` serves no HTTP (`cumulus train`).
    pub http: Option<SocketAddr>,
    /// Jobs work under `<work_dir>/jobs/<id>`; an embedded shard keeps its files here too.
    pub work_dir: PathBuf,
    pub store: StoreChoice,
    /// Whether an embedded shard syncs its log at every push. It lives and dies with this
    /// process, so by default it does not: a crash ends its jobs with it.
    pub embedded_fsync: bool,
    /// Jobs that run at once; more wait in the queue.
    pub max_running_jobs: usize,
    /// Jobs running or queued; more are refused.
    pub max_jobs: usize,
    /// The process's Prometheus recorder, rendered at `/metrics`.
    pub prometheus: Option<PrometheusHandle>,
    /// The inference gateway, when it is part of this control plane.
    pub serve: Option<ServeSettings>,
}

/// The inference gateway of a control plane.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The model repository; `<work_dir>/models` when absent. Jobs without an `output` write
    /// their model here, ready to be loaded.
    pub models: Option<PathBuf>,
    /// KServe V2 REST (and `/metrics`).
    pub http: SocketAddr,
    /// KServe V2 gRPC.
    pub grpc: SocketAddr,
}

impl UpConfig {
    /// The embedded default: built-in platform settings, one in-process shard, no HTTP.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            config: CumulusConfig::default(),
            http: None,
            work_dir: work_dir.into(),
            store: StoreChoice::Embedded,
            embedded_fsync: false,
            max_running_jobs: 2,
            max_jobs: 16,
            prometheus: None,
            serve: None,
        }
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct UpHandle {
    /// The bound address of the HTTP API, when it serves one.
    pub http_addr: Option<SocketAddr>,
    /// Parameter-store shard addresses, in shard order.
    pub store_addrs: Vec<String>,
    pub work_dir: PathBuf,
    /// The inference gateway's REST and gRPC addresses, when it serves.
    pub inference: Option<(SocketAddr, SocketAddr)>,
    /// The gateway's model repository, when it serves.
    pub models: Option<PathBuf>,
    jobs: JobManager,
    fleet: PlatformFleet,
    shard: Option<ShardHandle>,
    server: Option<(CancellationToken, JoinHandle<std::io::Result<()>>)>,
    gateway: Option<ServeHandle>,
    gpu: Option<GpuExecutor>,
}

/// Starts the control plane.
pub async fn run(up: UpConfig) -> Result<UpHandle, ControlError> {
    if up.max_running_jobs == 0 || up.max_jobs < up.max_running_jobs {
        return Err(ControlError::Config(
            "the running-job limit must be at least 1 and at most the job limit".into(),
        ));
    }
    let tokens = BearerTokens::new(up.config.auth.tokens.clone());
    let (shard, store_addrs) = match &up.store {
        StoreChoice::Embedded => {
            let mut shard_config = ShardConfig::new(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                up.work_dir.join("param-store"),
            );
            shard_config.wal_fsync = up.embedded_fsync;
            let shard = cumulus_param_store::run(shard_config).await?;
            let addr = shard.addr.to_string();
            (Some(shard), vec![addr])
        }
        StoreChoice::External(addrs) if addrs.is_empty() => {
            return Err(ControlError::Config(
                "no parameter-store shard given".into(),
            ));
        }
        StoreChoice::External(addrs) => (None, addrs.clone()),
    };
    let platform = match Platform::new(up.config.clone()) {
        Ok(p) => p,
        Err(e) => {
            if let Some(shard) = shard {
                let _ = shard.stop().await;
            }
            return Err(e.into());
        }
    };
    let gpu = match GpuExecutor::start(&up.config.gpu, &up.work_dir).await {
        Ok(g) => g,
        Err(e) => {
            if let Some(shard) = shard {
                let _ = shard.stop().await;
            }
            platform.shutdown().await;
            return Err(ControlError::Gpu(e));
        }
    };
    let fleet = PlatformFleet::new(platform.clone());
    let models = match &up.serve {
        Some(s) => {
            let dir = s
                .models
                .clone()
                .unwrap_or_else(|| up.work_dir.join("models"));
            std::fs::create_dir_all(&dir).map_err(|source| ControlError::Models {
                path: dir.clone(),
                source,
            })?;
            Some(dir)
        }
        None => None,
    };
    let mut manager_config = ManagerConfig::new(up.work_dir.join("jobs"), store_addrs.clone());
    manager_config.max_running = up.max_running_jobs;
    manager_config.max_active = up.max_jobs;
    manager_config.models = models.clone();
    manager_config.gpu = gpu.as_ref().map(|g| g.socket.clone());
    // Jobs that come over the network read and write only where the operator allows.
    if up.http.is_some() {
        let storage = &up.config.storage;
        let own: Vec<PathBuf> = std::iter::once(up.work_dir.join("jobs"))
            .chain(models.clone())
            .collect();
        let _ = std::fs::create_dir_all(up.work_dir.join("jobs"));
        manager_config.confinement = Some(Confinement {
            read_roots: storage
                .data_roots
                .iter()
                .cloned()
                .chain(own.clone())
                .collect(),
            write_roots: storage.output_roots.iter().cloned().chain(own).collect(),
        });
    }
    let jobs = JobManager::new(manager_config, std::sync::Arc::new(fleet.clone()));

    let mut handle = UpHandle {
        http_addr: None,
        store_addrs,
        work_dir: up.work_dir.clone(),
        inference: None,
        models: models.clone(),
        jobs,
        fleet,
        shard,
        server: None,
        gateway: None,
        gpu,
    };
    if let (Some(s), Some(dir)) = (&up.serve, models) {
        let started = cumulus_inference::server::run(ServeConfig {
            models: dir,
            http: s.http,
            grpc: s.grpc,
            config: up.config.clone(),
            platform: Some(platform),
            prometheus: up.prometheus.clone(),
            gpu: handle.gpu.as_ref().map(|g| g.socket.clone()),
        })
        .await;
        match started {
            Ok(gateway) => {
                handle.inference = Some((gateway.http_addr, gateway.grpc_addr));
                handle.gateway = Some(gateway);
            }
            Err(e) => {
                handle.shutdown().await;
                return Err(e.into());
            }
        }
    }
    if let Some(addr) = up.http {
        if !tokens.required() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the job API listens beyond this machine without bearer tokens ([auth] tokens)");
        }
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(source) => {
                handle.shutdown().await;
                return Err(ControlError::Bind { addr, source });
            }
        };
        let bound = listener
            .local_addr()
            .map_err(|source| ControlError::Bind { addr, source })?;
        let app = http::router(handle.jobs.clone(), tokens).merge(metrics_router(up.prometheus));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        handle.http_addr = Some(bound);
        handle.server = Some((stop, task));
        tracing::info!(addr = %bound, auth = tokens_required(&up.config), "control plane up");
    }
    Ok(handle)
}

fn tokens_required(config: &CumulusConfig) -> bool {
    !config.auth.tokens.is_empty()
}

impl UpHandle {
    /// The job manager: submit, list, watch, cancel.
    pub fn jobs(&self) -> &JobManager {
        &self.jobs
    }

    /// Where jobs' workers run (the trial runs of `--plan` reserve their workers here).
    pub fn fleet(&self) -> &PlatformFleet {
        &self.fleet
    }

    /// The function platform.
    pub fn platform(&self) -> &Platform {
        self.fleet.platform()
    }

    /// Refuses new jobs, cancels the running ones and waits until each has written its model,
    /// then stops the HTTP API, the platform's instances and the embedded shard.
    pub async fn shutdown(mut self) {
        tracing::info!("control plane stopping: cancelling running jobs");
        self.jobs.shutdown().await;
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
        if let Some((stop, task)) = self.server.take() {
            stop.cancel();
            match task.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP API ended with an error"),
                Err(e) => tracing::warn!(error = %e, "the HTTP API task failed"),
                Ok(Ok(())) => {}
            }
        }
        self.fleet.platform().shutdown().await;
        if let Some(gpu) = self.gpu.take() {
            gpu.stop().await;
        }
        if let Some(shard) = self.shard.take()
            && let Err(e) = shard.stop().await
        {
            tracing::warn!(error = %e, "stopping the parameter store");
        }
        tracing::info!("control plane stopped");
    }
}
