//! `cumulus partition` (plan layer groups and memory tiers for an instance) and `cumulus bench
//! partition` (the solver's time over a grid of random instances) and `cumulus bench plans`
//! (plans served and measured against their prediction): argument parsing and printing
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

/// What to profile: the flags both `cumulus partition --model` and `cumulus bench plans` take.
struct ProfileFlags<'a> {
    config: Option<&'a std::path::Path>,
    tiers: &'a [u32],
    batch: usize,
    slo_ms: f64,
    repeats: u32,
    max_functions: usize,
    base_memory_mb: u32,
}

impl<'a> From<&'a PartitionArgs> for ProfileFlags<'a> {
    fn from(a: &'a PartitionArgs) -> Self {
        Self {
            config: a.config.as_deref(),
            tiers: &a.tiers,
            batch: a.batch,
            slo_ms: a.slo_ms,
            repeats: a.repeats,
            max_functions: a.max_functions,
            base_memory_mb: a.base_memory_mb,
        }
    }
}

/// The settings of a profile from the flags and `config`.
fn settings(args: &ProfileFlags<'_>, config: &CumulusConfig) -> anyhow::Result<ProfileSettings> {
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
        args.tiers.to_vec()
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

fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<CumulusConfig> {
    Ok(match file {
        Some(file) => CumulusConfig::load(file)?,
        None => CumulusConfig::default(),
    })
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// An instance file (`cumulus partition --instance-out`, or written by hand).
fn read_instance(file: &std::path::Path) -> anyhow::Result<Instance> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    Instance::from_json(&text).with_context(|| format!("{}", file.display()))
}

/// Profiles `dir` on `platform`.
async fn profile_on(
    platform: &Platform,
    dir: PathBuf,
    settings: &ProfileSettings,
) -> anyhow::Result<Instance> {
    eprintln!(
        "profiling {} at {:?} MB, batch {}, {} runs per layer",
        dir.display(),
        settings.tiers,
        settings.batch,
        settings.repeats
    );
    Ok(profile_model(platform, dir, settings).await?)
}

/// Profiles `dir` on a function platform started from the flags' config.
fn profile(args: &PartitionArgs, dir: &std::path::Path) -> anyhow::Result<Instance> {
    let flags = ProfileFlags::from(args);
    let config = load_config(flags.config)?;
    let settings = settings(&flags, &config)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}: cannot read", dir.display()))?;
    async_runtime()?.block_on(async move {
        let platform = Platform::new(config)?;
        let instance = profile_on(&platform, dir, &settings).await;
        platform.shutdown().await;
        instance
    })
}

