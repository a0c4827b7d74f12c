//! `cumulus.toml`: the platform's configuration file, its defaults and its validation.
//!
//! The file has one table per concern; this crate owns `[pricing]` and `[functions]`, and later
//! sections (`[storage]`, `[auth]`, `[models.<name>]`) become further fields of [`CumulusConfig`].
//! Every table refuses unknown keys, and [`CumulusConfig::load`] names the file, the key and the
//! reason of any error.
//!
//! ```
//! let config = cumulus_runtime::CumulusConfig::from_toml_str(
//!     "[functions.defaults]\nmemory_mb = 512\n",
//!     "inline",
//! ).unwrap();
//! assert_eq!(config.functions.spec("builtin-echo").memory_mb, 512);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::billing::Pricing;
use crate::error::RuntimeError;
use crate::keepalive::KeepAliveConfig;
use crate::serving::{InferenceConfig, ModelOverride, ModelServing};

/// The whole `cumulus.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CumulusConfig {
    /// Prices used by the billing meter.
    pub pricing: Pricing,
    /// The function platform.
    pub functions: FunctionsConfig,
    /// Who may use the control plane's APIs.
    pub auth: AuthConfig,
    /// The inference gateway's limits and serving defaults.
    pub inference: InferenceConfig,
    /// How each model is served, by model name (over `[inference.defaults]`).
    pub models: BTreeMap<String, ModelOverride>,
    /// Where jobs submitted over the network may read and write.
    pub storage: StorageConfig,
    /// Whether functions run their models on the node's shared GPU executor.
    pub gpu: GpuConfig,
}

/// Where functions run their models' layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuDevice {
    /// In the function instances, on their CPU share.
    #[default]
    Cpu,
    /// On the GPU executor when a CUDA device is found, else in the instances (the log says
    /// which and why).
    Auto,
    /// On the GPU executor; the control plane refuses to start without a CUDA device.
    Cuda,
}

/// The backend of the GPU executor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorBackend {
    #[default]
    Cuda,
    /// The executor's CPU backend: the whole GPU path (sockets, scheduler, shared weights)
    /// without a GPU — for tests and for machines being set up.
    Cpu,
}

/// `[gpu]`: the shared GPU executor of this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    /// `cpu` (default), `auto` or `cuda`.
    pub device: GpuDevice,
    /// `cuda` (default), or `cpu` to run the executor's CPU backend.
    pub executor_backend: ExecutorBackend,
    /// The executor's Unix socket; one in the control plane's work folder when absent.
    pub socket: Option<PathBuf>,
    /// CUDA device ordinal.
    pub ordinal: usize,
}

/// `[storage]`: the folders a job submitted to the control plane may use. The control plane's
/// own work folder and model repository are always allowed; `cumulus train` (a local user on
/// their own files) is not confined.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Folders whose files jobs may read (data sources, `[model] from`).
    pub data_roots: Vec<PathBuf>,
    /// Folders jobs may write their output into.
    pub output_roots: Vec<PathBuf>,
}

/// `[auth]`: bearer tokens of the job API. No tokens means no authentication.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted `Authorization: Bearer <token>` values.
    pub tokens: Vec<String>,
}

// Tokens are secrets: a logged config shows how many there are, never what they are.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .finish()
    }
}

/// How an instance's memory and CPU are limited by the local backend.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// A cgroup (v1 or v2) when the machine allows creating one, else `rlimit`.
    #[default]
    Auto,
    /// A cgroup, or refuse to start instances.
    Cgroup,
    /// `RLIMIT_DATA` on the instance process (memory only; no CPU share).
    Rlimit,
    /// No limits (development only).
    None,
}

