//! The exact solver. A plan is a path from cut 0 to cut `n` in the cut graph (`graph.rs`);
//! the problem is a resource-constrained shortest path (latency is the resource, the group count
//! a second, discrete one), solved in five steps:
//!
//! 1. **Graph**: every candidate (group, tier) that fits memory, payload and times, minus tiers
//!    no faster and no cheaper than another for the same group.
//! 2. **Latency pruning**: an edge goes when the fastest plan through it (any group count) is over
//!    the SLO; if the fastest plan of all is, the instance is infeasible.
//! 3. **Lagrangian dual** (`lagrange.rs`): the multiplier λ* of
//!    `max_λ min_P cost(P) + λ (latency(P) − SLO)` on the unlimited-groups relaxation, its dual
//!    value (a lower bound), and the first incumbents (plans found on the way).
//! 4. **Reduced-cost fixing** under a cap: an edge goes when the cheapest Lagrangian plan through
//!    it, less λ* · SLO, is over the cap; on what is left, backward tables over (cut, groups left)
//!    of the least latency, cost, and cost + λ · latency for λ in λ* · {1, ½, 2}
//!    (`bounds.rs`), whose argmin paths are more incumbents.
//! 5. **Label search** (`search.rs`) below the cap, pruned by those tables.
//!
//! Steps 4–5 run with caps a little above the lower bound first (2 %, then doubling): when the
//! optimum is there, almost every edge goes, and a winner found below the cap is proven optimal.
//! Once a cap reaches the incumbent's cost (or 20 %), the last round is capped by a real plan (or
//! not at all) and its answer is exact whatever it is.
//!
//! **Exactness.** Costs and latencies are summed in the order the definition fixes
//! ([`crate::evaluate()`]), so a label's numbers equal the evaluator's bit for bit, and the SLO test
//! on a complete plan is exact. Bounds are sums in other orders; they only prune with a relative
//! slack of 1e-9, far above their rounding error, so no plan within that slack of the cap is ever
//! pruned.
//! **Ties.** Among plans whose cost is within a relative 1e-12 of the least cost (e.g. the same
//! cost rounded differently at two tiers), the faster one wins, then the cheaper, then the one
//! with fewer groups.

use serde::Serialize;

use crate::bounds::{self, Table, Weight};
use crate::error::{PartitionError, Result};
use crate::explain;
use crate::graph::Graph;
use crate::instance::{Instance, Problem};
use crate::lagrange::multiplier;
use crate::plan::{Group, Plan};
use crate::search::{Bounds, Search};

/// Two plans whose costs are within this relative difference are equally cheap; the faster wins.
pub const TIE_RELATIVE_TOLERANCE: f64 = 1e-12;
/// Bounds prune only what is worse by more than this (relative): covers their rounding error.
pub(crate) const PRUNE_SLACK: f64 = 1e-9;
/// Multiples of λ* with a Lagrangian bound table each.
const LAMBDA_FACTORS: [f64; 3] = [1.0, 0.5, 2.0];
/// Below this many edges left by the latency pruning, the first round is already the exact one.
const GUESS_MIN_EDGES: usize = 2000;
/// The first search's cap is this far (relative) above the lower bound, ...
const GUESS_GAP: f64 = 0.02;
/// ... then widened by this factor ...
const GUESS_GROWTH: f64 = 2.0;
/// ... until past this, when the incumbent (or nothing) caps the search.
const MAX_GUESS_GAP: f64 = 0.2;
/// Most (cut, groups used) states, i.e. (layers + 1) · (usable functions + 1): the bound tables
/// and the search keep ~100 bytes per state (e.g. 10,000 layers × 400 functions).
pub const MAX_STATES: usize = 4_000_000;

/// What the search did, for benchmarks and curiosity.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SolveStats {
    /// Candidate (group, tier) edges after dropping dominated tiers.
    pub candidate_groups: usize,
    /// Of those, the ones left after dropping the edges no plan within the SLO can use and
    /// those the Lagrangian bound rules out (reduced-cost fixing): the search's graph.
    pub candidate_groups_searched: usize,
    /// Labels created (partial plans that passed every bound).
    pub labels: usize,
    /// Labels extended (those still undominated and within bounds when their cut came).
    pub labels_extended: usize,
    /// Label searches run (the first ones capped a little above the lower bound).
    pub searches: usize,
    /// Dynamic programs run to find the Lagrangian multiplier.
    pub multiplier_iterations: usize,
    /// The multiplier λ* ($ per ms).
    pub multiplier: f64,
    /// The Lagrangian lower bound on the cost at the root.
    pub lower_bound: f64,
    /// Cost of the best plan known before the search, if any.
    pub initial_incumbent: Option<f64>,
}

