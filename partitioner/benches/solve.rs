//! Solve time of the exact solver on generated instances (`cumulus_partitioner::random`).
//!
//! Each benchmark solves the same ten instances (seeds 0..10) per iteration, so the reported
//! time is ten solves and the throughput line is solves per second. Infeasible instances count
//! too: proving infeasibility is part of the solver's job. Validation (`Problem::new`) is outside
//! the timing.
//!
//! `cargo bench -p cumulus-partitioner --bench solve`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cumulus_partitioner::Problem;
use cumulus_partitioner::random::{self, RandomSpec};

const SEEDS: u64 = 10;

fn problems(layers: usize, tiers: usize, max_functions: usize) -> Vec<Problem> {
    (0..SEEDS)
        .map(|seed| {
            let spec = RandomSpec {
                layers,
                tiers,
                max_functions,
                family: None,
            };
            Problem::new(&random::instance(&spec, seed)).expect("generated instances are valid")
        })
        .collect()
}

fn solve(c: &mut Criterion) {
    let mut group = c.benchmark_group("solve");
    group.throughput(Throughput::Elements(SEEDS));
    for (layers, tiers, max_functions) in [
        (10, 3, 4),
        (50, 6, 8),
        (100, 10, 16),
        (200, 10, 16),
        (400, 10, 16),
    ] {
        let problems = problems(layers, tiers, max_functions);
        let id = BenchmarkId::from_parameter(format!("{layers}x{tiers}x{max_functions}"));
        group.bench_with_input(id, &problems, |b, problems| {
            b.iter(|| {
                for problem in problems {
                    let _ = black_box(problem.solve());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, solve);
criterion_main!(benches);
