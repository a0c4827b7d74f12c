//! The exact solver: a label-setting search for the resource-constrained shortest path on the
//! cut graph ([`crate::graph`]), with latency as the resource and the group count as a second,
//! discrete one.
//!
//! A label is a partial plan that ends at cut `j` after `h` groups, carrying its compute cost and
//! latency. Cuts are processed in order (the graph is a DAG), so every label of a cut is final
//! when the cut is reached. Labels are kept per (cut, groups used) as a Pareto front in
//! (cost, latency); a label is also dropped when a label of the same cut with fewer groups is no
//! costlier and no slower. Before a label is created it must pass three bounds, each a backward
//! dynamic program over (cut, groups left) ([`crate::bounds`]):
//! - latency: its latency plus the least latency still to come is within the SLO;
//! - cost: its cost plus the least cost still to come is within the incumbent's;
//! - Lagrangian: for the multiplier λ* of the dual `max_λ min_P cost(P) + λ (latency(P) − SLO)`,
//!   `cost + λ* (latency − SLO) + least (cost + λ* latency) still to come` is within the
//!   incumbent's — the bound that makes the search small, because the SLO usually binds.
//!
//! The incumbent comes before the search from the argmin paths of those programs (the fastest
//! plan, the cheapest plan, the plans found while searching λ*).
//!
//! **Exactness.** Costs and latencies are summed in the order the definition fixes
//! ([`crate::evaluate`]), so a label's numbers equal the evaluator's bit for bit, and the SLO test
//! on a complete plan is exact. Bounds are sums in another order; they only prune with a relative
//! slack of 1e-9, far above their rounding error, so no plan within that slack of the optimum is
//! ever pruned. Dominance compares exactly (floating-point addition is monotone).
//! **Ties.** Among plans whose cost is within a relative 1e-12 of the least cost (e.g. the same
//! cost rounded differently at two tiers), the faster one wins, then the cheaper, then the one
//! with fewer groups.

use serde::Serialize;

use crate::bounds::{self, Table, Weight};
use crate::error::{PartitionError, Result};
use crate::explain;
use crate::graph::Graph;
use crate::instance::{Instance, Problem};
use crate::plan::{Group, Plan};

