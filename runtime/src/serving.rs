//! `[inference]` and `[models.<name>]` of `cumulus.toml`: how the gateway serves each model —
//! its latency SLO, batching, queue, instances — and the gateway's request limits.
//!
//! ```
//! let config = cumulus_runtime::CumulusConfig::from_toml_str(
//!     "[models.mnist]\nslo_p99_ms = 25\nbatching = \"fixed\"\nbatch = 8\nwait_ms = 2\n",
//!     "inline",
//! ).unwrap();
//! let mnist = config.serving("mnist");
//! assert_eq!((mnist.slo_p99_ms, mnist.batch), (25.0, Some(8)));
//! // Keys a model's table leaves out come from `[inference.defaults]`.
//! assert_eq!(mnist.max_queue, config.inference.defaults.max_queue);
//! assert_eq!(config.serving("other").slo_p99_ms, 100.0);
//! ```

use serde::{Deserialize, Serialize};

/// How requests of a model are batched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Batching {
    /// The largest batch whose profiled execution fits half the SLO, a wait bounded by what is
    /// left of it, and AIMD on measured latencies (DESIGN.md §6).
    #[default]
    Adaptive,
    /// Every request alone.
    Off,
    /// `batch` requests or `wait_ms`, whichever comes first.
    Fixed,
}

/// Where a model's batches run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Execution {
    /// In `infer-stage` function instances of the platform (warm pool, scale-out, scale to zero).
    #[default]
    Function,
    /// On a compute thread of the gateway itself: no invocation overhead, no isolation.
    InProcess,
}

/// `[models.<name>]` (and `[inference.defaults]`): how one model is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelServing {
    /// The latency the model's requests must meet at the 99th percentile, ms.
    pub slo_p99_ms: f64,
    /// The largest batch ever formed.
    pub max_batch_size: usize,
    /// Requests waiting at most; one more is refused (429).
    pub max_queue: usize,
    pub batching: Batching,
    /// `fixed` batching: the batch size.
    pub batch: Option<usize>,
    /// `fixed` batching: the longest wait for a batch to fill, ms.
    pub wait_ms: Option<f64>,
    pub execution: Execution,
    /// Function instances kept warm even when idle.
    pub min_instances: usize,
    /// Function instances at most (batches run at once).
    pub max_instances: usize,
    /// Memory tier of the model's function, MB.
    pub memory_mb: u32,
    /// An idle instance stops after this long (scale to zero), ms.
    pub idle_ms: u64,
    /// Serve the model partitioned: a plan file as `cumulus partition --json` prints it, one
    /// function per group at the group's memory tier (`memory_mb` is then unused).
    pub plan: Option<std::path::PathBuf>,
}

impl Default for ModelServing {
    fn default() -> Self {
        Self {
            slo_p99_ms: 100.0,
            max_batch_size: 32,
            max_queue: 1024,
            batching: Batching::Adaptive,
            batch: None,
            wait_ms: None,
            execution: Execution::Function,
            min_instances: 0,
            max_instances: 2,
            memory_mb: 1024,
            idle_ms: 60_000,
            plan: None,
        }
    }
}

/// Largest batch a model may be configured for.
pub const MAX_BATCH_SIZE: usize = 4096;