/// Validates `instance` and solves it; see [`Problem::solve`].
pub fn solve(instance: &Instance) -> Result<Plan> {
    Problem::new(instance)?.solve()
}

impl Problem {
    /// The cheapest plan that meets every constraint (ties: the faster), or
    /// [`PartitionError::Infeasible`] with the constraint that rules every plan out.
    pub fn solve(&self) -> Result<Plan> {
        self.solve_with_stats().map(|(plan, _)| plan)
    }

    /// [`Problem::solve`], with what the search did.
    pub fn solve_with_stats(&self) -> Result<(Plan, SolveStats)> {
        let n = self.layers();
        let k = self.effective_max_functions();
        let states = (n + 1) * (k + 1);
        if states > MAX_STATES {
            return Err(PartitionError::TooLarge {
                what: "(layers + 1) x (usable functions + 1)",
                value: states as u64,
                limit: MAX_STATES as u64,
            });
        }
        let full = Graph::build(self)?;
        let mut stats = SolveStats {
            candidate_groups: full.edge_count(),
            ..SolveStats::default()
        };
        let slo = self.slo_ms;
        let slo_limit = slo * (1.0 + PRUNE_SLACK);
        let fee = self.price_per_invocation;
        let infeasible = || PartitionError::Infeasible(explain::why(self));

        // Edges no plan within the SLO can use go first: the fastest plan through them is over it.
        let (fastest_to, fastest_from) = bounds::distances(&full, Weight::latency());
        if fastest_to[n] > slo_limit {
            return Err(infeasible());
        }
        let mut graph = full;
        graph.retain(|j, e| fastest_to[j] + e.lat + fastest_from[e.to as usize] <= slo_limit);

        let mut incumbent = Incumbent::default();
        let (lambda, iterations, dual_bound) = multiplier(&graph, fee, slo, k, &mut incumbent);
        stats.multiplier = lambda;
        stats.multiplier_iterations = iterations;
        if incumbent.cost.is_none() {
            // The relaxation's plans all broke the SLO or max_functions: is there any plan?
            let latency = Table::build(&graph, k, Weight::latency());
            if latency.value(0, k) > slo_limit {
                return Err(infeasible());
            }
            if let Some(path) = latency.path(&graph) {
                incumbent.offer(walk(&graph, &path, fee), slo);
            }
        }
        stats.initial_incumbent = incumbent.cost;
        stats.lower_bound = dual_bound;

        // Bounds at λ* and around it: a partial plan with much (little) latency left to spend is
        // bounded best by a smaller (larger) multiplier.
        let lambdas: Vec<f64> = if lambda > 0.0 {
            LAMBDA_FACTORS.iter().map(|f| lambda * f).collect()
        } else {
            vec![0.0]
        };
        // Reduced-cost fixing: the cheapest Lagrangian plan through an edge bounds the cost of
        // every plan within the SLO through it.
        let (reach, rest) = bounds::distances(&graph, Weight::lagrangian(fee, lambda));

        // Each round asks for the best plan of cost at most `cap`: edges whose Lagrangian bound
        // is over the cap go, the bound tables are built on what is left, and the label search
        // runs below the cap. The first caps are guesses a little above the lower bound, where
        // the optimum usually is and very little survives; a guess that finds nothing within it
        // is widened; the last cap is the incumbent's cost (or none), which is always exact.
        // On a small graph a round costs little more than the guesses would save.
        let mut gap = if graph.edge_count() < GUESS_MIN_EDGES {
            f64::INFINITY
        } else {
            GUESS_GAP
        };
        loop {
            let mut cap = match incumbent.cost {
                _ if gap > MAX_GUESS_GAP => incumbent.cost.unwrap_or(f64::INFINITY),
                Some(c) if c <= dual_bound + dual_bound.abs() * gap => c,
                _ => dual_bound + dual_bound.abs() * gap,
            };
            let kept = if cap.is_finite() {
                let limit = cap + PRUNE_SLACK * (cap + lambda * slo) + lambda * slo;
                graph.filtered(|j, e| {
                    reach[j] + (e.cost + fee + lambda * e.lat) + rest[e.to as usize] <= limit
                })
            } else {
                graph.filtered(|_, _| true)
            };
            stats.candidate_groups_searched = kept.edge_count();
            let mut tables = vec![
                Table::build(&kept, k, Weight::latency()),
                Table::build(&kept, k, Weight::lagrangian(fee, 0.0)),
            ];
            for &l in &lambdas {
                tables.push(Table::build(&kept, k, Weight::lagrangian(fee, l)));
            }
            // The tables' argmin plans are real plans: they may beat the cap.
            for table in &tables {
                if let Some(path) = table.path(&kept) {
                    incumbent.offer(walk(&kept, &path, fee), slo);
                }
            }
            if let Some(c) = incumbent.cost {
                cap = cap.min(c);
            }
            let exact = Some(cap) == incumbent.cost || cap == f64::INFINITY;
            let lower_bound = lambdas
                .iter()
                .zip(&tables[2..])
                .map(|(l, t)| t.value(0, k) - l * slo)
                .fold(tables[1].value(0, k), f64::max);
            stats.lower_bound = stats.lower_bound.max(lower_bound.min(cap));

            let search = Search {
                graph: &kept,
                k,
                slo,
                fee,
                bounds: Bounds::new(k, &tables),
                lambdas: lambdas.clone(),
            };
            stats.searches += 1;
            let found = search.run(cap, &mut stats)?;
            // Every plan up to the cap survives the bounds, so a winner whose tie band is within
            // the cap is the optimum; below a real plan's cost (or no cap), any answer is.
            let proven = exact
                || found
                    .as_ref()
                    .is_some_and(|(_, least)| least + least.abs() * TIE_RELATIVE_TOLERANCE <= cap);
            if proven {
                return match found {
                    Some((path, _)) => Ok((self.plan_of(&kept, &path), stats)),
                    None => Err(infeasible()),
                };
            }
            gap *= GUESS_GROWTH;
        }
    }