/// `[functions]`: settings of the platform and of every function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// The `cumulus` executable started as `cumulus fn <kind>`; defaults to the current executable.
    pub executable: Option<PathBuf>,
    /// The memory tiers a function may use, in MB (as Lambda's 128 MB – 10 240 MB range).
    pub memory_tiers_mb: Vec<u32>,
    /// How memory and CPU are limited.
    pub limits: LimitMode,
    /// Where cgroup file systems are mounted.
    pub cgroup_root: PathBuf,
    /// Memory per vCPU: the CPU share is `memory_mb / mb_per_vcpu` (Lambda: 1769 MB = 1 vCPU). 0 = no CPU limit.
    pub mb_per_vcpu: u32,
    /// How long a cold start may take (spawn to ready) before it is reported as failed.
    pub start_timeout_ms: u64,
    /// How often keep-alive and `min_instances` are enforced.
    pub reap_interval_ms: u64,
    /// The largest payload accepted by `invoke`, in bytes (Lambda: 6 MB for synchronous calls).
    pub max_payload_bytes: usize,
    /// Memory the platform may hand to deployed functions' local instances at once, MB: a
    /// deployment (a training job's workers) reserves `max_instances × memory_mb` of it and is
    /// refused when that does not fit. The machine's physical memory when absent.
    pub capacity_mb: Option<u64>,
    /// Settings of every function that has no override.
    pub defaults: FunctionSpec,
    /// Per-function overrides, by function name.
    pub overrides: BTreeMap<String, FunctionOverride>,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            executable: None,
            memory_tiers_mb: vec![128, 256, 512, 1024, 1769, 2048, 3008, 4096, 8192, 10240],
            limits: LimitMode::Auto,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            mb_per_vcpu: 1769,
            start_timeout_ms: 10_000,
            reap_interval_ms: 1_000,
            max_payload_bytes: 6 * 1024 * 1024,
            capacity_mb: None,
            defaults: FunctionSpec::default(),
            overrides: BTreeMap::new(),
        }
    }
}

/// The resolved settings of one function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionSpec {
    /// The kind to run (`cumulus fn <kind>`); defaults to the function's name.
    pub kind: Option<String>,
    /// Invoke this URL instead of starting local processes (Knative, OpenFaaS): `POST {url}/invoke`.
    pub url: Option<String>,
    /// Memory tier in MB; one of `memory_tiers_mb`.
    pub memory_mb: u32,
    /// Default deadline of one invocation, in ms (Lambda's maximum is 900 000).
    pub timeout_ms: u64,
    /// Most instances alive at once.
    pub max_instances: usize,
    /// Instances kept alive even when idle.
    pub min_instances: usize,
    /// Invocations that may wait for an instance; one more is refused at once.
    pub queue_capacity: usize,
    /// Invocations one instance runs at once.
    pub concurrency: usize,
    /// When idle instances are stopped and pre-warmed.
    pub keep_alive: KeepAliveConfig,
}

impl Default for FunctionSpec {
    fn default() -> Self {
        Self {
            kind: None,
            url: None,
            memory_mb: 1024,
            timeout_ms: 60_000,
            max_instances: 4,
            min_instances: 0,
            queue_capacity: 64,
            concurrency: 1,
            keep_alive: KeepAliveConfig::default(),
        }
    }
}

impl FunctionSpec {
    /// The default deadline as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[functions.overrides.<name>]`: the keys of [`FunctionSpec`] that differ for one function.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FunctionOverride {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub max_instances: Option<usize>,
    pub min_instances: Option<usize>,
    pub queue_capacity: Option<usize>,
    pub concurrency: Option<usize>,
    pub keep_alive: Option<KeepAliveConfig>,
}

impl FunctionsConfig {
    /// The memory deployments may reserve, MB: `capacity_mb`, else the machine's physical memory
    /// (`MemTotal` of /proc/meminfo), else unbounded.
    pub fn capacity(&self) -> u64 {
        self.capacity_mb
            .or_else(physical_memory_mb)
            .unwrap_or(u64::MAX)
    }

    /// Checks one function's resolved settings against the platform's rules (tier offered,
    /// ranges); `key` names it in the message, e.g. `functions.overrides.w` or `[workers]`.
    pub fn check_spec(&self, key: &str, spec: &FunctionSpec) -> Result<(), String> {
        validate_spec(self, key, spec)
    }

