//! Why an instance has no plan: the first constraint, from the most local to the most global,
//! that rules every plan out (see [`Infeasibility`]).

use crate::bounds::{self, Table, Weight};
use crate::error::Infeasibility;
use crate::graph::Graph;
use crate::instance::Problem;

/// Explains the infeasibility of `problem` (the rare path: it builds the graph again).
pub(crate) fn why(problem: &Problem) -> Infeasibility {
    if problem.input_bytes > problem.max_payload_bytes {
        return Infeasibility::InputOverPayload {
            input_bytes: problem.input_bytes,
            max_payload_bytes: problem.max_payload_bytes,
        };
    }
    let tiers = problem.tier_count();
    let largest = problem.tier_bytes(tiers - 1);
    for l in 0..problem.layers() {
        let needed = problem
            .base_bytes()
            .saturating_add(problem.weight[l])
            .saturating_add(problem.activation[l]);
        if needed > largest {
            return Infeasibility::LayerTooLarge {
                layer: l,
                name: problem.names[l].clone(),
                memory_bytes_needed: needed,
                largest_tier_mb: problem.tiers_mb[tiers - 1],
            };
        }
        let fitting: Vec<usize> = (0..tiers)
            .filter(|&t| problem.tier_bytes(t) >= needed)
            .collect();
        if fitting.iter().all(|&t| problem.time(l, t).is_none()) {
            return Infeasibility::LayerHasNoTier {
                layer: l,
                name: problem.names[l].clone(),
                memory_bytes_needed: needed,
                fitting_tiers_mb: fitting.iter().map(|&t| problem.tiers_mb[t]).collect(),
            };
        }
    }

    let graph = Graph::build(problem).expect("the solver built this graph before asking why");
    let n = problem.layers();
    let mut reachable = vec![false; n + 1];
    reachable[0] = true;
    for j in 0..n {
        if reachable[j] {
            for e in graph.edges(j) {
                reachable[graph.edge[e].to as usize] = true;
            }
        }
    }
    if !reachable[n] {
        let stuck_at = (0..n)
            .rev()
            .find(|&j| reachable[j])
            .expect("cut 0 is reachable");
        return Infeasibility::Uncoverable {
            stuck_at,
            name: problem.names[stuck_at].clone(),
            reachable_cuts: reachable[..n].iter().filter(|&&r| r).count(),
            cuts_over_payload: problem.output[..n - 1]
                .iter()
                .filter(|&&bytes| bytes > problem.max_payload_bytes)
                .count(),
            last_cut_over_payload_after: (0..stuck_at.min(n - 1))
                .rev()
                .find(|&l| problem.output[l] > problem.max_payload_bytes),
        };
    }

    let (_, fewest) = bounds::unlimited(&graph, Weight::count());
    if fewest.len() > problem.effective_max_functions() {
        return Infeasibility::TooFewFunctions {
            min_groups: fewest.len(),
            max_functions: problem.max_functions,
        };
    }

    let latency = Table::build(&graph, problem.effective_max_functions(), Weight::latency());
    let fastest = latency
        .path(&graph)
        .expect("a path within max_functions exists: checked above");
    let min_latency_ms = fastest.iter().fold(0.0, |sum, &e| sum + graph.edge[e].lat);
    debug_assert!(
        min_latency_ms > problem.slo_ms,
        "the fastest plan ({min_latency_ms} ms) meets the SLO ({} ms), yet none was found",
        problem.slo_ms
    );
    Infeasibility::SloTooTight {
        min_latency_ms,
        slo_ms: problem.slo_ms,
        groups_of_fastest: fastest.len(),
    }
}
