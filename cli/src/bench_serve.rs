//! `cumulus bench serve`: the open-loop load generator against a KServe V2 server (ours or a
//! peer). Argument parsing and printing only; the generator is `cumulus_inference::loadgen`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use cumulus_inference::loadgen::{
    self, Arrival, CostModel, LoadSpec, Payload, SweepPlan, Transport,
};
use cumulus_runtime::CumulusConfig;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalKind {
    /// Exponential gaps at the mean rate.
    Poisson,
    /// Even gaps.
    Constant,
    /// On/off periods (exponential lengths), the rate high while on.
    Bursty,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportKind {
    RestJson,
    RestBinary,
    Grpc,
}

/// Send an open-loop load (send times fixed in advance, latency measured from them) and sweep
/// rates to the maximum sustainable one (p99 within the SLO, errors under the limit).
#[derive(Debug, Args)]
pub struct BenchServeArgs {
    /// The server: `http://HOST:PORT` (REST) or the gRPC endpoint with `--transport grpc`.
    #[arg(long, env = "CUMULUS_BENCH_URL")]
    url: String,
    #[arg(
        long,
        env = "CUMULUS_BENCH_TRANSPORT",
        value_enum,
        default_value = "rest-json"
    )]
    transport: TransportKind,
    /// The model to call.
    #[arg(long, env = "CUMULUS_BENCH_MODEL")]
    model: String,
    /// Its input tensor.
    #[arg(long, env = "CUMULUS_BENCH_INPUT", default_value = "input")]
    input: String,
    /// The output to ask for (all when absent).
    #[arg(long, env = "CUMULUS_BENCH_OUTPUT")]
    output: Option<String>,
    /// The input's shape (comma-separated), the batch dimension first.
    #[arg(
        long,
        env = "CUMULUS_BENCH_SHAPE",
        value_delimiter = ',',
        default_value = "1,784"
    )]
    shape: Vec<i64>,
    /// Mean arrival rates to run (req/s, comma-separated): stepped through, then bisected
    /// between the last that held and the first that did not.
    #[arg(
        long,
        env = "CUMULUS_BENCH_RATES",
        value_delimiter = ',',
        required = true
    )]
    rates: Vec<f64>,
    #[arg(
        long,
        env = "CUMULUS_BENCH_ARRIVAL",
        value_enum,
        default_value = "poisson"
    )]
    arrival: ArrivalKind,
    /// Bursty: the on rate over the mean rate.
    #[arg(long, default_value_t = 4.0)]
    peak_to_mean: f64,
    /// Bursty: mean on and off periods, seconds.
    #[arg(long, default_value_t = 0.25)]
    on_s: f64,
    #[arg(long, default_value_t = 0.75)]
    off_s: f64,
    /// Measured seconds per rate.
    #[arg(long, env = "CUMULUS_BENCH_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Seconds per rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A rate holds when its p99 is within this, ms ...
    #[arg(long, env = "CUMULUS_BENCH_SLO_MS", default_value_t = 25.0)]
    slo_ms: f64,
    /// ... and errors stay under this fraction.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Bisection runs after the first rate that fails.
    #[arg(long, default_value_t = 3)]
    bisect_steps: usize,
    /// Seed of the schedule and the payloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Outstanding requests at most (more are counted as dropped, never delayed).
    #[arg(long, default_value_t = 2048)]
    max_in_flight: usize,
    /// Measure the CPU of this process and its descendants (the server's whole tree).
    #[arg(long, env = "CUMULUS_BENCH_SERVER_PID")]
    server_pid: Option<u32>,
    /// The server's Prometheus page, for the GB-seconds it billed.
    #[arg(long)]
    metrics_url: Option<String>,
    /// cumulus.toml whose [pricing] prices the cost per million requests.
    #[arg(long, env = "CUMULUS_CONFIG")]
    config: Option<PathBuf>,
    /// Write the sweep as JSON here.
    #[arg(long, env = "CUMULUS_BENCH_OUT")]
    out: Option<PathBuf>,
}

pub fn run(args: BenchServeArgs) -> anyhow::Result<()> {
    let pricing = match &args.config {
        Some(file) => CumulusConfig::load(file)?.pricing,
        None => CumulusConfig::default().pricing,
    };
    let payload = Payload {
        model: args.model.clone(),
        version: None,
        input: args.input.clone(),
        output: args.output.clone(),
        shape: args.shape.clone(),
        seed: args.seed,
        variants: 8,
    };
    let mut spec = LoadSpec::new(&args.url, payload);
    spec.transport = match args.transport {
        TransportKind::RestJson => Transport::RestJson,
        TransportKind::RestBinary => Transport::RestBinary,
        TransportKind::Grpc => Transport::Grpc,
    };
    let first = args.rates.first().copied().unwrap_or(1.0);
    spec.arrival = match args.arrival {
        ArrivalKind::Poisson => Arrival::Poisson { rate: first },
        ArrivalKind::Constant => Arrival::Constant { rate: first },
        ArrivalKind::Bursty => Arrival::bursty(first, args.peak_to_mean, args.on_s, args.off_s)?,
    };
    spec.duration_s = args.duration;
    spec.warmup_s = args.warmup;
    spec.seed = args.seed;
    spec.slo_ms = args.slo_ms;
    spec.max_in_flight = args.max_in_flight;
    spec.server_pid = args.server_pid;
    spec.metrics_url = args.metrics_url.clone();
    spec.cost = CostModel {
        gb_second_usd: pricing.gb_second_usd,
        invocation_usd: pricing.invocation_usd,
        ..CostModel::default()
    };
    spec.validate()?;
    let mut plan = SweepPlan::new(args.rates.clone());
    plan.bisect_steps = args.bisect_steps;
    plan.max_error_rate = args.max_error_rate;
    plan.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(loadgen::sweep(&spec, &plan))?;
    println!("{}", loadgen::sweep_table(&result));
    match result.max_sustainable_rate {
        Some(rate) => println!(
            "maximum sustainable rate: {rate:.0} req/s (p99 <= {} ms, errors < {:.0}%)",
            args.slo_ms,
            args.max_error_rate * 100.0
        ),
        None => println!("no rate tried held its SLO"),
    }
    if let Some(path) = &args.out {
        let json = serde_json::json!({ "spec": spec, "plan": plan, "sweep": result });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        println!("sweep written to {}", path.display());
    }
    Ok(())
}
