//! The crate's one error type, [`PartitionError`], and [`Infeasibility`], the reason no plan
//! exists.
//!
//! Every variant says what was wrong and where (the instance field, the layer, the constraint),
//! so a caller can print it to a user unchanged.

use serde::Serialize;

/// Result alias used across `cumulus-partitioner`.
pub type Result<T, E = PartitionError> = std::result::Result<T, E>;

/// Errors of loading, validating, solving, evaluating and exporting a partitioning instance.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The instance text is not JSON, or not the shape of an instance; `field` is the path of the
    /// offending value when it can be told (`layers[3].weight_bytes`), else `instance`.
    #[error("{field}: {reason}")]
    Parse { field: String, reason: String },

    /// A value of the instance is out of range; `field` is its path, e.g.
    /// `layers[3].time_ms["512"]`.
    #[error("{field}: {reason}")]
    InvalidInstance { field: String, reason: String },

    /// The instance is valid but no plan meets its constraints.
    #[error("no plan meets the constraints: {0}")]
    Infeasible(Infeasibility),

    /// A plan handed to [`crate::evaluate()`] does not describe a partition of the layers.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),

    /// The instance is valid but larger than the exact solver accepts (its work grows with the
    /// number of candidate groups and with layers × functions).
    #[error("instance too large for the exact solver: {what} is {value}, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: u64,
    },

    /// Writing an exported model or benchmark file failed; `context` says what was written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<std::io::Error> for PartitionError {
    /// An I/O error of the LP export, which writes to any `Write`r without a path.
    fn from(source: std::io::Error) -> Self {
        Self::Io {
            context: "writing the LP model".to_string(),
            source,
        }
    }
}

impl PartitionError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInstance {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why no plan exists: the first constraint, in the order below, that rules every plan out.
///
/// The checks go from the most local to the most global: a model input over the payload limit,
/// a single layer that runs at no tier, a stretch of layers that cannot be covered (cuts over the
/// payload limit force layers together into a group that fits no tier), too few functions for
/// the cuts that memory and payload force, and finally the SLO against the smallest latency any
/// plan with at most `max_functions` groups achieves.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "constraint", rename_all = "snake_case")]
pub enum Infeasibility {
    /// The model input itself is over `max_payload_bytes`, so not even the first function can be
    /// invoked.
    InputOverPayload {
        input_bytes: u64,
        max_payload_bytes: u64,
    },
    /// One layer alone needs more memory than the largest tier.
    LayerTooLarge {
        layer: usize,
        name: String,
        memory_bytes_needed: u64,
        largest_tier_mb: u32,
    },
    /// One layer fits some tiers' memory but has a `time_ms` entry at none of them.
    LayerHasNoTier {
        layer: usize,
        name: String,
        memory_bytes_needed: u64,
        fitting_tiers_mb: Vec<u32>,
    },
    /// No sequence of groups reaches past layer `stuck_at` (its index and name): every group that
    /// starts at a reachable cut and covers it is over the largest tier's memory or lacks a
    /// `time_ms` entry, and the cuts that would split it carry more than `max_payload_bytes`
    /// (`cuts_over_payload` of them in the model; the last one at or before `stuck_at` follows
    /// layer `last_cut_over_payload_after`).
    Uncoverable {
        stuck_at: usize,
        name: String,
        reachable_cuts: usize,
        cuts_over_payload: usize,
        last_cut_over_payload_after: Option<usize>,
    },
    /// Memory and payload force at least `min_groups` functions, more than `max_functions`.
    TooFewFunctions {
        min_groups: usize,
        max_functions: usize,
    },
    /// The fastest plan with at most `max_functions` groups takes `min_latency_ms`, over the SLO.
    SloTooTight {
        min_latency_ms: f64,
        slo_ms: f64,
        groups_of_fastest: usize,
    },
}

impl std::fmt::Display for Infeasibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InputOverPayload {
                input_bytes,
                max_payload_bytes,
            } => write!(
                f,
                "the model input is {input_bytes} bytes, over max_payload_bytes {max_payload_bytes}"
            ),
            Self::LayerTooLarge {
                layer,
                name,
                memory_bytes_needed,
                largest_tier_mb,
            } => write!(
                f,
                "layer {layer} `{name}` alone needs {} MiB, more than the largest tier ({largest_tier_mb} MB)",
                mib(*memory_bytes_needed)
            ),
            Self::LayerHasNoTier {
                layer,
                name,
                memory_bytes_needed,
                fitting_tiers_mb,
            } => write!(
                f,
                "layer {layer} `{name}` needs {} MiB, which tiers {fitting_tiers_mb:?} MB hold, but it has no time_ms at any of them",
                mib(*memory_bytes_needed)
            ),
            Self::Uncoverable {
                stuck_at,
                name,
                reachable_cuts,
                cuts_over_payload,
                last_cut_over_payload_after,
            } => {
                write!(
                    f,
                    "no group can cover layer {stuck_at} `{name}`: from each of the {reachable_cuts} reachable cuts before it, a group reaching it exceeds the largest tier's memory or lacks a time_ms entry; {cuts_over_payload} cut(s) of the model carry more than max_payload_bytes"
                )?;
                match last_cut_over_payload_after {
                    Some(l) => write!(f, " (the last before it follows layer {l})"),
                    None => Ok(()),
                }
            }
            Self::TooFewFunctions {
                min_groups,
                max_functions,
            } => write!(
                f,
                "memory and payload limits need at least {min_groups} functions, max_functions is {max_functions}"
            ),
            Self::SloTooTight {
                min_latency_ms,
                slo_ms,
                groups_of_fastest,
            } => write!(
                f,
                "the smallest achievable latency is {min_latency_ms:.3} ms (with {groups_of_fastest} group(s)), over the SLO of {slo_ms} ms"
            ),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}
