//! `cumulus gpu-executor`: the process that owns one GPU's CUDA context and runs the work of the
//! node's function instances (`--probe` lists usable GPUs). Argument parsing only; the executor
//! is `cumulus-gpu`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use cumulus_gpu::{BackendChoice, ExecutorConfig, Listen};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    /// CUDA when a usable device is found, else the CPU (the log says why).
    Auto,
    Cpu,
    /// CUDA or refuse to start.
    Cuda,
}

#[derive(Debug, Args)]
pub struct GpuExecutorArgs {
    /// Print the usable GPUs (name, compute capability, memory) and exit 0, or why there is
    /// none and exit 1.
    #[arg(long, env = "CUMULUS_GPU_PROBE")]
    probe: bool,
    /// Unix socket the tenants connect to.
    #[arg(long, env = "CUMULUS_GPU_SOCKET", conflicts_with = "tcp")]
    socket: Option<PathBuf>,
    /// Loopback TCP address instead of a socket (port 0 picks one).
    #[arg(long, env = "CUMULUS_GPU_TCP")]
    tcp: Option<SocketAddr>,
    /// Which backend runs the work.
    #[arg(long, env = "CUMULUS_GPU_BACKEND", value_enum, default_value = "auto")]
    backend: Backend,
    /// CUDA device ordinal.
    #[arg(long, env = "CUMULUS_GPU_DEVICE", default_value_t = 0)]
    device: usize,
    /// Model folders tenants may name by path (repeatable); any readable path when absent.
    #[arg(
        long = "model-root",
        env = "CUMULUS_GPU_MODEL_ROOTS",
        value_delimiter = ','
    )]
    model_roots: Vec<PathBuf>,
}

pub fn run(args: GpuExecutorArgs) -> anyhow::Result<()> {
    if args.probe {
        let report = cumulus_gpu::probe();
        println!("{report}");
        std::process::exit(report.exit_code());
    }
    let mut config = ExecutorConfig::default();
    if let Some(path) = args.socket {
        config.listen = Listen::Unix(path);
    }
    if let Some(addr) = args.tcp {
        config.listen = Listen::Tcp(addr);
    }
    config.backend = match args.backend {
        Backend::Auto => BackendChoice::Auto,
        Backend::Cpu => BackendChoice::Cpu,
        Backend::Cuda => BackendChoice::Cuda,
    };
    config.device = args.device;
    config.model_roots = args.model_roots;
    config.validate().context("gpu-executor settings")?;
    let _prometheus = crate::telemetry::prometheus()?;
    cumulus_gpu::serve_until_signal(config).context("gpu executor")
}