    /// The plan of a path, with the numbers the search summed (which equal the evaluator's).
    fn plan_of(&self, graph: &Graph, path: &[usize]) -> Plan {
        let fee = self.price_per_invocation;
        let (total, latency, _) = walk(graph, path, fee);
        let mut first = 0;
        let plan_groups = path
            .iter()
            .map(|&e| {
                let last = graph.edge[e].to as usize - 1;
                let t = graph.edge[e].tier as usize;
                let input_bytes = self.input_of(first);
                let mut run_ms = 0.0;
                let (mut weights, mut peak) = (0u64, 0u64);
                for l in first..=last {
                    run_ms += self
                        .time(l, t)
                        .expect("an edge's layers all run at its tier");
                    weights += self.weight[l];
                    peak = peak.max(self.activation[l]);
                }
                let group = Group {
                    first,
                    last,
                    first_name: self.names[first].clone(),
                    last_name: self.names[last].clone(),
                    memory_mb: self.tiers_mb[t],
                    memory_bytes_needed: self.base_bytes() + weights + peak,
                    input_bytes,
                    billed_ms: run_ms + input_bytes as f64 / self.bandwidth_bytes_per_ms,
                    latency_ms: graph.edge[e].lat,
                    cost: graph.edge[e].cost + fee,
                };
                first = last + 1;
                group
            })
            .collect();
        Plan {
            cost_per_request: total,
            latency_ms: latency,
            groups: plan_groups,
        }
    }
}

/// Total cost, latency and group count of a path, summed in plan order as the definition says.
pub(crate) fn walk(graph: &Graph, path: &[usize], fee: f64) -> (f64, f64, usize) {
    let (mut compute, mut latency) = (0.0, 0.0);
    for &e in path {
        compute += graph.edge[e].cost;
        latency += graph.edge[e].lat;
    }
    (compute + path.len() as f64 * fee, latency, path.len())
}

/// The least cost of a feasible plan known so far.
#[derive(Debug, Default)]
pub(crate) struct Incumbent {
    pub cost: Option<f64>,
}

impl Incumbent {
    pub fn offer(&mut self, (total, latency, _groups): (f64, f64, usize), slo: f64) {
        if latency <= slo {
            self.cost = Some(self.cost.map_or(total, |c| c.min(total)));
        }
    }
}
