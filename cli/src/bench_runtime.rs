//! `cumulus bench runtime`: the function platform's benchmark (cold start, warm overhead against a
//! direct call, throughput) and, with `--keepalive`, the keep-alive policy comparison on a generated
//! Azure-like trace. Prints a table and writes JSON.

use std::path::PathBuf;

use anyhow::Context;
use cumulus_runtime::CumulusConfig;
use cumulus_runtime::bench::{
    RuntimeBenchOptions, keepalive_table, run_keepalive, run_runtime, runtime_table,
};
use cumulus_runtime::keepalive::TraceParams;

/// Arguments of `cumulus bench runtime`.
#[derive(Debug, clap::Args)]
pub struct RuntimeBenchArgs {
    /// Platform configuration (`cumulus.toml`); defaults apply when absent.
    #[arg(long, env = "CUMULUS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Write the results as JSON to this file.
    #[arg(long, env = "CUMULUS_BENCH_OUT")]
    pub out: Option<PathBuf>,

    /// Run the keep-alive comparison (pure simulation, no processes) instead of the process benchmark.
    #[arg(long, env = "CUMULUS_BENCH_KEEPALIVE")]
    pub keepalive: bool,

    /// Cold starts to measure.
    #[arg(long, env = "CUMULUS_BENCH_COLD_SAMPLES", default_value_t = 10)]
    pub cold_samples: usize,

    /// Warm invocations to measure (and as many direct calls).
    #[arg(long, env = "CUMULUS_BENCH_WARM_SAMPLES", default_value_t = 300)]
    pub warm_samples: usize,

    /// Invocations of the throughput run.
    #[arg(long, env = "CUMULUS_BENCH_INVOCATIONS", default_value_t = 3000)]
    pub invocations: usize,

    /// Concurrent callers of the throughput run.
    #[arg(long, env = "CUMULUS_BENCH_CALLERS", default_value_t = 4)]
    pub callers: usize,

    /// Instances of the throughput run.
    #[arg(long, env = "CUMULUS_BENCH_INSTANCES", default_value_t = 2)]
    pub instances: usize,

    /// Memory tier of the benchmark functions, MB (1769 MB = 1 vCPU).
    #[arg(long, env = "CUMULUS_BENCH_MEMORY_MB", default_value_t = 1769)]
    pub memory_mb: u32,

    /// Seed of the generated trace (keep-alive comparison).
    #[arg(long, env = "CUMULUS_BENCH_SEED", default_value_t = 2019)]
    pub seed: u64,

    /// Functions in the generated trace.
    #[arg(long, env = "CUMULUS_BENCH_TRACE_FUNCTIONS", default_value_t = 200)]
    pub trace_functions: usize,

    /// Length of the generated trace, hours.
    #[arg(long, env = "CUMULUS_BENCH_TRACE_HOURS", default_value_t = 168)]
    pub trace_hours: u64,
}

/// Runs the benchmark, prints its table, writes JSON.
pub fn run(args: RuntimeBenchArgs) -> anyhow::Result<()> {
    let json = if args.keepalive {
        let trace = TraceParams {
            seed: args.seed,
            functions: args.trace_functions,
            hours: args.trace_hours,
        };
        let report = run_keepalive(trace);
        print!("{}", keepalive_table(&report));
        serde_json::to_string_pretty(&report)?
    } else {
        let config = match &args.config {
            Some(path) => CumulusConfig::load(path)?,
            None => CumulusConfig::default(),
        };
        let options = RuntimeBenchOptions {
            config,
            cold_samples: args.cold_samples.max(1),
            warm_samples: args.warm_samples.max(1),
            throughput_invocations: args.invocations.max(1),
            throughput_callers: args.callers.max(1),
            throughput_instances: args.instances.max(1),
            memory_mb: args.memory_mb,
            ..RuntimeBenchOptions::default()
        };
        let runtime = tokio_runtime()?;
        let report = runtime.block_on(run_runtime(options))?;
        print!("{}", runtime_table(&report));
        serde_json::to_string_pretty(&report)?
    };
    if let Some(out) = &args.out {
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn tokio_runtime() -> anyhow::Result<cumulus_runtime::bench::BenchRuntime> {
    cumulus_runtime::bench::bench_runtime().context("starting the Tokio runtime")
}
