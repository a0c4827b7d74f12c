//! The job file: what an ML engineer writes to train a model (`cumulus train job.toml`,
//! `POST /v1/jobs`). TOML (or the same structure as JSON), unknown keys refused, validated after
//! parsing; every error names the file, the key and the reason.
//!
//! ```
//! use cumulus_trainer::job::JobSpec;
//!
//! let job = JobSpec::from_toml_str("inline.toml", r#"
//!     name = "digits-mlp"
//!     [model]
//!     arch = "mlp"
//!     input_dim = 64
//!     hidden = [64]
//!     n_outputs = 10
//!     [data]
//!     source = "builtin:digits"
//!     [training]
//!     loss = "cross_entropy"
//!     batch_size = 32
//!     optimizer = { kind = "adam", lr = 0.003 }
//!     [workers]
//!     count = 2
//!     sync = "ssp:2"
//!     significance = 0.1
//!     [stop]
//!     max_epochs = 10
//!     target_accuracy = 0.95
//! "#)?;
//! assert_eq!(job.workers.count, 2);
//! assert_eq!(job.workers.sync.to_string(), "ssp:2");
//! # Ok::<(), cumulus_trainer::job::JobError>(())
//! ```

use std::path::{Path, PathBuf};

use cumulus_models::ModelConfig;
use cumulus_models::data::DataFormat;
use cumulus_models::loss::Loss;
use cumulus_models::optim::OptimizerConfig;
use cumulus_param_store::layout::SyncMode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most workers one job may ask for.
pub const MAX_WORKERS: u32 = 1024;
/// Largest minibatch per worker.
pub const MAX_BATCH_SIZE: usize = 65_536;
/// Memory range of a function, in MB (AWS Lambda's range).
pub const MEMORY_MB_RANGE: std::ops::RangeInclusive<u32> = 128..=10_240;

/// A job file that cannot be used; the message names the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: String,
        key: &'static str,
        reason: String,
    },
}

/// Where the model comes from: an architecture to initialize, or a model folder to fine-tune.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    Arch(ModelConfig),
    /// `[model] from = "DIR"`: a folder with config.json and model.safetensors.
    Folder(PathBuf),
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = toml::Table::deserialize(d)?;
        if let Some(from) = table.get("from") {
            if table.len() > 1 {
                return Err(D::Error::custom(
                    "`from` (a model folder) cannot be combined with architecture keys",
                ));
            }
            let dir = from
                .as_str()
                .ok_or_else(|| D::Error::custom("`from` must be a path string"))?;
            return Ok(Self::Folder(PathBuf::from(dir)));
        }
        ModelConfig::deserialize(toml::Value::Table(table))
            .map(Self::Arch)
            .map_err(D::Error::custom)
    }
}

impl Serialize for ModelSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Arch(config) => config.serialize(s),
            Self::Folder(dir) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("from", dir)?;
                map.end()
            }
        }
    }
}

/// `[data]`: the dataset and its split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// `builtin:digits`, a local path, or an object-store URL (`file://`, `s3://`, …).
    pub source: String,
    /// File format; guessed from the name when absent (`csv`, `libsvm`, `hashed-csv`, `ratings`,
    /// `idx`, `mnist-csv`).
    #[serde(default, with = "format_name")]
    pub format: Option<DataFormat>,
    /// Fraction of the rows held out for testing.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
}

fn default_test_fraction() -> f64 {
    0.2
}

