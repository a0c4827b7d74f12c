//! Recomputes cost, latency and feasibility of any plan straight from the problem's definition,
//! on the [`Instance`] as written, sharing no code with the solver.
//!
//! The definition fixes the order of floating-point operations too, so that the solver, which
//! sums the same terms in the same order, reports bit-identical numbers:
//! - `billed_ms_k = (Σ_{l = first..=last} time_ms[l][m_k], from 0.0 in layer order) + input_bytes_k / bandwidth`;
//! - group compute cost `= (m_k / 1024) · price_per_gb_s · (billed_ms_k / 1000)`, left to right;
//! - `cost = (Σ_k compute cost_k, from 0.0 in group order) + groups · price_per_invocation`;
//! - `latency = Σ_k (invoke_overhead_ms + billed_ms_k)`, from 0.0 in group order.

use serde::Serialize;

use crate::error::{PartitionError, Result};
use crate::instance::Instance;
use crate::plan::{Group, GroupChoice, Plan};

/// A constraint a plan breaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "constraint", rename_all = "snake_case")]
pub enum Violation {
    /// Layer `layer` of group `group` has no `time_ms` entry at the group's tier.
    MissingTime {
        group: usize,
        layer: usize,
        memory_mb: u32,
    },
    /// Group `group` needs more memory than its tier.
    Memory {
        group: usize,
        memory_bytes_needed: u64,
        memory_mb: u32,
    },
    /// Group `group`'s input is over the payload limit.
    Payload {
        group: usize,
        input_bytes: u64,
        max_payload_bytes: u64,
    },
    /// More groups than `max_functions`.
    TooManyGroups { groups: usize, max_functions: usize },
    /// Latency over the SLO.
    Slo { latency_ms: f64, slo_ms: f64 },
}

/// A plan recomputed from the definition, with every constraint it breaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The plan's numbers; a group with a missing time has `billed_ms` = ∞ (and so the totals).
    pub plan: Plan,
    pub violations: Vec<Violation>,
}

impl Evaluation {
    pub fn is_feasible(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Evaluates `groups` on `instance`. Fails only when the instance is invalid or the groups are no
/// partition of the layers (empty, out of order, overlapping, a gap, an unknown tier); broken
/// constraints are listed in [`Evaluation::violations`].
pub fn evaluate(instance: &Instance, groups: &[GroupChoice]) -> Result<Evaluation> {
    instance.validate()?;
    check_partition(instance, groups)?;

    let mut violations = Vec::new();
    let mut planned = Vec::with_capacity(groups.len());
    let mut compute_cost = 0.0;
    let mut latency = 0.0;
    for (k, choice) in groups.iter().enumerate() {
        let layers = &instance.layers[choice.first..=choice.last];
        let input_bytes = if choice.first == 0 {
            instance.input_bytes
        } else {
            instance.layers[choice.first - 1].output_bytes
        };
        if input_bytes > instance.max_payload_bytes {
            violations.push(Violation::Payload {
                group: k,
                input_bytes,
                max_payload_bytes: instance.max_payload_bytes,
            });
        }

        // Saturating: a sum past u64 is over every tier anyway.
        let weights = layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.weight_bytes));
        let peak_activation = layers.iter().map(|l| l.activation_bytes).max().unwrap_or(0);
        let needed = (u64::from(instance.base_memory_mb) << 20)
            .saturating_add(weights)
            .saturating_add(peak_activation);
        if needed > u64::from(choice.memory_mb) << 20 {
            violations.push(Violation::Memory {
                group: k,
                memory_bytes_needed: needed,
                memory_mb: choice.memory_mb,
            });
        }

        let mut run_ms = 0.0;
        for (i, layer) in layers.iter().enumerate() {
            match layer.time_ms.get(&choice.memory_mb) {
                Some(ms) => run_ms += ms,
                None => {
                    violations.push(Violation::MissingTime {
                        group: k,
                        layer: choice.first + i,
                        memory_mb: choice.memory_mb,
                    });
                    run_ms = f64::INFINITY;
                }
            }
        }
        let billed_ms = run_ms + input_bytes as f64 / instance.bandwidth_bytes_per_ms;
        let cost = if billed_ms.is_finite() {
            f64::from(choice.memory_mb) / 1024.0 * instance.price_per_gb_s * (billed_ms / 1000.0)
        } else {
            f64::INFINITY // Not 0 · ∞ = NaN when the price is 0.
        };
        compute_cost += cost;
        let group_latency = instance.invoke_overhead_ms + billed_ms;
        latency += group_latency;
        planned.push(Group {
            first: choice.first,
            last: choice.last,
            first_name: layers[0].name.clone(),
            last_name: layers[layers.len() - 1].name.clone(),
            memory_mb: choice.memory_mb,
            memory_bytes_needed: needed,
            input_bytes,
            billed_ms,
            latency_ms: group_latency,
            cost: cost + instance.price_per_invocation,
        });
    }
    if groups.len() > instance.max_functions {
        violations.push(Violation::TooManyGroups {
            groups: groups.len(),
            max_functions: instance.max_functions,
        });
    }
    if latency > instance.slo_ms {
        violations.push(Violation::Slo {
            latency_ms: latency,
            slo_ms: instance.slo_ms,
        });
    }
    let cost_per_request = compute_cost + groups.len() as f64 * instance.price_per_invocation;
    Ok(Evaluation {
        plan: Plan {
            cost_per_request,
            latency_ms: latency,
            groups: planned,
        },
        violations,
    })
}

fn check_partition(instance: &Instance, groups: &[GroupChoice]) -> Result<()> {
    let n = instance.layers.len();
    if groups.is_empty() {
        return Err(PartitionError::InvalidPlan(
            "a plan needs at least one group".into(),
        ));
    }
    let mut next = 0;
    for (k, g) in groups.iter().enumerate() {
        if g.first != next {
            return Err(PartitionError::InvalidPlan(format!(
                "group {k} starts at layer {}, expected {next}",
                g.first
            )));
        }
        if g.last < g.first || g.last >= n {
            return Err(PartitionError::InvalidPlan(format!(
                "group {k} ends at layer {}, which is before its first ({}) or past the last layer ({})",
                g.last,
                g.first,
                n - 1
            )));
        }
        if !instance.tiers_mb.contains(&g.memory_mb) {
            return Err(PartitionError::InvalidPlan(format!(
                "group {k} has memory {} MB, not one of tiers_mb {:?}",
                g.memory_mb, instance.tiers_mb
            )));
        }
        next = g.last + 1;
    }
    if next != n {
        return Err(PartitionError::InvalidPlan(format!(
            "the groups end at layer {}, the model has {n} layers",
            next - 1
        )));
    }
    Ok(())
}
