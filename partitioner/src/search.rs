//! The label search: the cheapest plan below a cost cap, on a (pruned) cut graph, with the
//! bound tables of [`crate::bounds`].
//!
//! A label is a partial plan that ends at cut `j` after `h` groups, carrying its compute cost and
//! latency. Cuts are processed in order (the graph is a DAG), so every label of a cut is final
//! when the cut is reached. Labels are kept per (cut, groups used) as a Pareto front in
//! (cost, latency); a label is also dropped when a label of the same cut with fewer groups is no
//! costlier and no slower. Dominance compares exactly: floating-point addition is monotone, so a
//! dominated label's completions are never better than the dominating one's. A label is created
//! only when it passes every bound: its latency plus the least latency still to come is within the
//! SLO; its cost plus the least cost still to come, and its cost + λ (latency − SLO) plus the least
//! cost + λ · latency still to come for each multiplier λ, are within the cap.

use crate::bounds::Table;
use crate::error::{PartitionError, Result};
use crate::graph::Graph;
use crate::solve::{PRUNE_SLACK, SolveStats, TIE_RELATIVE_TOLERANCE};

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

pub(crate) struct Search<'a> {
    pub graph: &'a Graph,
    pub k: usize,
    pub slo: f64,
    pub fee: f64,
    /// Multipliers of the Lagrangian tables, in table order.
    pub lambdas: Vec<f64>,
    pub bounds: Bounds,
}

/// The bound tables interleaved, so that one lookup reads one or two cache lines: at
/// (cut, groups left), the least latency still to come, the least cost, then the least
/// cost + λ · latency for each multiplier.
pub(crate) struct Bounds {
    width: usize,
    stride: usize,
    values: Vec<f64>,
}

impl Bounds {
    pub fn new(max_groups: usize, tables: &[Table]) -> Self {
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
    pub fn run(&self, cap: f64, stats: &mut SolveStats) -> Result<Option<(Vec<usize>, f64)>> {
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
                        let to = graph.edge[e].to as usize;
                        let latency = label.latency + graph.edge[e].lat;
                        let cost = label.cost + graph.edge[e].cost;
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
