//! `cumulus`: one binary, one subcommand per role (DESIGN.md §2). This file only parses arguments
//! and calls into the libraries; every role lives in its crate.

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the parameter store and the workers allocate and free
/// megabyte-sized push and pull buffers at every step, which glibc serves with mmap/munmap and
/// fresh page faults each time (a fifth of the exchange benchmark's CPU time in `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench_runtime;
mod bench_serve;
mod data;
mod function;
mod gpu;
mod jobs;
mod models;
mod param_store;
mod partition;
mod plan;
mod serve;
mod telemetry;
mod train;
mod up;

/// Cumulus: serverless training and serving of ML models.
#[derive(Debug, Parser)]
#[command(name = "cumulus", version, propagate_version = true)]
struct Cli {
    /// Log filter, as RUST_LOG (e.g. `info`, `cumulus_param_store=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,

    /// Write logs as JSON lines instead of text.
    #[arg(long, env = "CUMULUS_LOG_JSON", global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a training job to the end on the embedded default, with a progress bar; `--plan`
    /// predicts its time and cost for several worker counts and memory tiers first.
    Train(train::TrainArgs),
    /// Work with the model zoo and model folders.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Inspect dataset files as a training job would read them.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Run a benchmark suite; each prints its table and writes JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one function instance (started by the platform, not by hand).
    Fn(function::FnArgs),
    /// Run one shard of the parameter store (gRPC).
    ParamStore(param_store::ParamStoreArgs),
    /// Serve a model repository over KServe V2 REST and gRPC, with adaptive batching.
    Serve(serve::ServeArgs),
    /// Run the local control plane (parameter store, function platform, job API, /metrics) until
    /// Ctrl-C or SIGTERM.
    Up(up::UpArgs),
    /// Submit a job file to a running control plane; prints the job id.
    Submit(jobs::SubmitArgs),
    /// List, watch and cancel jobs on a running control plane.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Plan a model's layer groups and memory tiers under its SLO (exact MIQP solve).
    Partition(partition::PartitionArgs),
    /// Own one GPU's CUDA context and run the node's functions' work on it.
    GpuExecutor(gpu::GpuExecutorArgs),
}

/// The benchmark suites (`cumulus bench <suite>`).
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The function platform: cold start, warm overhead, throughput; `--keepalive` compares policies.
    Runtime(bench_runtime::RuntimeBenchArgs),
    /// The parameter store against Redis: sparse push/pull exchanges of W workers.
    ParamStore(param_store::BenchParamStoreArgs),
    /// The partitioner's solve time over a grid of random instances.
    Partition(partition::BenchPartitionArgs),
    /// Partition plans served as pipelines: optimal vs one function, predicted vs measured.
    Plans(partition::BenchPlansArgs),
    /// An open-loop load against a KServe V2 server, swept to its maximum sustainable rate.
    Serve(bench_serve::BenchServeArgs),
}

/// An error that ends the process with a status of its own (an interrupted job: 128 + the
/// signal's number), not the generic 1.
#[derive(Debug)]
pub(crate) struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            match e.downcast_ref::<Exit>() {
                Some(exit) => std::process::ExitCode::from(exit.code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// The whole cause chain on one line, each cause once: many library errors already include
/// their source in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.log_level, cli.log_json)?;
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Models(command) => models::run(command),
        Command::Data(command) => data::run(command),
        Command::Bench(suite) => match suite {
            BenchCommand::Runtime(args) => bench_runtime::run(args),
            BenchCommand::ParamStore(args) => param_store::bench(args),
            BenchCommand::Partition(args) => partition::bench(args),
            BenchCommand::Plans(args) => partition::bench_plans(args),
            BenchCommand::Serve(args) => bench_serve::run(args),
        },
        Command::Fn(args) => function::run(args),
        Command::ParamStore(args) => param_store::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Up(args) => up::run(args),
        Command::Submit(args) => jobs::submit(args),
        Command::Jobs(command) => jobs::run(command),
        Command::Partition(args) => partition::run(args),
        Command::GpuExecutor(args) => gpu::run(args),
    }
}