mod format_name {
    use super::DataFormat;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(f: &Option<DataFormat>, s: S) -> Result<S::Ok, S::Error> {
        match f {
            Some(f) => s.serialize_some(f.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DataFormat>, D::Error> {
        let name = Option::<String>::deserialize(d)?;
        name.map(|n| n.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Learning rate over epochs, as a multiple of the optimizer's `lr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        every_epochs: u32,
        gamma: f64,
    },
    /// Cosine decay from 1 to `min_factor` over `max_epochs`.
    Cosine {
        #[serde(default)]
        min_factor: f64,
    },
}

impl LrSchedule {
    /// The factor applied to the base learning rate during `epoch` (0-based) of `total`.
    pub fn factor(&self, epoch: u32, total: u32) -> f64 {
        match *self {
            Self::Constant => 1.0,
            Self::Step {
                every_epochs,
                gamma,
            } => gamma.powi((epoch / every_epochs.max(1)) as i32),
            Self::Cosine { min_factor } => {
                let progress = f64::from(epoch) / f64::from(total.max(1));
                min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// `[training]`: what each worker computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    pub loss: Loss,
    /// Minibatch per worker and step.
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    #[serde(default = "constant_schedule")]
    pub lr_schedule: LrSchedule,
    /// Local steps a worker runs per invocation before it reports and may be re-invoked.
    #[serde(default = "default_steps_per_invocation")]
    pub steps_per_invocation: u32,
}

fn constant_schedule() -> LrSchedule {
    LrSchedule::Constant
}

fn default_steps_per_invocation() -> u32 {
    200
}

/// `[workers]`: how many functions, how big, how synchronized, how much they send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSpec {
    pub count: u32,
    /// Memory tier of each worker function, in MB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// `bsp`, `ssp:K` or `asp`.
    #[serde(
        default = "default_sync",
        serialize_with = "sync_name",
        deserialize_with = "parse_sync"
    )]
    pub sync: SyncMode,
    /// The significance threshold `v` of the MLLess filter; 0 sends every change.
    #[serde(default)]
    pub significance: f32,
    /// How values travel between workers and the store: `f32`, or `f16` for half the bytes —
    /// pulled weights as f16 (ZeRO++'s quantized weights; the store keeps and sums f32) and
    /// pushed changes rounded to f16 with the rounding error kept in the worker's accumulator
    /// (error feedback: nothing is lost, only delayed, like the filter itself).
    #[serde(default)]
    pub wire_precision: WirePrecision,
    /// Time limit of one worker invocation, seconds (the function's timeout; Lambda's maximum
    /// is 900). A worker pushes what it holds and returns before it.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    120
}

/// Longest worker invocation, seconds (Lambda's 15 minutes).
pub const MAX_TIMEOUT_SECS: u64 = 900;

/// `[workers] wire_precision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WirePrecision {
    #[default]
    F32,
    F16,
}

fn default_memory_mb() -> u32 {
    1769
}

fn default_sync() -> SyncMode {
    SyncMode::Bsp
}

fn sync_name<S: Serializer>(mode: &SyncMode, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(mode)
}

fn parse_sync<'de, D: Deserializer<'de>>(d: D) -> Result<SyncMode, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// `[stop]`: the job ends at the first condition met; at least one bound is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    pub target_accuracy: Option<f64>,
    pub target_rmse: Option<f64>,
    pub target_auc: Option<f64>,
    pub max_epochs: Option<u32>,
    pub max_wall_secs: Option<f64>,
    pub max_cost_usd: Option<f64>,
}

/// `[autotune]`: the scale-in auto-tuner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutotuneSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Relative loss increase accepted for one worker fewer.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    #[serde(default = "default_min_workers")]
    pub min_workers: u32,
}

impl Default for AutotuneSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            tolerance: default_tolerance(),
            min_workers: default_min_workers(),
        }
    }
}

fn default_tolerance() -> f64 {
    0.01
}

fn default_min_workers() -> u32 {
    1
}

/// A whole job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSource,
    pub data: DataSpec,
    pub training: TrainingSpec,
    pub workers: WorkersSpec,
    pub stop: StopSpec,
    #[serde(default)]
    pub autotune: AutotuneSpec,
    /// Global steps (local steps of all workers) between model-folder checkpoints in
    /// `<output>/checkpoints/step-<N>/` ([`crate::checkpoint`]); 0 turns them off.
    #[serde(default)]
    pub checkpoint_every_steps: u64,
    /// Where the trained model folder, metrics.json and plots go; `runs/<name>` when absent.
    pub output: Option<PathBuf>,
}

