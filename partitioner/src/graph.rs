//! The chain as a graph: nodes are the cuts `0..=n` (cut `j` = the first `j` layers are done),
//! and an edge `j → e + 1` is a candidate group of layers `j..=e` at one tier, with its compute
//! cost and its latency. A plan is a path from cut 0 to cut `n`.
//!
//! Only edges that can be in a plan are built: the group's input fits the payload limit, its
//! memory fits the tier, every layer has a time at the tier; and of the tiers of one group only
//! the Pareto-optimal ones in (latency, cost) are kept — a tier that is no faster and no cheaper
//! than another can never be needed (nor win a tie, which prefers lower latency).

use crate::error::{PartitionError, Result};
use crate::instance::Problem;

/// Most candidate (group, tier) edges the solver builds (about 24 bytes each).
pub const MAX_EDGES: usize = 8_000_000;

/// A candidate group at one tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Edge {
    /// `(m / 1024) · price_per_gb_s · (billed_ms / 1000)`, without the invocation fee.
    pub cost: f64,
    /// `invoke_overhead_ms + billed_ms`.
    pub lat: f64,
    /// Target cut (`last layer + 1`).
    pub to: u32,
    /// Tier index into the problem's ascending tiers.
    pub tier: u16,
}

#[derive(Debug)]
pub(crate) struct Graph {
    pub n: usize,
    /// Edges leaving cut `j` are `edge[offsets[j]..offsets[j + 1]]`, ordered by target then
    /// latency.
    pub offsets: Vec<u32>,
    pub edge: Vec<Edge>,
}

impl Graph {
    pub fn build(problem: &Problem) -> Result<Self> {
        let n = problem.layers();
        let tiers = problem.tier_count();
        let alpha: Vec<f64> = problem
            .tiers_mb
            .iter()
            .map(|&mb| f64::from(mb) / 1024.0 * problem.price_per_gb_s)
            .collect();
        let largest = problem.tier_bytes(tiers - 1);
        let base = problem.base_bytes();

        // Missing times as +∞: sums then carry "cannot run" along without a branch.
        let times: Vec<f64> = problem
            .time
            .iter()
            .map(|&ms| if ms.is_nan() { f64::INFINITY } else { ms })
            .collect();
        // Reserved up front: untouched capacity costs nothing, regrowing costs copies.
        let bound = (n * (n + 1) / 2)
            .saturating_mul(tiers)
            .min(MAX_EDGES + tiers);
        let mut graph = Graph {
            n,
            offsets: Vec::with_capacity(n + 1),
            edge: Vec::with_capacity(bound),
        };
        let mut run_ms = vec![0.0f64; tiers];
        let mut candidates: Vec<(f64, f64, usize)> = Vec::with_capacity(tiers);
        for s in 0..n {
            graph.offsets.push(graph.edge.len() as u32);
            let input = problem.input_of(s);
            if input > problem.max_payload_bytes {
                continue;
            }
            let transfer_ms = input as f64 / problem.bandwidth_bytes_per_ms;
            run_ms.fill(0.0);
            let (mut weights, mut peak) = (0u64, 0u64);
            let mut smallest_fitting = 0;
            for e in s..n {
                weights = weights.saturating_add(problem.weight[e]);
                peak = peak.max(problem.activation[e]);
                let needed = base.saturating_add(weights).saturating_add(peak);
                if needed > largest {
                    break; // Memory only grows with the group.
                }
                while problem.tier_bytes(smallest_fitting) < needed {
                    smallest_fitting += 1;
                }
                for (sum, &ms) in run_ms.iter_mut().zip(&times[e * tiers..(e + 1) * tiers]) {
                    *sum += ms;
                }
                // Largest tier first: usually the fastest, so the tiers come in (latency, cost)
                // order and the Pareto filter is one pass; otherwise they are sorted first.
                let start = graph.edge.len();
                let (mut any, mut in_order) = (false, true);
                let (mut previous, mut cheapest) =
                    ((f64::NEG_INFINITY, f64::NEG_INFINITY), f64::INFINITY);
                for t in (smallest_fitting..tiers).rev() {
                    if run_ms[t].is_finite() {
                        any = true;
                        let billed = run_ms[t] + transfer_ms;
                        let lat = problem.invoke_overhead_ms + billed;
                        let cost = alpha[t] * (billed / 1000.0);
                        if (lat, cost) < previous {
                            in_order = false;
                            break;
                        }
                        previous = (lat, cost);
                        if cost < cheapest {
                            cheapest = cost;
                            graph.edge.push(Edge {
                                cost,
                                lat,
                                to: (e + 1) as u32,
                                tier: t as u16,
                            });
                        }
                    }
                }
                if !any {
                    // Every tier that fits lacks a time of some layer: so do all longer groups.
                    break;
                }
                if !in_order {
                    graph.edge.truncate(start);
                    candidates.clear();
                    for t in smallest_fitting..tiers {
                        if run_ms[t].is_finite() {
                            let billed = run_ms[t] + transfer_ms;
                            let cost = alpha[t] * (billed / 1000.0);
                            candidates.push((problem.invoke_overhead_ms + billed, cost, t));
                        }
                    }
                    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
                    let mut cheapest = f64::INFINITY;
                    for &(lat, cost, t) in &candidates {
                        if cost < cheapest {
                            cheapest = cost;
                            graph.edge.push(Edge {
                                cost,
                                lat,
                                to: (e + 1) as u32,
                                tier: t as u16,
                            });
                        }
                    }
                }
                if graph.edge.len() > MAX_EDGES {
                    return Err(PartitionError::TooLarge {
                        what: "the number of candidate (group, tier) pairs",
                        value: graph.edge.len() as u64,
                        limit: MAX_EDGES as u64,
                    });
                }
            }
        }
        graph.offsets.push(graph.edge.len() as u32);
        Ok(graph)
    }

    /// A copy with only the edges `keep(from, edge)` accepts, in the same order.
    pub fn filtered(&self, keep: impl Fn(usize, &Edge) -> bool) -> Self {
        // Counted first so that the array is allocated once, at its size.
        let count = (0..self.n)
            .map(|j| {
                self.edge[self.edges(j)]
                    .iter()
                    .filter(|e| keep(j, e))
                    .count()
            })
            .sum();
        let mut kept = Graph {
            n: self.n,
            offsets: Vec::with_capacity(self.n + 1),
            edge: Vec::with_capacity(count),
        };
        for j in 0..self.n {
            kept.offsets.push(kept.edge.len() as u32);
            kept.edge
                .extend(self.edge[self.edges(j)].iter().filter(|e| keep(j, e)));
        }
        kept.offsets.push(kept.edge.len() as u32);
        kept
    }

    /// Keeps only the edges `keep(from, edge)` accepts, in the same order.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, &Edge) -> bool) {
        let mut kept = 0;
        let mut start = 0;
        for j in 0..self.n {
            let end = self.offsets[j + 1] as usize;
            self.offsets[j] = kept as u32;
            for e in start..end {
                let edge = self.edge[e];
                if keep(j, &edge) {
                    self.edge[kept] = edge;
                    kept += 1;
                }
            }
            start = end;
        }
        self.offsets[self.n] = kept as u32;
        self.edge.truncate(kept);
    }

    pub fn edges(&self, from: usize) -> std::ops::Range<usize> {
        self.offsets[from] as usize..self.offsets[from + 1] as usize
    }

    pub fn edge_count(&self) -> usize {
        self.edge.len()
    }
}
