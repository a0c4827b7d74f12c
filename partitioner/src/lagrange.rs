//! The Lagrangian multiplier of the SLO, found on the unlimited-groups relaxation.

use crate::bounds::{self, Weight};
use crate::graph::Graph;
use crate::solve::{Incumbent, walk};

/// Finds the Lagrangian multiplier λ* of the SLO by the hull method on the unlimited-groups
/// relaxation (each step one O(edges) program): keep a cheapest-known plan over the SLO and a
/// cheapest-known plan within it, set λ to the slope between them, stop when the program at λ
/// finds nothing below their line. Plans within the SLO and `max_groups` feed the incumbent.
/// Returns λ*, the programs run, and the dual bound `min_P cost(P) + λ* (latency(P) − SLO)`
/// (a lower bound on the cost of every plan within the SLO, whatever its group count).
pub(crate) fn multiplier(
    graph: &Graph,
    fee: f64,
    slo: f64,
    max_groups: usize,
    incumbent: &mut Incumbent,
) -> (f64, usize, f64) {
    let mut iterations = 0;
    let mut plan_at = |lambda: f64| -> (f64, f64) {
        iterations += 1;
        let (_, path) = if lambda.is_infinite() {
            bounds::unlimited(graph, Weight::latency())
        } else {
            bounds::unlimited(graph, Weight::lagrangian(fee, lambda))
        };
        let plan = walk(graph, &path, fee);
        if plan.2 <= max_groups {
            incumbent.offer(plan, slo);
        }
        (plan.0, plan.1)
    };
    let cheapest = plan_at(0.0);
    let mut bound = cheapest.0;
    if cheapest.1 <= slo {
        return (0.0, iterations, bound);
    }
    let fastest = plan_at(f64::INFINITY);
    if fastest.1 > slo {
        return (0.0, iterations, bound); // Even the relaxation is infeasible.
    }
    let (mut over, mut within) = (cheapest, fastest);
    let mut best_lambda = 0.0;
    for _ in 0..64 {
        if over.1 <= within.1 {
            break;
        }
        let lambda = ((within.0 - over.0) / (over.1 - within.1)).max(0.0);
        let found = plan_at(lambda);
        let value = found.0 + lambda * found.1;
        if value - lambda * slo > bound {
            (bound, best_lambda) = (value - lambda * slo, lambda);
        }
        let line = over.0 + lambda * over.1;
        if value >= line - 1e-12 * line.abs() {
            break; // No plan below the line through both: λ is optimal.
        }
        if found.1 <= slo {
            within = found;
        } else {
            over = found;
        }
    }
    (best_lambda, iterations, bound)
}