pub fn run(args: PartitionArgs) -> anyhow::Result<()> {
    let instance = match (&args.instance, &args.model) {
        (Some(file), _) => read_instance(file)?,
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

/// Partition plans served and measured: for each SLO the optimal plan against the whole model in
/// one function at the smallest tier that fits and at the largest tier, each run as a pipeline of
/// infer-stage functions; predicted cost and latency beside what was billed and measured.
#[derive(Debug, Args)]
pub struct BenchPlansArgs {
    /// The model folder to profile and serve.
    #[arg(long, env = "CUMULUS_PARTITION_MODEL")]
    model: PathBuf,
    /// cumulus.toml (tiers, prices, the platform); built-in defaults without it.
    #[arg(long, env = "CUMULUS_CONFIG")]
    config: Option<PathBuf>,
    /// Latency SLOs to plan for, ms (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_SLO_MS",
        value_delimiter = ',',
        required = true
    )]
    slo_ms: Vec<f64>,
    /// Memory tiers to profile and plan over (comma-separated MB); the config's from 512 MB up to
    /// 4096 MB when absent.
    #[arg(long, env = "CUMULUS_PARTITION_TIERS", value_delimiter = ',')]
    tiers: Vec<u32>,
    /// Rows per request.
    #[arg(long, env = "CUMULUS_PARTITION_BATCH", default_value_t = 1)]
    batch: usize,
    /// Timed runs per layer and tier in the profile.
    #[arg(long, env = "CUMULUS_PARTITION_REPEATS", default_value_t = 20)]
    repeats: u32,
    /// Most functions a plan may use.
    #[arg(long, env = "CUMULUS_PARTITION_MAX_FUNCTIONS", default_value_t = 8)]
    max_functions: usize,
    /// Memory of an instance before any weights, MB.
    #[arg(long, env = "CUMULUS_PARTITION_BASE_MEMORY_MB", default_value_t = 100)]
    base_memory_mb: u32,
    /// Use this profiled instance (`cumulus partition --instance-out`) instead of profiling.
    #[arg(long, env = "CUMULUS_PARTITION_INSTANCE")]
    instance: Option<PathBuf>,
    /// Timed requests per plan, one at a time, after a warm-up request.
    #[arg(long, env = "CUMULUS_BENCH_REQUESTS", default_value_t = 30)]
    requests: usize,
    /// Write the rows as JSON to this file.
    #[arg(long, env = "CUMULUS_BENCH_OUT")]
    out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct PlanRow {
    slo_ms: f64,
    candidate: cumulus_inference::plan_bench::Candidate,
    measured: cumulus_inference::plan_bench::Measurement,
}

pub fn bench_plans(args: BenchPlansArgs) -> anyhow::Result<()> {
    use cumulus_inference::plan_bench::{candidates, groups_line, measure, percent_off};
    anyhow::ensure!(
        args.slo_ms.iter().all(|s| s.is_finite() && *s > 0.0),
        "--slo-ms: each SLO must be a positive number"
    );
    let flags = ProfileFlags {
        config: args.config.as_deref(),
        tiers: &args.tiers,
        batch: args.batch,
        slo_ms: args.slo_ms[0],
        repeats: args.repeats,
        max_functions: args.max_functions,
        base_memory_mb: args.base_memory_mb,
    };
    let config = load_config(flags.config)?;
    let settings = settings(&flags, &config)?;
    let dir = args
        .model
        .canonicalize()
        .with_context(|| format!("{}: cannot read", args.model.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .to_string();
    let given = args.instance.as_deref().map(read_instance).transpose()?;
    let rows = async_runtime()?.block_on(async {
        let platform = Platform::new(config)?;
        let result = async {
            let base = match given {
                Some(i) => i,
                None => profile_on(&platform, dir.clone(), &settings).await?,
            };
            let mut rows = Vec::new();
            // A plan chosen at several SLOs is served once.
            let mut seen: Vec<(
                cumulus_partitioner::Plan,
                cumulus_inference::plan_bench::Measurement,
            )> = Vec::new();
            for &slo_ms in &args.slo_ms {
                let instance = Instance {
                    slo_ms,
                    ..base.clone()
                };
                let found = candidates(&instance);
                if !found.iter().any(|c| c.kind == "optimal") {
                    let why = solve(&instance)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    eprintln!("SLO {slo_ms} ms: no plan meets it ({why})");
                }
                for candidate in found {
                    let measured =
                        match seen.iter().find(|(p, _)| p.groups == candidate.plan.groups) {
                            Some((_, m)) => m.clone(),
                            None => {
                                eprintln!(
                                    "SLO {slo_ms} ms, {}: serving {}",
                                    candidate.kind,
                                    groups_line(&candidate.plan)
                                );
                                let m = measure(
                                    &platform,
                                    &name,
                                    dir.clone(),
                                    &candidate.plan,
                                    settings.batch,
                                    args.requests,
                                )
                                .await
                                .map_err(|e| {
                                    anyhow::anyhow!("serving {}: {e}", groups_line(&candidate.plan))
                                })?;
                                seen.push((candidate.plan.clone(), m.clone()));
                                m
                            }
                        };
                    rows.push(PlanRow {
                        slo_ms,
                        candidate,
                        measured,
                    });
                }
            }
            anyhow::Ok(rows)
        }
        .await;
        platform.shutdown().await;
        result
    })?;
    let mut table = comfy_table::Table::new();
    table.set_header([
        "SLO ms",
        "plan",
        "groups",
        "meets SLO",
        "predicted $/M",
        "billed $/M",
        "predicted ms",
        "measured ms (mean)",
        "p95 ms",
        "error",
        "stages: measured / predicted ms",
    ]);
    for r in &rows {
        let plan = &r.candidate.plan;
        let stages = r
            .measured
            .stage_mean_ms
            .iter()
            .zip(&plan.groups)
            .map(|(m, g)| format!("{m:.1}/{:.1}", g.latency_ms))
            .collect::<Vec<_>>()
            .join(" ");
        table.add_row([
            format!("{}", r.slo_ms),
            r.candidate.kind.to_string(),
            groups_line(plan),
            if r.candidate.feasible { "yes" } else { "no" }.to_string(),
            format!("{:.3}", plan.cost_per_request * 1e6),
            format!("{:.3}", r.measured.billed_cost_per_request * 1e6),
            format!("{:.1}", plan.latency_ms),
            format!("{:.1}", r.measured.mean_ms),
            format!("{:.1}", r.measured.p95_ms),
            format!("{:+.1}%", percent_off(r.measured.mean_ms, plan.latency_ms)),
            stages,
        ]);
    }
    println!("{table}");
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&rows).context("encoding the rows")?;
        std::fs::write(path, json).with_context(|| format!("{}: cannot write", path.display()))?;
        println!("rows written to {}", path.display());
    }
    Ok(())
}