/// Two plans whose costs are within this relative difference are equally cheap; the faster wins.
pub const TIE_RELATIVE_TOLERANCE: f64 = 1e-12;
/// Bounds prune only what is worse by more than this (relative): covers their rounding error.
const PRUNE_SLACK: f64 = 1e-9;
/// Multiples of λ* with a Lagrangian bound table each.
const LAMBDA_FACTORS: [f64; 3] = [1.0, 0.5, 2.0];
/// The first search's cap is this far (relative) above the lower bound, ...
const GUESS_GAP: f64 = 0.01;
/// ... then widened by this factor ...
const GUESS_GROWTH: f64 = 4.0;
/// ... until past this, when the incumbent (or nothing) caps the search.
const MAX_GUESS_GAP: f64 = 0.2;
/// Most (cut, groups used) states, i.e. (layers + 1) · (functions + 1).
pub const MAX_STATES: usize = 20_000_000;

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
        let (fastest_to, fastest_from) = bounds::distances(&full, |e| full.lat[e]);
        if fastest_to[n] > slo_limit {
            return Err(infeasible());
        }
        let mut graph = full;
        graph.retain(|j, to, _, lat| fastest_to[j] + lat + fastest_from[to] <= slo_limit);

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
        let (reach, rest) =
            bounds::distances(&graph, |e| graph.cost[e] + fee + lambda * graph.lat[e]);

        // Each round asks for the best plan of cost at most `cap`: edges whose Lagrangian bound
        // is over the cap go, the bound tables are built on what is left, and the label search
        // runs below the cap. The first caps are guesses a little above the lower bound, where
        // the optimum usually is and very little survives; a guess that finds nothing within it
        // is widened; the last cap is the incumbent's cost (or none), which is always exact.
        let mut gap = GUESS_GAP;
        loop {
            let guess = dual_bound + dual_bound.abs() * gap;
            let mut cap = match incumbent.cost {
                Some(c) if c <= guess => c,
                _ if gap > MAX_GUESS_GAP => incumbent.cost.unwrap_or(f64::INFINITY),
                _ => guess,
            };
            let kept = if cap.is_finite() {
                let limit = cap + PRUNE_SLACK * (cap + lambda * slo) + lambda * slo;
                graph.filtered(|j, to, cost, lat| {
                    reach[j] + (cost + fee + lambda * lat) + rest[to] <= limit
                })
            } else {
                graph.filtered(|_, _, _, _| true)
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
                let last = graph.to[e] as usize - 1;
                let t = graph.tier[e] as usize;
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
                    latency_ms: graph.lat[e],
                    cost: graph.cost[e] + fee,
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
fn walk(graph: &Graph, path: &[usize], fee: f64) -> (f64, f64, usize) {
    let (mut compute, mut latency) = (0.0, 0.0);
    for &e in path {
        compute += graph.cost[e];
        latency += graph.lat[e];
    }
    (compute + path.len() as f64 * fee, latency, path.len())
}

/// The least cost of a feasible plan known so far.
#[derive(Debug, Default)]
struct Incumbent {
    cost: Option<f64>,
}

impl Incumbent {
    fn offer(&mut self, (total, latency, _groups): (f64, f64, usize), slo: f64) {
        if latency <= slo {
            self.cost = Some(self.cost.map_or(total, |c| c.min(total)));
        }
    }
}

/// Finds the Lagrangian multiplier λ* of the SLO by the hull method on the unlimited-groups
/// relaxation (each step one O(edges) program): keep a cheapest-known plan over the SLO and a
/// cheapest-known plan within it, set λ to the slope between them, stop when the program at λ
/// finds nothing below their line. Plans within the SLO and `max_groups` feed the incumbent.
/// Returns λ*, the programs run, and the dual bound `min_P cost(P) + λ* (latency(P) − SLO)`
/// (a lower bound on the cost of every plan within the SLO, whatever its group count).
fn multiplier(
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
            bounds::unlimited(graph, |e| graph.lat[e])
        } else {
            bounds::unlimited(graph, |e| graph.cost[e] + fee + lambda * graph.lat[e])
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

/// Most labels the search may create (about 24 bytes each) before it gives up.
pub const MAX_LABELS: usize = 30_000_000;

#[derive(Debug, Clone, Copy)]
struct Label {
    /// Compute cost so far (no invocation fees: the group count is the front's).
    cost: f64,
    latency: f64,
    pred: u32,
    edge: u32,
}

struct Search<'a> {
    graph: &'a Graph,
    k: usize,
    slo: f64,
    fee: f64,
    /// Multipliers of the Lagrangian tables, in table order.
    lambdas: Vec<f64>,
    bounds: Bounds,
}

/// The bound tables interleaved, so that one lookup reads one or two cache lines: at
/// (cut, groups left), the least latency still to come, the least cost, then the least
/// cost + λ · latency for each multiplier.
struct Bounds {
    width: usize,
    stride: usize,
    values: Vec<f64>,
}

impl Bounds {
    fn new(max_groups: usize, tables: &[Table]) -> Self {
        let width = max_groups + 1;
        let cuts = tables[0].cuts();
        let mut values = Vec::with_capacity(cuts * width * tables.len());
        for cut in 0..cuts {
            for left in 0..width {
                values.extend(tables.iter().map(|t| t.value(cut, left)));
            }
        }
        Self {
            width,
            stride: tables.len(),
            values,
        }
    }

    #[inline]
    fn at(&self, cut: usize, left: usize) -> &[f64] {
        let at = (cut * self.width + left) * self.stride;
        &self.values[at..at + self.stride]
    }
}

/// What the bounds compare against, derived from the incumbent's cost.
#[derive(Debug, Clone)]
struct Limits {
    slo: f64,
    cost: f64,
    /// Per multiplier.
    lagrange: Vec<f64>,
}

impl Search<'_> {
    fn limits(&self, best: f64) -> Limits {
        Limits {
            slo: self.slo * (1.0 + PRUNE_SLACK),
            cost: best * (1.0 + PRUNE_SLACK),
            lagrange: self
                .lambdas
                .iter()
                .map(|l| best + PRUNE_SLACK * (best + l * self.slo))
                .collect(),
        }
    }

    /// Whether a partial plan at `cut` with `left` groups still allowed can end within the SLO
    /// and within the incumbent's cost, by every bound.
    #[inline]
    fn within(&self, cut: usize, left: usize, total: f64, latency: f64, limits: &Limits) -> bool {
        let rest = self.bounds.at(cut, left);
        if latency + rest[0] > limits.slo || total + rest[1] > limits.cost {
            return false;
        }
        let spare = latency - self.slo;
        self.lambdas
            .iter()
            .zip(&rest[2..])
            .zip(&limits.lagrange)
            .all(|((l, r), limit)| total + l * spare + r <= *limit)
    }

    /// The winning path among the plans that cost at most `cap` (bounds prune above it, with
    /// their slack), and its cost; `None` when no plan is found.
    fn run(&self, cap: f64, stats: &mut SolveStats) -> Result<Option<(Vec<usize>, f64)>> {
        let graph = self.graph;
        let (n, k, fee) = (graph.n, self.k, self.fee);
        let width = k + 1;
        let mut best = cap;
        let mut limits = self.limits(best);
        let mut labels = vec![Label {
            cost: 0.0,
            latency: 0.0,
            pred: u32::MAX,
            edge: u32::MAX,
        }];
        let mut fronts: Vec<Vec<u32>> = vec![Vec::new(); (n + 1) * width];
        fronts[0].push(0);
        // Undominated (latency, cost) of this cut's labels with fewer groups: a label no better
        // than one of them in either is dropped.
        let mut fewer_groups: Vec<(f64, f64)> = Vec::new();
        for j in 0..n {
            fewer_groups.clear();
            for h in 0..k {
                let front = std::mem::take(&mut fronts[j * width + h]);
                for &id in &front {
                    let label = labels[id as usize];
                    if !insert_point(&mut fewer_groups, label.latency, label.cost) {
                        continue;
                    }
                    let total = label.cost + h as f64 * fee;
                    if !self.within(j, k - h, total, label.latency, &limits) {
                        continue;
                    }
                    stats.labels_extended += 1;
                    let groups = (h + 1) as f64;
                    for e in graph.edges(j) {
                        let to = graph.to[e] as usize;
                        let latency = label.latency + graph.lat[e];
                        let cost = label.cost + graph.cost[e];
                        let total = cost + groups * fee;
                        if !self.within(to, k - h - 1, total, latency, &limits) {
                            continue;
                        }
                        if to == n {
                            if latency > self.slo {
                                continue; // The exact test; the bound had a slack.
                            }
                            if total < best {
                                best = total;
                                limits = self.limits(best);
                            }
                        }
                        let new = Label {
                            cost,
                            latency,
                            pred: id,
                            edge: e as u32,
                        };
                        if insert_label(&mut fronts[to * width + h + 1], &mut labels, new) {
                            stats.labels += 1;
                        }
                    }
                    if labels.len() > MAX_LABELS {
                        return Err(PartitionError::TooLarge {
                            what: "the labels of the search",
                            value: labels.len() as u64,
                            limit: MAX_LABELS as u64,
                        });
                    }
                }
            }
        }

        // Complete plans: the least cost, then among the costs within the tie tolerance of it
        // the least latency, then the least cost, then the fewest groups.
        let complete: Vec<(f64, f64, usize, u32)> = (1..=k)
            .flat_map(|h| {
                let labels = &labels;
                fronts[n * width + h].iter().map(move |&id| {
                    let l = labels[id as usize];
                    (l.cost + h as f64 * fee, l.latency, h, id)
                })
            })
            .collect();
        let Some(least) = complete.iter().map(|c| c.0).min_by(f64::total_cmp) else {
            return Ok(None);
        };
        let tie = least + least.abs() * TIE_RELATIVE_TOLERANCE;
        let winner = complete
            .iter()
            .filter(|c| c.0 <= tie)
            .min_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then(a.0.total_cmp(&b.0))
                    .then(a.2.cmp(&b.2))
            })
            .expect("the least-cost plan is within the tie tolerance of itself");
        let mut path = Vec::with_capacity(winner.2);
        let mut id = winner.3;
        while id != 0 {
            let label = labels[id as usize];
            path.push(label.edge as usize);
            id = label.pred;
        }
        path.reverse();
        Ok(Some((path, least)))
    }
}

