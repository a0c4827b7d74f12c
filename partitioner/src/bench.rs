//! The partitioner's benchmarks as a library, for `cumulus bench partition` and
//! `examples/partition_bench.rs`: solve times over a grid of generated instances, and an export of
//! generated instances (JSON + LP + our optimum as a solution file) with a manifest, which
//! `bench/partition/` hands to SCIP.
//!
//! Times are wall-clock medians of repeated solves of an already validated [`Problem`]; they are
//! measurements for a report, never asserted.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{PartitionError, Result};
use crate::instance::{Instance, Problem};
use crate::lp::OBJECTIVE_SCALE;
use crate::random::{self, RandomSpec};

/// The solve-time grid: every combination of the sizes, `instances` seeds each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridConfig {
    pub layers: Vec<usize>,
    pub tiers: Vec<usize>,
    pub max_functions: Vec<usize>,
    /// Instances (seeds `seed..seed + instances`) per cell.
    pub instances: usize,
    /// Solves per instance; the instance's time is their median.
    pub repeats: usize,
    pub seed: u64,
}

impl Default for GridConfig {
    fn default() -> Self {
        Self {
            layers: vec![10, 25, 50, 100, 200, 400],
            tiers: vec![3, 6, 10],
            max_functions: vec![4, 8, 16],
            instances: 10,
            repeats: 5,
            seed: 0,
        }
    }
}

/// One cell of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridRow {
    pub layers: usize,
    pub tiers: usize,
    pub max_functions: usize,
    pub instances: usize,
    /// Instances with a plan (the others were proven infeasible, which is timed too).
    pub feasible: usize,
    /// Median over the instances of each one's median solve time, in µs.
    pub median_us: f64,
    pub p90_us: f64,
    pub max_us: f64,
    /// Mean candidate (group, tier) edges, and those left for the label search.
    pub mean_candidate_groups: f64,
    pub mean_searched_groups: f64,
    /// Mean labels the search created.
    pub mean_labels: f64,
}

/// Runs the grid, calling `progress` after each cell.
pub fn run_grid(config: &GridConfig, mut progress: impl FnMut(&GridRow)) -> Vec<GridRow> {
    let mut rows = Vec::new();
    for &layers in &config.layers {
        for &tiers in &config.tiers {
            for &max_functions in &config.max_functions {
                let spec = RandomSpec {
                    layers,
                    tiers,
                    max_functions,
                    family: None,
                };
                let mut times = Vec::with_capacity(config.instances);
                let (mut feasible, mut edges, mut searched, mut labels) = (0, 0, 0, 0);
                for i in 0..config.instances as u64 {
                    let problem = Problem::new(&random::instance(&spec, config.seed + i))
                        .expect("generated instances are valid");
                    let (time, outcome) = time_solve(&problem, config.repeats);
                    times.push(time);
                    if let Ok((_, stats)) = outcome {
                        feasible += 1;
                        edges += stats.candidate_groups;
                        searched += stats.candidate_groups_searched;
                        labels += stats.labels;
                    }
                }
                times.sort_by(f64::total_cmp);
                let mean = |sum: usize| sum as f64 / feasible.max(1) as f64;
                let row = GridRow {
                    layers,
                    tiers,
                    max_functions,
                    instances: config.instances,
                    feasible,
                    median_us: quantile(&times, 0.5),
                    p90_us: quantile(&times, 0.9),
                    max_us: times.last().copied().unwrap_or(0.0),
                    mean_candidate_groups: mean(edges),
                    mean_searched_groups: mean(searched),
                    mean_labels: mean(labels),
                };
                progress(&row);
                rows.push(row);
            }
        }
    }
    rows
}

/// The median of `repeats` solves, in µs, and the last outcome.
fn time_solve(
    problem: &Problem,
    repeats: usize,
) -> (f64, Result<(crate::plan::Plan, crate::solve::SolveStats)>) {
    let mut times = Vec::with_capacity(repeats.max(1));
    let mut outcome = None;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let result = problem.solve_with_stats();
        times.push(start.elapsed().as_secs_f64() * 1e6);
        outcome = Some(result);
    }
    times.sort_by(f64::total_cmp);
    (quantile(&times, 0.5), outcome.expect("at least one solve"))
}

/// The median wall time of `repeats` runs of `f`, in µs.
fn median_us(repeats: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    quantile(&times, 0.5)
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The grid as a Markdown table.
pub fn grid_table(rows: &[GridRow]) -> String {
    let mut table = String::from(
        "| layers | tiers | max fns | feasible | median | p90 | max | candidate groups | searched | labels |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        table.push_str(&format!(
            "| {} | {} | {} | {}/{} | {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            r.layers,
            r.tiers,
            r.max_functions,
            r.feasible,
            r.instances,
            micros(r.median_us),
            micros(r.p90_us),
            micros(r.max_us),
            r.mean_candidate_groups,
            r.mean_searched_groups,
            r.mean_labels
        ));
    }
    table
}

