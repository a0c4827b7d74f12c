//! Backward dynamic programs over the cut graph: for every cut `j` and every number `r` of groups
//! still allowed, the least total of an edge weight over the paths from `j` to the end with at
//! most `r` edges. With weight = latency this is the least latency still to come, with weight =
//! cost + λ · latency the Lagrangian bound the search prunes with; their argmin paths are the
//! heuristic plans that seed the search with an incumbent.

use crate::graph::Graph;

/// An edge weight `cost_factor · cost + fee + latency_factor · latency`, all ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Weight {
    cost_factor: f64,
    fee: f64,
    latency_factor: f64,
}

impl Weight {
    pub fn latency() -> Self {
        Self {
            cost_factor: 0.0,
            fee: 0.0,
            latency_factor: 1.0,
        }
    }

    /// Cost with the invocation fee: `cost + fee + λ · latency`.
    pub fn lagrangian(fee: f64, lambda: f64) -> Self {
        Self {
            cost_factor: 1.0,
            fee,
            latency_factor: lambda,
        }
    }

    /// One per edge: the weight that counts groups.
    pub fn count() -> Self {
        Self {
            cost_factor: 0.0,
            fee: 1.0,
            latency_factor: 0.0,
        }
    }

    #[inline]
    pub fn of(&self, graph: &Graph, e: usize) -> f64 {
        let edge = &graph.edge[e];
        self.of_values(edge.cost, edge.lat)
    }

    #[inline]
    pub fn of_values(&self, cost: f64, latency: f64) -> f64 {
        self.cost_factor * cost + self.fee + self.latency_factor * latency
    }
}

/// `value(j, r)`: least weight from cut `j` to cut `n` with at most `r` groups (∞ if none).
#[derive(Debug)]
pub(crate) struct Table {
    width: usize,
    values: Vec<f64>,
    weight: Weight,
}

impl Table {
    /// Builds the table for paths of at most `max_groups` edges.
    pub fn build(graph: &Graph, max_groups: usize, weight: Weight) -> Self {
        let n = graph.n;
        let width = max_groups + 1;
        let mut values = vec![f64::INFINITY; (n + 1) * width];
        values[n * width..].fill(0.0);
        for j in (0..n).rev() {
            let (head, tail) = values.split_at_mut((j + 1) * width);
            let row = &mut head[j * width..];
            // Edges are grouped by target: only the lightest edge to each target matters.
            let edges = graph.edges(j);
            let mut e = edges.start;
            while e < edges.end {
                let to = graph.edge[e].to as usize;
                let mut w = weight.of(graph, e);
                e += 1;
                while e < edges.end && graph.edge[e].to as usize == to {
                    w = w.min(weight.of(graph, e));
                    e += 1;
                }
                let next = &tail[(to - j - 1) * width..(to - j) * width];
                // Branch-free so that it vectorizes; argmins are found again by `path`.
                for (slot, &rest) in row[1..].iter_mut().zip(&next[..width - 1]) {
                    let v = w + rest;
                    // Not `f64::min`, whose NaN rule keeps it from vectorizing (no NaN here).
                    *slot = if v < *slot { v } else { *slot };
                }
            }
        }
        Self {
            width,
            values,
            weight,
        }
    }

    /// Number of cuts (layers + 1).
    pub fn cuts(&self) -> usize {
        self.values.len() / self.width
    }

    #[inline]
    pub fn value(&self, cut: usize, groups_left: usize) -> f64 {
        self.values[cut * self.width + groups_left]
    }

    /// Edges of an argmin path from cut 0 with at most `max_groups` groups, if one exists, on the
    /// graph the table was built on. Each step looks for the edge whose weight plus the rest is
    /// the value: the same floating-point sum as in `build`, so equal.
    pub fn path(&self, graph: &Graph) -> Option<Vec<usize>> {
        let mut r = self.width - 1;
        if !self.value(0, r).is_finite() {
            return None;
        }
        let mut path = Vec::new();
        let mut j = 0;
        while j < graph.n {
            let target = self.value(j, r);
            let e = graph
                .edges(j)
                .find(|&e| {
                    self.weight.of(graph, e) + self.value(graph.edge[e].to as usize, r - 1)
                        == target
                })
                .expect("a finite value is the sum of an edge and the rest");
            path.push(e);
            j = graph.edge[e].to as usize;
            r -= 1;
        }
        Some(path)
    }
}

/// Least weight from each cut to the end, any number of groups, with the argmin path from cut 0.
/// O(edges); the Lagrangian multiplier search runs on it.
pub(crate) fn unlimited(graph: &Graph, weight: Weight) -> (f64, Vec<usize>) {
    let n = graph.n;
    let mut values = vec![f64::INFINITY; n + 1];
    let mut argmin = vec![u32::MAX; n + 1];
    values[n] = 0.0;
    for j in (0..n).rev() {
        let edges = graph.edges(j);
        let mut best = f64::INFINITY;
        let mut arg = u32::MAX;
        for (i, edge) in graph.edge[edges.clone()].iter().enumerate() {
            let v = weight.of_values(edge.cost, edge.lat) + values[edge.to as usize];
            if v < best {
                best = v;
                arg = (edges.start + i) as u32;
            }
        }
        values[j] = best;
        argmin[j] = arg;
    }
    let mut path = Vec::new();
    if values[0].is_finite() {
        let mut j = 0;
        while j < n {
            let e = argmin[j] as usize;
            path.push(e);
            j = graph.edge[e].to as usize;
        }
    }
    (values[0], path)
}

/// Least weight from cut 0 to each cut, and from each cut to the end, any number of groups.
pub(crate) fn distances(graph: &Graph, weight: Weight) -> (Vec<f64>, Vec<f64>) {
    let n = graph.n;
    let mut from_start = vec![f64::INFINITY; n + 1];
    from_start[0] = 0.0;
    for j in 0..n {
        let here = from_start[j];
        if here.is_finite() {
            for edge in &graph.edge[graph.edges(j)] {
                let v = here + weight.of_values(edge.cost, edge.lat);
                let slot = &mut from_start[edge.to as usize];
                if v < *slot {
                    *slot = v;
                }
            }
        }
    }
    let mut to_end = vec![f64::INFINITY; n + 1];
    to_end[n] = 0.0;
    for j in (0..n).rev() {
        let mut best = f64::INFINITY;
        for edge in &graph.edge[graph.edges(j)] {
            let v = weight.of_values(edge.cost, edge.lat) + to_end[edge.to as usize];
            if v < best {
                best = v;
            }
        }
        to_end[j] = best;
    }
    (from_start, to_end)
}
