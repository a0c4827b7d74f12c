//! `cumulus partition` (plan layer groups and memory tiers for an instance) and `cumulus bench
//! partition` (the solver's time over a grid of random instances): argument parsing and printing
//! only; the solver is `cumulus-partitioner`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use cumulus_inference::layer_profile::{ProfileSettings, profile_model};
use cumulus_partitioner::bench::{GridConfig, grid_table, run_grid};
use cumulus_partitioner::{Instance, PartitionError, export_lp, solve};
use cumulus_runtime::{CumulusConfig, Platform};

/// Plan a model's layer groups and each group's memory tier under its SLO (AMPS-Inf's MIQP,
/// solved exactly), from an instance file or by profiling a model folder.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["instance", "model"])))]
pub struct PartitionArgs {
    /// The instance: layers with sizes and per-tier times, tiers, prices, SLO, limits (JSON).
    #[arg(long, env = "CUMULUS_PARTITION_INSTANCE")]
    instance: Option<PathBuf>,
    /// Profile this model folder instead: each layer's time at each tier, measured in
    /// infer-stage function instances limited to that tier.
    #[arg(long, env = "CUMULUS_PARTITION_MODEL")]
    model: Option<PathBuf>,
    /// With --model: cumulus.toml (tiers, prices, the platform); built-in defaults without it.
    #[arg(long, env = "CUMULUS_CONFIG", requires = "model")]
    config: Option<PathBuf>,
    /// With --model: memory tiers to profile (comma-separated MB); the config's from 512 MB up
    /// to 4096 MB when absent.
    #[arg(
        long,
        env = "CUMULUS_PARTITION_TIERS",
        value_delimiter = ',',
        requires = "model"
    )]
    tiers: Vec<u32>,
    /// With --model: rows per request.
    #[arg(long, env = "CUMULUS_PARTITION_BATCH", default_value_t = 1)]
    batch: usize,
    /// With --model: the latency SLO, ms.
    #[arg(long, env = "CUMULUS_PARTITION_SLO_MS", default_value_t = 100.0)]
    slo_ms: f64,
    /// With --model: timed runs per layer and tier (their median is kept).
    #[arg(long, env = "CUMULUS_PARTITION_REPEATS", default_value_t = 20)]
    repeats: u32,
    /// With --model: most functions a plan may use.
    #[arg(long, env = "CUMULUS_PARTITION_MAX_FUNCTIONS", default_value_t = 8)]
    max_functions: usize,
    /// With --model: memory of an instance before any weights, MB.
    #[arg(long, env = "CUMULUS_PARTITION_BASE_MEMORY_MB", default_value_t = 100)]
    base_memory_mb: u32,
    /// With --model: write the measured instance (JSON) here, to plan again without profiling.
    #[arg(long, env = "CUMULUS_PARTITION_INSTANCE_OUT", requires = "model")]
    instance_out: Option<PathBuf>,
    /// Print the plan as JSON (`cost_per_request`, `latency_ms`, `groups`) instead of a table.
    #[arg(long, env = "CUMULUS_PARTITION_JSON")]
    json: bool,
    /// Also write the same MIQP in CPLEX LP format (objective in $ per million requests), for
    /// SCIP, Gurobi or CPLEX to confirm the optimum.
    #[arg(long, env = "CUMULUS_PARTITION_EXPORT_LP")]
    export_lp: Option<PathBuf>,
}

/// The settings of a profile from the flags and `config`.
fn settings(args: &PartitionArgs, config: &CumulusConfig) -> anyhow::Result<ProfileSettings> {
    let offered = &config.functions.memory_tiers_mb;
    let tiers: Vec<u32> = if args.tiers.is_empty() {
        offered
            .iter()
            .copied()
            .filter(|t| (512..=4096).contains(t))
            .collect()
    } else {
        if let Some(t) = args.tiers.iter().find(|t| !offered.contains(t)) {
            anyhow::bail!("--tiers: {t} MB is not one of functions.memory_tiers_mb {offered:?}");
        }
        args.tiers.clone()
    };
    anyhow::ensure!(!tiers.is_empty(), "no memory tier to profile");
    let max_batch = cumulus_runtime::serving::MAX_BATCH_SIZE;
    anyhow::ensure!(
        (1..=max_batch).contains(&args.batch),
        "--batch must be in 1..={max_batch}"
    );
    anyhow::ensure!(
        args.slo_ms.is_finite() && args.slo_ms > 0.0,
        "--slo-ms must be a positive number"
    );
    Ok(ProfileSettings {
        tiers,
        batch: args.batch,
        repeats: args
            .repeats
            .clamp(1, cumulus_inference::stage::MAX_PROFILE_REPEATS),
        slo_ms: args.slo_ms,
        max_functions: args.max_functions,
        base_memory_mb: args.base_memory_mb,
    })
}