    /// The settings of `function`: the defaults with its override applied, `kind` filled in.
    pub fn spec(&self, function: &str) -> FunctionSpec {
        let mut spec = self.defaults.clone();
        if let Some(o) = self.overrides.get(function) {
            let o = o.clone();
            spec.kind = o.kind.or(spec.kind);
            spec.url = o.url.or(spec.url);
            spec.memory_mb = o.memory_mb.unwrap_or(spec.memory_mb);
            spec.timeout_ms = o.timeout_ms.unwrap_or(spec.timeout_ms);
            spec.max_instances = o.max_instances.unwrap_or(spec.max_instances);
            spec.min_instances = o.min_instances.unwrap_or(spec.min_instances);
            spec.queue_capacity = o.queue_capacity.unwrap_or(spec.queue_capacity);
            spec.concurrency = o.concurrency.unwrap_or(spec.concurrency);
            spec.keep_alive = o.keep_alive.unwrap_or(spec.keep_alive);
        }
        if spec.kind.is_none() {
            spec.kind = Some(function.to_owned());
        }
        spec
    }
}

/// The machine's physical memory in MB, from /proc/meminfo.
fn physical_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Whether `name` is a valid function (or kind) name: 1–63 characters of `[a-z0-9-]`, starting
/// with a letter or digit (a DNS label, so it can name a Knative Service).
pub fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A function name for `name` (a model, a job id): `<prefix>-`, then `name` made a DNS label
/// (lower case, `[a-z0-9-]`, at most 40 characters of it), then a hash of the whole name, so
/// names differing only in case or punctuation never share a function.
pub fn function_name(prefix: &str, name: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5; // FNV-1a
    for b in name.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let clean: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{prefix}-{}-{hash:08x}", clean.trim_matches('-'))
}

