//! A plan: the layer groups, in order, and the memory tier of each.
//!
//! Serialized as the CLI contract `{"cost_per_request", "latency_ms", "groups": [{"first",
//! "last", "memory_mb", ...}]}`.

use serde::{Deserialize, Serialize};

/// A sequence of groups covering every layer once, in order, each run by one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Dollars per request: `Σ_k (memory_mb_k / 1024) · price_per_gb_s · billed_ms_k / 1000`
    /// plus `groups · price_per_invocation`.
    pub cost_per_request: f64,
    /// End to end: `Σ_k (invoke_overhead_ms + billed_ms_k)`.
    pub latency_ms: f64,
    /// The groups in execution order.
    pub groups: Vec<Group>,
}

/// One group of consecutive layers run by one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Index of the first layer (0-based, inclusive).
    pub first: usize,
    /// Index of the last layer (inclusive).
    pub last: usize,
    pub first_name: String,
    pub last_name: String,
    /// The function's memory tier.
    pub memory_mb: u32,
    /// `base_memory_mb · 2^20 + Σ weight_bytes + max activation_bytes` over the group.
    pub memory_bytes_needed: u64,
    /// The function's input payload: the model input for the first group, else the output of the
    /// layer before `first`.
    pub input_bytes: u64,
    /// `Σ time_ms[memory_mb] + input_bytes / bandwidth_bytes_per_ms`.
    pub billed_ms: f64,
    /// `invoke_overhead_ms + billed_ms`.
    pub latency_ms: f64,
    /// This group's share of the cost, its invocation fee included (for reading; the plan's total
    /// is summed as documented on [`Plan::cost_per_request`]).
    pub cost: f64,
}

/// A group as a caller chooses it, for [`crate::evaluate()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChoice {
    pub first: usize,
    pub last: usize,
    pub memory_mb: u32,
}

impl Plan {
    /// The plan's groups as choices, e.g. to re-evaluate them with [`crate::evaluate()`].
    pub fn choices(&self) -> Vec<GroupChoice> {
        self.groups
            .iter()
            .map(|g| GroupChoice {
                first: g.first,
                last: g.last,
                memory_mb: g.memory_mb,
            })
            .collect()
    }

    /// Pretty JSON, the `--json` output of `cumulus partition`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serializes: plain fields only")
    }
}

impl std::fmt::Display for Plan {
    /// A table: one row per group, then the totals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>5}  {:<32} {:>9} {:>10} {:>12} {:>11} {:>12}",
            "group", "layers", "memory", "needs MiB", "input bytes", "billed ms", "cost $"
        )?;
        for (k, g) in self.groups.iter().enumerate() {
            let layers = if g.first == g.last {
                format!("{} {}", g.first, g.first_name)
            } else {
                format!("{}-{} {}..{}", g.first, g.last, g.first_name, g.last_name)
            };
            writeln!(
                f,
                "{:>5}  {:<32} {:>6} MB {:>10.1} {:>12} {:>11.3} {:>12.4e}",
                k + 1,
                layers,
                g.memory_mb,
                g.memory_bytes_needed as f64 / f64::from(1u32 << 20),
                g.input_bytes,
                g.billed_ms,
                g.cost
            )?;
        }
        write!(
            f,
            "{} group(s), latency {:.3} ms, cost {:.6e} $ per request ({:.4} $ per million)",
            self.groups.len(),
            self.latency_ms,
            self.cost_per_request,
            self.cost_per_request * 1e6
        )
    }
}
