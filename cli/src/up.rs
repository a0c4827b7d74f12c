//! `cumulus up`: the local all-in-one control plane (DESIGN.md §2) — parameter store, function
//! platform, job API and the inference gateway — assembled by [`cumulus_control::run`]. It prints the address of each endpoint, one per line, and serves
//! until Ctrl-C or SIGTERM; then it refuses new jobs, cancels the running ones (their workers
//! stop at once, wherever they wait), lets each write its model, and stops.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use cumulus_control::{ServeSettings, StoreChoice, UpConfig};
use cumulus_runtime::CumulusConfig;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Platform, pricing and auth file (cumulus.toml); built-in defaults without it.
    #[arg(long, env = "CUMULUS_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the job API and /metrics; port 0 picks a free port (the printed URL shows
    /// which).
    #[arg(long, env = "CUMULUS_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Working folder for the parameter store and the jobs (each job's model goes to
    /// `<work-dir>/jobs/<id>/model` unless its file names an `output`); a new folder under the
    /// system's temporary folder when absent, kept after exit.
    #[arg(long, env = "CUMULUS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Parameter-store shards to use instead of the embedded one (comma-separated
    /// `host:port`, in shard order).
    #[arg(long, env = "CUMULUS_STORE", value_delimiter = ',')]
    store: Vec<String>,
    /// Jobs that run at once; more wait in the queue.
    #[arg(long, env = "CUMULUS_MAX_RUNNING_JOBS", default_value_t = 2)]
    max_running_jobs: usize,
    /// Jobs running or queued; more are refused with 429.
    #[arg(long, env = "CUMULUS_MAX_JOBS", default_value_t = 16)]
    max_jobs: usize,
    /// The inference gateway's model repository; `<work-dir>/models` when absent. Jobs without
    /// an `output` write their model there, ready to be loaded (`POST
    /// /v2/repository/models/<id>/load`).
    #[arg(long, env = "CUMULUS_MODELS")]
    models: Option<PathBuf>,
    /// The inference gateway's KServe V2 REST endpoint.
    #[arg(long, env = "CUMULUS_SERVE_HTTP", default_value = "127.0.0.1:8000")]
    serve_http: SocketAddr,
    /// The inference gateway's KServe V2 gRPC endpoint.
    #[arg(long, env = "CUMULUS_SERVE_GRPC", default_value = "127.0.0.1:8001")]
    serve_grpc: SocketAddr,
    /// Run without the inference gateway.
    #[arg(long, env = "CUMULUS_NO_SERVE")]
    no_serve: bool,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(file) => CumulusConfig::load(file)?,
        None => CumulusConfig::default(),
    };
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("cumulus-up-")
            .tempdir()
            .context("creating a working folder")?
            .keep(),
    };
    let prometheus = crate::telemetry::prometheus()?;
    let mut up = UpConfig::new(&work_dir);
    up.config = config;
    up.http = Some(args.http);
    up.store = if args.store.is_empty() {
        StoreChoice::Embedded
    } else {
        StoreChoice::External(args.store)
    };
    up.max_running_jobs = args.max_running_jobs;
    up.max_jobs = args.max_jobs;
    up.prometheus = Some(prometheus);
    up.serve = (!args.no_serve).then(|| ServeSettings {
        models: args.models.clone(),
        http: args.serve_http,
        grpc: args.serve_grpc,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let handle = cumulus_control::run(up).await?;
        let http = handle
            .http_addr
            .context("the control plane serves HTTP when asked to")?;
        // Scripts read these lines to find the endpoints; flush so a pipe sees them at once.
        let mut out = std::io::stdout().lock();
        writeln!(out, "jobs http://{http}/v1/jobs")?;
        writeln!(out, "metrics http://{http}/metrics")?;
        if let Some((rest, grpc)) = handle.inference {
            writeln!(out, "inference http://{rest}/v2")?;
            writeln!(out, "inference-grpc {grpc}")?;
        }
        if let Some(models) = &handle.models {
            writeln!(out, "models {}", models.display())?;
        }
        writeln!(out, "param-store {}", handle.store_addrs.join(","))?;
        writeln!(out, "work-dir {}", handle.work_dir.display())?;
        out.flush()?;
        drop(out);
        cumulus_service::shutdown::signal().await;
        handle.shutdown().await;
        Ok(())
    })
}