impl CumulusConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::ConfigFile {
            path: path.to_owned(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self, RuntimeError> {
        let path = origin.as_ref().to_owned();
        // toml's message names the key and shows the line; we add the file.
        let config: CumulusConfig = toml::from_str(text).map_err(|e| RuntimeError::ConfigFile {
            path: path.clone(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        config
            .validate()
            .map_err(|reason| RuntimeError::ConfigFile { path, reason })?;
        Ok(config)
    }

    /// How the gateway serves model `name`: `[models.<name>]` over `[inference.defaults]`.
    pub fn serving(&self, name: &str) -> ModelServing {
        match self.models.get(name) {
            Some(o) => o.apply(&self.inference.defaults),
            None => self.inference.defaults.clone(),
        }
    }

    /// Checks the values that serde cannot: ranges, tiers, names. The error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.pricing.validate()?;
        let tiers = &self.functions.memory_tiers_mb;
        self.inference.validate(tiers)?;
        for name in self.models.keys() {
            if name.is_empty()
                || name.len() > 128
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                || name.starts_with('.')
            {
                return Err(format!(
                    "models.{name:?}: model names use 1-128 characters from [A-Za-z0-9_.-], not starting with '.'"
                ));
            }
            self.serving(name)
                .validate(&format!("models.{name}"), tiers)?;
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.trim().is_empty() {
                return Err(format!("auth.tokens[{i}]: a token must not be empty"));
            }
        }
        let f = &self.functions;
        if f.memory_tiers_mb.is_empty() {
            return Err("functions.memory_tiers_mb: must list at least one tier".into());
        }
        for (i, &tier) in f.memory_tiers_mb.iter().enumerate() {
            if !(128..=10_240).contains(&tier) {
                return Err(format!(
                    "functions.memory_tiers_mb[{i}]: {tier} MB is outside 128..=10240"
                ));
            }
        }
        if f.start_timeout_ms == 0 || f.start_timeout_ms > 600_000 {
            return Err("functions.start_timeout_ms: must be in 1..=600000".into());
        }
        if !(5..=60_000).contains(&f.reap_interval_ms) {
            return Err("functions.reap_interval_ms: must be in 5..=60000".into());
        }
        if f.max_payload_bytes == 0 || f.max_payload_bytes > 1 << 30 {
            return Err("functions.max_payload_bytes: must be in 1..=1073741824".into());
        }
        if let Some(c) = f.capacity_mb
            && !(128..=1 << 24).contains(&c)
        {
            return Err(format!(
                "functions.capacity_mb: {c} MB is outside 128..=16777216"
            ));
        }
        validate_spec(f, "functions.defaults", &f.defaults)?;
        for name in f.overrides.keys() {
            let key = format!("functions.overrides.{name}");
            if !valid_function_name(name) {
                return Err(format!(
                    "{key}: function names use 1-63 characters from [a-z0-9-]"
                ));
            }
            validate_spec(f, &key, &f.spec(name))?;
        }
        Ok(())
    }
}

fn validate_spec(f: &FunctionsConfig, key: &str, spec: &FunctionSpec) -> Result<(), String> {
    if let Some(kind) = &spec.kind
        && !valid_function_name(kind)
    {
        return Err(format!(
            "{key}.kind: {kind:?} is not a valid kind name ([a-z0-9-], 1-63)"
        ));
    }
    if let Some(url) = &spec.url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!(
            "{key}.url: {url:?} must start with http:// or https://"
        ));
    }
    if !f.memory_tiers_mb.contains(&spec.memory_mb) {
        return Err(format!(
            "{key}.memory_mb: {} is not one of functions.memory_tiers_mb {:?}",
            spec.memory_mb, f.memory_tiers_mb
        ));
    }
    if spec.timeout_ms == 0 || spec.timeout_ms > 900_000 {
        return Err(format!(
            "{key}.timeout_ms: must be in 1..=900000 (Lambda's 15 minutes)"
        ));
    }
    if spec.max_instances == 0 || spec.max_instances > 10_000 {
        return Err(format!("{key}.max_instances: must be in 1..=10000"));
    }
    if spec.min_instances > spec.max_instances {
        return Err(format!(
            "{key}.min_instances: {} exceeds max_instances {}",
            spec.min_instances, spec.max_instances
        ));
    }
    if spec.queue_capacity > 100_000 {
        return Err(format!("{key}.queue_capacity: must be at most 100000"));
    }
    if spec.concurrency == 0 || spec.concurrency > 1_000 {
        return Err(format!("{key}.concurrency: must be in 1..=1000"));
    }
    spec.keep_alive
        .validate()
        .map_err(|e| format!("{key}.keep_alive.{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        CumulusConfig::default()
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn unknown_key_is_refused_with_file_and_key() {
        let err = CumulusConfig::from_toml_str("[functions]\nmemroy_tiers_mb = [128]\n", "a.toml")
            .expect_err("typo must be refused");
        let text = err.to_string();
        assert!(text.contains("a.toml"), "{text}");
        assert!(text.contains("memroy_tiers_mb"), "{text}");
    }

    #[test]
    fn auth_tokens_are_read_checked_and_never_shown() {
        let c = CumulusConfig::from_toml_str("[auth]\ntokens = [\"s3cret\"]\n", "d.toml")
            .expect("valid");
        assert_eq!(c.auth.tokens, ["s3cret"]);
        assert!(!format!("{c:?}").contains("s3cret"));
        let err = CumulusConfig::from_toml_str("[auth]\ntokens = [\"\"]\n", "e.toml")
            .expect_err("an empty token is refused");
        assert!(err.to_string().contains("auth.tokens[0]"), "{err}");
    }

    #[test]
    fn memory_outside_tiers_is_refused() {
        let err =
            CumulusConfig::from_toml_str("[functions.overrides.echo]\nmemory_mb = 100\n", "b.toml")
                .expect_err("100 MB is no tier");
        assert!(
            err.to_string()
                .contains("functions.overrides.echo.memory_mb"),
            "{err}"
        );
    }

    #[test]
    fn override_merges_over_defaults() {
        let c = CumulusConfig::from_toml_str(
            "[functions.defaults]\nmax_instances = 7\n[functions.overrides.w]\nkind = \"train-worker\"\nmemory_mb = 3008\n[functions.overrides.w.keep_alive]\npolicy = \"fixed\"\nttl_ms = 200\n",
            "c.toml",
        )
        .expect("valid");
        let spec = c.functions.spec("w");
        assert_eq!(spec.kind.as_deref(), Some("train-worker"));
        assert_eq!(spec.memory_mb, 3008);
        assert_eq!(spec.max_instances, 7);
        assert_eq!(spec.keep_alive, KeepAliveConfig::Fixed { ttl_ms: 200 });
        assert_eq!(c.functions.spec("other").kind.as_deref(), Some("other"));
    }
}
