//! Logging and metrics set-up shared by every subcommand: `tracing` to stderr (stdout belongs to
//! each command's own output), filtered by `RUST_LOG` when set, else by `--log-level`; and the
//! process's one Prometheus recorder, installed by the roles that serve `/metrics`.

use anyhow::Context;
use cumulus_service::telemetry::PrometheusHandle;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` wins over `level` when both are given.
pub fn init(level: &str, json: bool) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec)
            .with_context(|| format!("RUST_LOG={spec:?} is not a valid log filter"))?,
        _ => EnvFilter::try_new(level)
            .with_context(|| format!("--log-level {level:?} is not a valid log filter"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Installs the Prometheus recorder and describes every crate's metrics. Call once.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    let handle = cumulus_service::telemetry::install_prometheus().map_err(anyhow::Error::msg)?;
    cumulus_param_store::metrics::describe();
    cumulus_runtime::metrics::describe();
    cumulus_trainer::metrics::describe();
    cumulus_gpu::metrics::describe();
    cumulus_inference::metrics::describe();
    Ok(handle)
}
