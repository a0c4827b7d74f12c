//! The partitioner's benchmark driver (`bench/partition/run.sh` calls it).
//!
//! ```text
//! partition_bench [--layers 10,25,50,100,200,400] [--tiers 3,6,10] [--functions 4,8,16]
//!                 [--instances 10] [--repeats 5] [--seed 0] [--json FILE] [--markdown FILE]
//! partition_bench --export-dir DIR --count N [--seed 1] [--repeats 21]
//! ```
//!
//! The first form times the solver over the grid of generated instances (each instance's time is
//! the median of `--repeats` solves; a cell shows the median, p90 and max over its instances),
//! prints the table and writes it as JSON (and Markdown). The second writes `N` generated
//! instances (10–30 layers × 3–6 tiers × 3–8 functions) as `.json` + `.lp` (+ our optimum as
//! `.sol`) into DIR, with `manifest.json` holding our optimal cost and solve time of each.

use std::process::ExitCode;

use cumulus_partitioner::bench::{self, ExportConfig, GridConfig};

const USAGE: &str = "\
usage: partition_bench [--layers 10,25,50,100,200,400] [--tiers 3,6,10] [--functions 4,8,16]
                       [--instances 10] [--repeats 5] [--seed 0] [--json FILE] [--markdown FILE]
       partition_bench --export-dir DIR --count N [--seed 1] [--repeats 21]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("partition_bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut grid = GridConfig::default();
    let (mut json, mut markdown, mut export_dir, mut count) = (None, None, None, None);
    let (mut seed, mut repeats) = (None, None);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--layers" => grid.layers = list(&value()?)?,
            "--tiers" => grid.tiers = list(&value()?)?,
            "--functions" => grid.max_functions = list(&value()?)?,
            "--instances" => grid.instances = number(&value()?)?,
            "--repeats" => repeats = Some(number(&value()?)?),
            "--seed" => seed = Some(number::<u64>(&value()?)?),
            "--json" => json = Some(value()?),
            "--markdown" => markdown = Some(value()?),
            "--export-dir" => export_dir = Some(value()?),
            "--count" => count = Some(number(&value()?)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }

    if let Some(dir) = export_dir {
        let mut config = ExportConfig::new(dir, count.ok_or("--export-dir needs --count")?);
        config.seed = seed.unwrap_or(config.seed);
        config.repeats = repeats.unwrap_or(config.repeats);
        let manifest = bench::export_instances(&config).map_err(|e| e.to_string())?;
        let feasible = manifest.instances.iter().filter(|i| i.feasible).count();
        println!(
            "wrote {} instances ({feasible} feasible) and manifest.json to {}",
            manifest.instances.len(),
            config.dir.display()
        );
        for i in &manifest.instances {
            match i.objective {
                Some(objective) => println!(
                    "{:<16} {:>12.6} $/1e6 req  {:>9}",
                    i.name,
                    objective,
                    bench::micros(i.solve_us)
                ),
                None => println!(
                    "{:<16} {:>25}  {:>9}",
                    i.name,
                    "infeasible",
                    bench::micros(i.solve_us)
                ),
            }
        }
        return Ok(());
    }

    grid.seed = seed.unwrap_or(grid.seed);
    grid.repeats = repeats.unwrap_or(grid.repeats);
    println!(
        "{:>6} {:>5} {:>7} {:>8} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8}",
        "layers",
        "tiers",
        "max fns",
        "feasible",
        "median",
        "p90",
        "max",
        "groups",
        "searched",
        "labels"
    );
    let rows = bench::run_grid(&grid, |r| {
        println!(
            "{:>6} {:>5} {:>7} {:>5}/{:<2} {:>10} {:>10} {:>10} {:>9.0} {:>8.0} {:>8.0}",
            r.layers,
            r.tiers,
            r.max_functions,
            r.feasible,
            r.instances,
            bench::micros(r.median_us),
            bench::micros(r.p90_us),
            bench::micros(r.max_us),
            r.mean_candidate_groups,
            r.mean_searched_groups,
            r.mean_labels
        );
    });
    if let Some(path) = json {
        let value = serde_json::json!({ "config": grid, "rows": rows });
        let text = serde_json::to_string_pretty(&value).expect("rows serialize");
        std::fs::write(&path, text).map_err(|e| format!("writing {path}: {e}"))?;
    }
    if let Some(path) = markdown {
        std::fs::write(&path, bench::grid_table(&rows))
            .map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

fn list(text: &str) -> Result<Vec<usize>, String> {
    text.split(',').map(number).collect()
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("not a number: {text:?}"))
}
