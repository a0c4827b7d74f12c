//! `cumulus serve --models DIR`: the KServe V2 inference gateway (REST + gRPC) over a model
//! repository, running each model in `infer-stage` functions on the function platform. It
//! prints the URL of each endpoint, one per line, and serves until Ctrl-C or SIGTERM; then it
//! drains: queued requests are answered, then it exits.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use cumulus_inference::server::ServeConfig;
use cumulus_runtime::CumulusConfig;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model repository: a folder of model folders (config.json + model.safetensors).
    #[arg(long, env = "CUMULUS_MODELS")]
    models: PathBuf,
    /// REST endpoint (KServe V2 and /metrics); port 0 picks a free port.
    #[arg(long, env = "CUMULUS_SERVE_HTTP", default_value = "127.0.0.1:8000")]
    http: SocketAddr,
    /// gRPC endpoint (inference.GRPCInferenceService).
    #[arg(long, env = "CUMULUS_SERVE_GRPC", default_value = "127.0.0.1:8001")]
    grpc: SocketAddr,
    /// cumulus.toml: [inference], [models.<name>] (SLO, batching, instances), the platform.
    #[arg(long, env = "CUMULUS_CONFIG")]
    config: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(file) => CumulusConfig::load(file)?,
        None => CumulusConfig::default(),
    };
    let prometheus = crate::telemetry::prometheus()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let handle = cumulus_inference::server::run(ServeConfig {
            models: args.models,
            http: args.http,
            grpc: args.grpc,
            config,
            platform: None,
            prometheus: Some(prometheus),
            gpu: None,
        })
        .await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "http http://{}/v2", handle.http_addr)?;
        writeln!(out, "grpc {}", handle.grpc_addr)?;
        writeln!(out, "metrics http://{}/metrics", handle.http_addr)?;
        out.flush()?;
        drop(out);
        cumulus_service::shutdown::signal().await;
        handle.shutdown().await;
        Ok(())
    })
}
