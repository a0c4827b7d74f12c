//! `cumulus fn <kind>`: one function instance, an HTTP server with `POST /invoke` and `GET /healthz`.
//! Started by the platform (local processes, Knative, OpenFaaS), never by hand.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cumulus_runtime::instance::{FunctionRegistry, InstanceOptions, run_until_signal};

/// Arguments of `cumulus fn`.
#[derive(Debug, clap::Args)]
pub struct FnArgs {
    /// The function kind to run: `builtin-echo` (test and benchmark kind), or a kind registered by
    /// the trainer or the inference crate.
    pub kind: String,

    /// Address to listen on. Default: 0.0.0.0:$PORT when PORT is set (Knative), else 127.0.0.1:8080.
    #[arg(long, env = "CUMULUS_FN_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Port to listen on, on all interfaces; Knative and OpenFaaS set PORT.
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// Once serving, write the bound address to this file (used with `--listen 127.0.0.1:0`).
    #[arg(long, env = "CUMULUS_FN_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Invocations this instance runs at once; more are answered 429.
    #[arg(long, env = "CUMULUS_FN_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// Largest accepted payload, bytes.
    #[arg(long, env = "CUMULUS_FN_MAX_BODY_BYTES", default_value_t = 6 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Exit when the parent process exits (set by the local platform).
    #[arg(long, env = "CUMULUS_FN_EXIT_WITH_PARENT")]
    pub exit_with_parent: bool,
}

/// The kinds this binary can run. Crates that own a kind register it here.
fn registry() -> FunctionRegistry {
    let mut registry = FunctionRegistry::with_builtins();
    registry.register(
        cumulus_trainer::worker::KIND,
        cumulus_trainer::worker::TrainWorker,
    );
    registry.register(
        cumulus_inference::stage::KIND,
        cumulus_inference::stage::InferStage::default(),
    );
    registry
}

/// Serves until SIGTERM (drains) or until the parent goes away.
pub fn run(args: FnArgs) -> anyhow::Result<()> {
    let listen = match (args.listen, args.port) {
        (Some(addr), _) => addr,
        (None, Some(port)) => SocketAddr::from(([0, 0, 0, 0], port)),
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let options = InstanceOptions {
        listen,
        addr_file: args.addr_file,
        concurrency: args.concurrency.max(1),
        max_body_bytes: args.max_body_bytes,
        exit_with_parent: args.exit_with_parent,
    };
    run_until_signal(&registry(), &args.kind, options)
        .with_context(|| format!("function instance {}", args.kind))
}