impl ModelServing {
    /// Checks ranges and the keys against each other; `key` names the table in errors.
    pub fn validate(&self, key: &str, tiers: &[u32]) -> Result<(), String> {
        if !(self.slo_p99_ms.is_finite() && self.slo_p99_ms > 0.0 && self.slo_p99_ms <= 600_000.0) {
            return Err(format!("{key}.slo_p99_ms: must be in (0, 600000] ms"));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.max_batch_size) {
            return Err(format!(
                "{key}.max_batch_size: must be in 1..={MAX_BATCH_SIZE}"
            ));
        }
        if !(1..=1_000_000).contains(&self.max_queue) {
            return Err(format!("{key}.max_queue: must be in 1..=1000000"));
        }
        match (self.batching, self.batch, self.wait_ms) {
            (Batching::Fixed, Some(b), Some(w)) => {
                if !(1..=self.max_batch_size).contains(&b) {
                    return Err(format!(
                        "{key}.batch: must be in 1..={} (max_batch_size)",
                        self.max_batch_size
                    ));
                }
                if !(w.is_finite() && (0.0..=60_000.0).contains(&w)) {
                    return Err(format!("{key}.wait_ms: must be in [0, 60000]"));
                }
            }
            (Batching::Fixed, _, _) => {
                return Err(format!(
                    "{key}: batching = \"fixed\" needs both batch and wait_ms"
                ));
            }
            (_, Some(_), _) | (_, _, Some(_)) => {
                return Err(format!(
                    "{key}: batch and wait_ms apply only to batching = \"fixed\""
                ));
            }
            _ => {}
        }
        if self.max_instances == 0 || self.max_instances > 1024 {
            return Err(format!("{key}.max_instances: must be in 1..=1024"));
        }
        if self.min_instances > self.max_instances {
            return Err(format!(
                "{key}.min_instances: {} exceeds max_instances {}",
                self.min_instances, self.max_instances
            ));
        }
        if !tiers.contains(&self.memory_mb) {
            return Err(format!(
                "{key}.memory_mb: {} is not one of functions.memory_tiers_mb {tiers:?}",
                self.memory_mb
            ));
        }
        if self.idle_ms == 0 || self.idle_ms > 86_400_000 {
            return Err(format!("{key}.idle_ms: must be in 1..=86400000"));
        }
        Ok(())
    }
}

/// `[inference]`: the gateway's limits and the serving defaults of every model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// Largest request body, bytes (413 past it).
    pub max_body_bytes: usize,
    /// Most tensor elements in one request (over all inputs).
    pub max_elements: usize,
    /// How models without a `[models.<name>]` table are served.
    pub defaults: ModelServing,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_elements: 4 << 20,
            defaults: ModelServing::default(),
        }
    }
}

impl InferenceConfig {
    pub fn validate(&self, tiers: &[u32]) -> Result<(), String> {
        if !(1024..=1 << 30).contains(&self.max_body_bytes) {
            return Err("inference.max_body_bytes: must be in 1024..=1073741824".into());
        }
        if !(1..=1 << 28).contains(&self.max_elements) {
            return Err("inference.max_elements: must be in 1..=268435456".into());
        }
        self.defaults.validate("inference.defaults", tiers)
    }
}

/// `[models.<name>]`: the keys of [`ModelServing`] that differ from `[inference.defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ModelOverride {
    pub slo_p99_ms: Option<f64>,
    pub max_batch_size: Option<usize>,
    pub max_queue: Option<usize>,
    pub batching: Option<Batching>,
    pub batch: Option<usize>,
    pub wait_ms: Option<f64>,
    pub execution: Option<Execution>,
    pub min_instances: Option<usize>,
    pub max_instances: Option<usize>,
    pub memory_mb: Option<u32>,
    pub idle_ms: Option<u64>,
    pub plan: Option<std::path::PathBuf>,
}

impl ModelOverride {
    /// `base` with these keys applied.
    pub fn apply(&self, base: &ModelServing) -> ModelServing {
        let o = self.clone();
        let mut s = base.clone();
        s.slo_p99_ms = o.slo_p99_ms.unwrap_or(s.slo_p99_ms);
        s.max_batch_size = o.max_batch_size.unwrap_or(s.max_batch_size);
        s.max_queue = o.max_queue.unwrap_or(s.max_queue);
        if let Some(b) = o.batching {
            // Fixed-batching keys of the defaults do not carry over to another mode.
            if b != Batching::Fixed {
                s.batch = None;
                s.wait_ms = None;
            }
            s.batching = b;
        }
        s.batch = o.batch.or(s.batch);
        s.wait_ms = o.wait_ms.or(s.wait_ms);
        s.execution = o.execution.unwrap_or(s.execution);
        s.min_instances = o.min_instances.unwrap_or(s.min_instances);
        s.max_instances = o.max_instances.unwrap_or(s.max_instances);
        s.memory_mb = o.memory_mb.unwrap_or(s.memory_mb);
        s.idle_ms = o.idle_ms.unwrap_or(s.idle_ms);
        s.plan = o.plan.or(s.plan);
        s
    }
}