/// Inserts a label into a Pareto front (ids ordered by latency ascending, cost strictly
/// descending) unless a label there is no slower and no costlier; drops the labels it beats.
fn insert_label(front: &mut Vec<u32>, labels: &mut Vec<Label>, new: Label) -> bool {
    let at = front.partition_point(|&id| labels[id as usize].latency <= new.latency);
    if at > 0 && labels[front[at - 1] as usize].cost <= new.cost {
        return false;
    }
    let mut start = at;
    if start > 0 && labels[front[start - 1] as usize].latency == new.latency {
        start -= 1; // Same latency, higher cost: beaten.
    }
    let mut end = at;
    while end < front.len() && labels[front[end] as usize].cost >= new.cost {
        end += 1;
    }
    let id = labels.len() as u32;
    labels.push(new);
    front.splice(start..end, [id]);
    true
}

/// [`insert_label`] for bare (latency, cost) points; false when the point is dominated.
fn insert_point(front: &mut Vec<(f64, f64)>, latency: f64, cost: f64) -> bool {
    let at = front.partition_point(|p| p.0 <= latency);
    if at > 0 && front[at - 1].1 <= cost {
        return false;
    }
    let mut start = at;
    if start > 0 && front[start - 1].0 == latency {
        start -= 1;
    }
    let mut end = at;
    while end < front.len() && front[end].1 >= cost {
        end += 1;
    }
    front.splice(start..end, [(latency, cost)]);
    true
}
