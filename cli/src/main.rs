//! `cumulus`: one binary, one subcommand per role (DESIGN.md §2). This file only parses arguments
//! and calls into the libraries; every role lives in its crate.

use clap::{Parser, Subcommand};

mod models;
mod param_store;
mod bench_runtime;
mod function;
mod telemetry;

/// Cumulus: serverless training and serving of ML models.
#[derive(Debug, Parser)]
#[command(name = "cumulus", version, about, long_about = None, propagate_version = true)]
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
    /// Work with the model zoo and model folders.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Run a benchmark suite; each prints its table and writes JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one shard of the parameter store (gRPC).
    ParamStore(param_store::ParamStoreArgs),
}

/// The benchmark suites (`cumulus bench <suite>`).
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The function platform: cold start, warm overhead, throughput; `--keepalive` compares policies.
    Runtime(bench_runtime::RuntimeBenchArgs),
    /// The parameter store against Redis: sparse push/pull exchanges of W workers.
    ParamStore(param_store::BenchParamStoreArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.log_level, cli.log_json)?;
    match cli.command {
        Command::Models(command) => models::run(command),
        Command::Fn(args) => function::run(args),
        Command::Bench(suite) => match suite {
            BenchCommand::Runtime(args) => bench_runtime::run(args),
            BenchCommand::ParamStore(args) => param_store::bench(args),
        },
        Command::ParamStore(args) => param_store::run(args),
    }
}