/// `12.3 µs`, `4.56 ms`.
pub fn micros(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// What to export for an external solver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportConfig {
    pub dir: PathBuf,
    pub count: usize,
    pub seed: u64,
    /// Inclusive ranges the sizes are drawn from.
    pub layers: (usize, usize),
    pub tiers: (usize, usize),
    pub max_functions: (usize, usize),
    /// Solves per instance for its time (the median).
    pub repeats: usize,
}

impl ExportConfig {
    pub fn new(dir: impl Into<PathBuf>, count: usize) -> Self {
        Self {
            dir: dir.into(),
            count,
            seed: 1,
            layers: (10, 30),
            tiers: (3, 6),
            max_functions: (3, 8),
            repeats: 21,
        }
    }
}

/// One exported instance and our answer for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedInstance {
    pub name: String,
    /// Files, relative to the manifest's folder.
    pub instance: String,
    pub lp: String,
    /// Our optimal plan as a solution of the LP model (SCIP's `.sol` format), when feasible.
    pub sol: Option<String>,
    pub layers: usize,
    pub tiers: usize,
    pub max_functions: usize,
    pub seed: u64,
    pub feasible: bool,
    pub cost_per_request: Option<f64>,
    /// `cost_per_request × objective_scale`: the LP objective at our optimum.
    pub objective: Option<f64>,
    pub latency_ms: Option<f64>,
    pub groups: Option<usize>,
    /// Why there is no plan, when there is none.
    pub infeasibility: Option<String>,
    /// Median solve time of the validated problem, in µs.
    pub solve_us: f64,
    /// Median time from the instance's JSON text to the plan (parse, validate, solve), in µs: what
    /// compares with an external solver's read-and-solve.
    pub parse_and_solve_us: f64,
}

/// `manifest.json` of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub objective_scale: f64,
    pub repeats: usize,
    pub instances: Vec<ExportedInstance>,
}

/// Writes `count` generated instances as `NAME.json` + `NAME.lp` (+ `NAME.sol`) into the folder,
/// with `manifest.json` listing them with our optimum and solve time.
pub fn export_instances(config: &ExportConfig) -> Result<Manifest> {
    fs::create_dir_all(&config.dir).map_err(|source| PartitionError::Io {
        context: format!("creating {}", config.dir.display()),
        source,
    })?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut instances = Vec::with_capacity(config.count);
    for i in 0..config.count {
        let spec = RandomSpec {
            layers: rng.random_range(config.layers.0..=config.layers.1),
            tiers: rng.random_range(config.tiers.0..=config.tiers.1),
            max_functions: rng.random_range(config.max_functions.0..=config.max_functions.1),
            family: None,
        };
        let seed = rng.random::<u64>();
        let instance = random::instance(&spec, seed);
        let problem = Problem::new(&instance).expect("generated instances are valid");
        let name = format!(
            "i{i:03}_{}x{}x{}",
            spec.layers, spec.tiers, spec.max_functions
        );
        let file = |ext: &str| format!("{name}.{ext}");
        write(
            &config.dir.join(file("json")),
            instance.to_json().as_bytes(),
        )?;
        let mut lp = Vec::new();
        problem.export_lp(&mut lp)?;
        write(&config.dir.join(file("lp")), &lp)?;

        let (solve_us, outcome) = time_solve(&problem, config.repeats);
        let text = instance.to_json();
        let parse_and_solve_us = median_us(config.repeats, || {
            let _ = Instance::from_json(&text).and_then(|i| crate::solve::solve(&i));
        });
        let mut entry = ExportedInstance {
            name: name.clone(),
            instance: file("json"),
            lp: file("lp"),
            sol: None,
            layers: spec.layers,
            tiers: spec.tiers,
            max_functions: spec.max_functions,
            seed,
            feasible: false,
            cost_per_request: None,
            objective: None,
            latency_ms: None,
            groups: None,
            infeasibility: None,
            solve_us,
            parse_and_solve_us,
        };
        match outcome {
            Ok((plan, _)) => {
                let mut sol = Vec::new();
                problem.write_sol(&plan, &mut sol)?;
                write(&config.dir.join(file("sol")), &sol)?;
                entry.sol = Some(file("sol"));
                entry.feasible = true;
                entry.cost_per_request = Some(plan.cost_per_request);
                entry.objective = Some(plan.cost_per_request * OBJECTIVE_SCALE);
                entry.latency_ms = Some(plan.latency_ms);
                entry.groups = Some(plan.groups.len());
            }
            Err(PartitionError::Infeasible(why)) => entry.infeasibility = Some(why.to_string()),
            Err(e) => return Err(e),
        }
        instances.push(entry);
    }
    let manifest = Manifest {
        objective_scale: OBJECTIVE_SCALE,
        repeats: config.repeats,
        instances,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    write(&config.dir.join("manifest.json"), json.as_bytes())?;
    Ok(manifest)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|source| PartitionError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}
