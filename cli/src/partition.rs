//! `cumulus partition` (plan layer groups and memory tiers for an instance) and `cumulus bench
//! partition` (the solver's time over a grid of random instances): argument parsing and printing
//! only; the solver is `cumulus-partitioner`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use cumulus_partitioner::bench::{GridConfig, grid_table, run_grid};
use cumulus_partitioner::{Instance, PartitionError, export_lp, solve};

/// Plan a model's layer groups and each group's memory tier under its SLO (AMPS-Inf's MIQP,
/// solved exactly).
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The instance: layers with sizes and per-tier times, tiers, prices, SLO, limits (JSON).
    #[arg(long, env = "CUMULUS_PARTITION_INSTANCE")]
    instance: PathBuf,
    /// Print the plan as JSON (`cost_per_request`, `latency_ms`, `groups`) instead of a table.
    #[arg(long, env = "CUMULUS_PARTITION_JSON")]
    json: bool,
    /// Also write the same MIQP in CPLEX LP format (objective in $ per million requests), for
    /// SCIP, Gurobi or CPLEX to confirm the optimum.
    #[arg(long, env = "CUMULUS_PARTITION_EXPORT_LP")]
    export_lp: Option<PathBuf>,
}

pub fn run(args: PartitionArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.instance)
        .with_context(|| format!("{}: cannot read", args.instance.display()))?;
    let instance =
        Instance::from_json(&text).with_context(|| format!("{}", args.instance.display()))?;
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
