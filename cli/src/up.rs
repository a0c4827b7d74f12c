//! `cumulus up`: the local all-in-one control plane (DESIGN.md §2) — a parameter-store shard in
//! this process, the function platform, the job manager and the job API over HTTP. It prints the
//! address of each endpoint, one per line, and serves until Ctrl-C or SIGTERM; then it refuses
//! new jobs, cancels the running ones, waits for their workers' invocations to finish and stops.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use cumulus_runtime::CumulusConfig;
use cumulus_trainer::invoker::{Invoker, PlatformInvoker};
use cumulus_trainer::jobs::{JobManager, ManagerConfig, http};
use cumulus_trainer::worker;

use crate::train::Embedded;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Platform, pricing and auth file (cumulus.toml); built-in defaults without it.
    #[arg(long, env = "CUMULUS_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the job API; port 0 picks a free port (the printed URL shows which).
    #[arg(long, env = "CUMULUS_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Working folder for the parameter store and the jobs (each job's model goes to
    /// `<work-dir>/<id>/model` unless its file names an `output`); a new folder under the
    /// system's temporary folder when absent, kept after exit.
    #[arg(long, env = "CUMULUS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Jobs that run at once; more wait in the queue.
    #[arg(long, env = "CUMULUS_MAX_RUNNING_JOBS", default_value_t = 2)]
    max_running_jobs: usize,
    /// Jobs running or queued; more are refused with 429.
    #[arg(long, env = "CUMULUS_MAX_JOBS", default_value_t = 16)]
    max_jobs: usize,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(file) => CumulusConfig::load(file)?,
        None => CumulusConfig::default(),
    };
    anyhow::ensure!(
        args.max_running_jobs >= 1 && args.max_jobs >= args.max_running_jobs,
        "--max-running-jobs must be at least 1 and at most --max-jobs"
    );
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("cumulus-up-")
            .tempdir()
            .context("creating a working folder")?
            .keep(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config, work_dir))
}

async fn serve(args: UpArgs, config: CumulusConfig, work_dir: PathBuf) -> anyhow::Result<()> {
    let tokens = config.auth.tokens.clone();
    let embedded = Embedded::start(config, &work_dir).await?;
    let mut manager_config =
        ManagerConfig::new(work_dir.join("jobs"), vec![embedded.shard.addr.to_string()]);
    manager_config.max_running = args.max_running_jobs;
    manager_config.max_active = args.max_jobs;
    let platform = embedded.platform.clone();
    let factory = Arc::new(move |id: &str| -> Arc<dyn Invoker> {
        Arc::new(PlatformInvoker::new(platform.clone(), worker::KIND, id))
    });
    let manager = JobManager::new(manager_config, factory);

    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the job API to {}", args.http))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // Scripts read these lines to find the endpoints; flush so a pipe sees them at once.
    let mut out = std::io::stdout().lock();
    writeln!(out, "jobs http://{addr}/v1/jobs")?;
    writeln!(out, "param-store {}", embedded.shard.addr)?;
    writeln!(out, "work-dir {}", work_dir.display())?;
    out.flush()?;
    drop(out);
    tracing::info!(%addr, auth = !tokens.is_empty(), "control plane up");

    let app = http::router(manager.clone(), Some(tokens));
    let draining = manager.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: cancelling running jobs");
            // Ends every job, so event streams close and the server can drain.
            draining.shutdown().await;
        })
        .await
        .context("serving the job API");
    embedded.stop().await;
    served
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