impl JobSpec {
    /// Read and validate a TOML job file.
    pub fn from_file(path: &Path) -> Result<Self, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&path.display().to_string(), &text)
    }

    /// Parse and validate TOML; `file` names the source in errors.
    pub fn from_toml_str(file: &str, text: &str) -> Result<Self, JobError> {
        let job: Self = toml::from_str(text).map_err(|e| JobError::Parse {
            file: file.to_string(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        job.validate(file)?;
        Ok(job)
    }

    /// Parse and validate the same structure as JSON (the job API accepts both).
    pub fn from_json_str(file: &str, text: &str) -> Result<Self, JobError> {
        let job: Self = serde_json::from_str(text).map_err(|e| JobError::Parse {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        job.validate(file)?;
        Ok(job)
    }

    /// The output folder: `output`, or `runs/<name>`.
    pub fn output_dir(&self) -> PathBuf {
        self.output
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(&self.name))
    }

    /// Checks every value against its bounds and the keys against each other.
    pub fn validate(&self, file: &str) -> Result<(), JobError> {
        let bad = |key: &'static str, reason: String| {
            Err(JobError::Invalid {
                file: file.to_string(),
                key,
                reason,
            })
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok || self.name.starts_with('.') {
            return bad(
                "name",
                format!(
                    "{:?} must be 1 to 64 of [A-Za-z0-9._-], not starting with '.'",
                    self.name
                ),
            );
        }
        if let ModelSource::Arch(config) = &self.model {
            if let Err(e) = config.validate() {
                return bad("model", e.to_string());
            }
            if let Err(e) = crate::dataset::check_loss_fits(self.training.loss, config) {
                return bad("training.loss", e);
            }
        }
        if self.data.source.trim().is_empty() {
            return bad("data.source", "must name a dataset".into());
        }
        if !(self.data.test_fraction > 0.0 && self.data.test_fraction < 1.0) {
            return bad(
                "data.test_fraction",
                format!("must be in (0, 1), got {}", self.data.test_fraction),
            );
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.training.batch_size) {
            return bad(
                "training.batch_size",
                format!(
                    "must be in 1..={MAX_BATCH_SIZE}, got {}",
                    self.training.batch_size
                ),
            );
        }
        if let Err(e) = self.training.optimizer.validate() {
            return bad("training.optimizer", e.to_string());
        }
        let lr = self.training.optimizer.learning_rate();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(
                "training.optimizer.lr",
                format!("must be a finite number above 0, got {lr}"),
            );
        }
        if self.training.steps_per_invocation == 0 {
            return bad("training.steps_per_invocation", "must be at least 1".into());
        }
        match self.training.lr_schedule {
            LrSchedule::Step {
                every_epochs,
                gamma,
            } if every_epochs == 0 || !(gamma > 0.0 && gamma <= 1.0) => {
                return bad(
                    "training.lr_schedule",
                    "step needs every_epochs >= 1 and gamma in (0, 1]".into(),
                );
            }
            LrSchedule::Cosine { min_factor } if !(0.0..=1.0).contains(&min_factor) => {
                return bad(
                    "training.lr_schedule",
                    "cosine needs min_factor in [0, 1]".into(),
                );
            }
            _ => {}
        }
        if !(1..=MAX_WORKERS).contains(&self.workers.count) {
            return bad(
                "workers.count",
                format!("must be in 1..={MAX_WORKERS}, got {}", self.workers.count),
            );
        }
        if !MEMORY_MB_RANGE.contains(&self.workers.memory_mb) {
            return bad(
                "workers.memory_mb",
                format!(
                    "must be in {}..={} MB, got {}",
                    MEMORY_MB_RANGE.start(),
                    MEMORY_MB_RANGE.end(),
                    self.workers.memory_mb
                ),
            );
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.workers.timeout_secs) {
            return bad(
                "workers.timeout_secs",
                format!(
                    "must be in 1..={MAX_TIMEOUT_SECS}, got {}",
                    self.workers.timeout_secs
                ),
            );
        }
        let v = self.workers.significance;
        if !(v.is_finite() && v >= 0.0) {
            return bad(
                "workers.significance",
                format!("must be a finite number >= 0, got {v}"),
            );
        }
        self.validate_stop(file)?;
        let a = &self.autotune;
        if !(a.tolerance.is_finite() && a.tolerance >= 0.0) {
            return bad("autotune.tolerance", "must be >= 0".into());
        }
        if a.min_workers == 0 || a.min_workers > self.workers.count {
            return bad(
                "autotune.min_workers",
                format!("must be in 1..={} (workers.count)", self.workers.count),
            );
        }
        Ok(())
    }

    fn validate_stop(&self, file: &str) -> Result<(), JobError> {
        let bad = |key: &'static str, reason: String| {
            Err(JobError::Invalid {
                file: file.to_string(),
                key,
                reason,
            })
        };
        let s = &self.stop;
        if s.max_epochs.is_none() && s.max_wall_secs.is_none() && s.max_cost_usd.is_none() {
            return bad(
                "stop",
                "needs at least one of max_epochs, max_wall_secs, max_cost_usd so the job ends"
                    .into(),
            );
        }
        if s.max_epochs == Some(0) {
            return bad("stop.max_epochs", "must be at least 1".into());
        }
        for (key, value) in [
            ("stop.max_wall_secs", s.max_wall_secs),
            ("stop.max_cost_usd", s.max_cost_usd),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0)
            {
                return bad(key, format!("must be a positive number, got {v}"));
            }
        }
        let loss = self.training.loss;
        let targets = [
            ("stop.target_accuracy", s.target_accuracy, loss != Loss::Mse),
            ("stop.target_rmse", s.target_rmse, loss == Loss::Mse),
            (
                "stop.target_auc",
                s.target_auc,
                loss == Loss::BinaryLogistic,
            ),
        ];
        for (key, value, fits_loss) in targets {
            let Some(v) = value else { continue };
            if !v.is_finite() || v < 0.0 || (key != "stop.target_rmse" && v > 1.0) {
                return bad(key, format!("{v} is out of range"));
            }
            if !fits_loss {
                return bad(key, format!("does not apply to the loss {loss:?}"));
            }
        }
        Ok(())
    }
}

/// The base learning rate of an optimizer config.
pub trait OptimizerExt {
    fn learning_rate(&self) -> f64;
}

impl OptimizerExt for OptimizerConfig {
    fn learning_rate(&self) -> f64 {
        match *self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adagrad { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::Adamw { lr, .. } => lr,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