/// Profiles `dir` on a function platform started from the flags' config.
fn profile(args: &PartitionArgs, dir: &std::path::Path) -> anyhow::Result<Instance> {
    let config = match &args.config {
        Some(file) => CumulusConfig::load(file)?,
        None => CumulusConfig::default(),
    };
    let settings = settings(args, &config)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}: cannot read", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let platform = Platform::new(config)?;
        eprintln!(
            "profiling {} at {:?} MB, batch {}, {} runs per layer",
            dir.display(),
            settings.tiers,
            settings.batch,
            settings.repeats
        );
        let instance = profile_model(&platform, dir, &settings).await;
        platform.shutdown().await;
        Ok(instance?)
    })
}

pub fn run(args: PartitionArgs) -> anyhow::Result<()> {
    let instance = match (&args.instance, &args.model) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            Instance::from_json(&text).with_context(|| format!("{}", file.display()))?
        }
        (None, Some(dir)) => {
            let instance = profile(&args, dir)?;
            if let Some(out) = &args.instance_out {
                std::fs::write(out, instance.to_json())
                    .with_context(|| format!("{}: cannot write", out.display()))?;
                eprintln!("instance written to {}", out.display());
            }
            instance
        }
        (None, None) => anyhow::bail!("give --instance FILE or --model DIR"),
    };
    if let Some(path) = &args.export_lp {
        let file = std::fs::File::create(path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        export_lp(&instance, &mut out).with_context(|| format!("writing {}", path.display()))?;
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("MIQP written to {}", path.display());
    }
    match solve(&instance) {
        Ok(plan) if args.json => println!("{}", plan.to_json()),
        Ok(plan) => println!("{plan}"),
        Err(PartitionError::Infeasible(why)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "infeasible": why, "reason": why.to_string() })
                );
            }
            anyhow::bail!("no plan meets the constraints: {why}");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The partitioner's solve time over a grid of seeded random instances.
#[derive(Debug, Args)]
pub struct BenchPartitionArgs {
    /// Layer counts (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_LAYERS",
        value_delimiter = ',',
        default_value = "10,25,50,100,200,400"
    )]
    layers: Vec<usize>,
    /// Tier counts (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_TIERS",
        value_delimiter = ',',
        default_value = "3,6,10"
    )]
    tiers: Vec<usize>,
    /// Function limits (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_FUNCTIONS",
        value_delimiter = ',',
        default_value = "4,8,16"
    )]
    functions: Vec<usize>,
    /// Instances per cell.
    #[arg(long, env = "CUMULUS_BENCH_INSTANCES", default_value_t = 10)]
    instances: usize,
    /// Write the rows as JSON to this file.
    #[arg(long, env = "CUMULUS_BENCH_OUT")]
    out: Option<PathBuf>,
}

pub fn bench(args: BenchPartitionArgs) -> anyhow::Result<()> {
    let config = GridConfig {
        layers: args.layers,
        tiers: args.tiers,
        max_functions: args.functions,
        instances: args.instances,
        ..GridConfig::default()
    };
    anyhow::ensure!(
        !config.layers.is_empty() && !config.tiers.is_empty() && !config.max_functions.is_empty(),
        "--layers, --tiers and --functions each need at least one value"
    );
    anyhow::ensure!(config.instances >= 1, "--instances must be at least 1");
    let rows = run_grid(&config, |row| {
        eprintln!(
            "{} layers × {} tiers × {} functions: median {:.1} µs",
            row.layers, row.tiers, row.max_functions, row.median_us
        );
    });
    println!("{}", grid_table(&rows));
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&rows).context("encoding the rows")?;
        std::fs::write(path, json).with_context(|| format!("{}: cannot write", path.display()))?;
        println!("rows written to {}", path.display());
    }
    Ok(())
}
