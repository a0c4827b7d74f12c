//! [`ExecutorConfig`] (how the executor listens, which backend it uses, its bounds and the
//! defaults it grants tenants) and [`TenantOptions`] (what a tenant asks for when it connects).
//!
//! The config is a serde struct with unknown fields refused, so it can sit in a section of
//! `cumulus.toml`; [`ExecutorConfig::validate`] names the first bad field.
//!
//! ```
//! use cumulus_gpu::{BackendChoice, ExecutorConfig, Listen};
//!
//! let cfg = ExecutorConfig {
//!     backend: BackendChoice::Cpu,
//!     ..ExecutorConfig::new(Listen::Unix("/tmp/cumulus-gpu.sock".into()))
//! };
//! cfg.validate()?;
//! // The benchmark's baseline: the same tenants, one work item on the device at a time.
//! let turns = cfg.clone().exclusive_turns();
//! assert_eq!(turns.max_in_flight_total, 1);
//! # Ok::<(), cumulus_gpu::GpuError>(())
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{GpuError, Result};

/// Where the executor listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listen {
    /// A Unix domain socket at this path (a stale socket file there is replaced).
    Unix(PathBuf),
    /// A loopback TCP address (port 0 picks one); other addresses are refused, since the
    /// executor has no authentication of its own.
    Tcp(SocketAddr),
}

/// Which backend runs the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// CUDA when the probe finds a usable device, else the CPU (the startup log says why).
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// CUDA or fail to start.
    Cuda,
}

/// Scheduling class of a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Throughput work (training steps, batch inference).
    #[default]
    Normal,
    /// Latency-critical inference: served first when it returns from idle (a bounded lead, so
    /// it never starves the others) and run on a high-priority CUDA stream.
    LatencyCritical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::LatencyCritical => "latency_critical",
        }
    }
}

/// What a tenant asks for; zeros take the executor's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantOptions {
    /// For logs and stats.
    pub name: String,
    /// Share of the device relative to the other tenants, 1..=1000 (0: default).
    pub weight: u32,
    pub priority: Priority,
    /// Most work items on the device at once (0: default).
    pub max_in_flight: u32,
    /// Device bytes this tenant may hold: the full size of every model it has loaded plus its
    /// work's activations (0: default).
    pub memory_quota_bytes: u64,
}

impl TenantOptions {
    /// Options with a name and every limit at the executor's default.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// The limits a tenant gets when it does not ask for others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantDefaults {
    pub weight: u32,
    pub max_in_flight: u32,
    pub memory_quota_bytes: u64,
}

impl Default for TenantDefaults {
    fn default() -> Self {
        Self {
            weight: 1,
            max_in_flight: 2,
            memory_quota_bytes: 2 << 30,
        }
    }
}

/// The executor's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub listen: Listen,
    pub backend: BackendChoice,
    /// CUDA device ordinal.
    pub device: usize,
    /// Most tenants connected at once.
    pub max_tenants: usize,
    /// Work items one tenant may have queued (not yet dispatched).
    pub max_queue_per_tenant: usize,
    /// Work items queued over all tenants.
    pub max_queue_total: usize,
    /// Work items on the device at once over all tenants; 1 makes tenants take exclusive turns.
    /// The tenants' weights divide the device when this bound is reached (below it every
    /// tenant runs up to its own `max_in_flight`).
    pub max_in_flight_total: usize,
    /// Largest `max_in_flight` a tenant may ask for.
    pub max_in_flight_per_tenant: u32,
    /// Largest memory quota a tenant may ask for.
    pub max_quota_bytes: u64,
    /// Largest gRPC message (an inline model's weights travel in one).
    pub max_message_bytes: usize,
    /// Largest tensor accepted from the socket, in elements.
    pub max_tensor_elements: usize,
    /// Largest intermediate buffer a work item may allocate, in elements.
    pub max_buffer_elements: usize,
    /// Device bytes the executor may use over all tenants (weights counted once); `None` takes
    /// 90% of the GPU's memory, or 16 GiB on the CPU.
    pub device_memory_limit: Option<u64>,
    /// Free device memory (by `mem_get_info`) below which new work and loads are refused.
    pub device_memory_reserve: u64,
    /// Lead in cost units (FLOPs) a latency-critical tenant gets when it returns from idle.
    pub latency_lead: u64,
    /// Model folders tenants may name by path; empty allows any path readable by the executor.
    pub model_roots: Vec<PathBuf>,
    /// Microseconds an idle executor thread keeps polling its channel (yielding the CPU) before
    /// it sleeps: hand-offs between the scheduler and the tenants' launchers then cost no
    /// thread wake-up while work keeps coming.
    pub spin_micros: u64,
    pub tenant_defaults: TenantDefaults,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            listen: Listen::Unix(std::env::temp_dir().join("cumulus-gpu.sock")),
            backend: BackendChoice::Auto,
            device: 0,
            max_tenants: 64,
            max_queue_per_tenant: 64,
            max_queue_total: 1024,
            max_in_flight_total: 8,
            max_in_flight_per_tenant: 16,
            max_quota_bytes: 64 << 30,
            max_message_bytes: 256 << 20,
            max_tensor_elements: 1 << 25,
            max_buffer_elements: 1 << 28,
            device_memory_limit: None,
            device_memory_reserve: 256 << 20,
            latency_lead: 50_000_000,
            model_roots: Vec::new(),
            spin_micros: 200,
            tenant_defaults: TenantDefaults::default(),
        }
    }
}

fn at_least_one(field: &str, v: u64) -> Result<()> {
    if v == 0 {
        return Err(GpuError::config(field, "must be at least 1"));
    }
    Ok(())
}

impl ExecutorConfig {
    /// A config that listens on `listen` with every other setting at its default.
    pub fn new(listen: Listen) -> Self {
        Self {
            listen,
            ..Self::default()
        }
    }

    /// The same config with one work item on the device at a time: the tenants take exclusive
    /// turns (the benchmark's baseline).
    pub fn exclusive_turns(mut self) -> Self {
        self.max_in_flight_total = 1;
        self
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if let Listen::Tcp(addr) = &self.listen
            && !addr.ip().is_loopback()
        {
            return Err(GpuError::config(
                "listen",
                format!("{addr} is not a loopback address (the executor has no authentication)"),
            ));
        }
        at_least_one("max_tenants", self.max_tenants as u64)?;
        at_least_one("max_queue_per_tenant", self.max_queue_per_tenant as u64)?;
        at_least_one("max_queue_total", self.max_queue_total as u64)?;
        at_least_one("max_in_flight_total", self.max_in_flight_total as u64)?;
        at_least_one(
            "max_in_flight_per_tenant",
            u64::from(self.max_in_flight_per_tenant),
        )?;
        at_least_one("max_message_bytes", self.max_message_bytes as u64)?;
        at_least_one("max_tensor_elements", self.max_tensor_elements as u64)?;
        at_least_one("max_buffer_elements", self.max_buffer_elements as u64)?;
        let d = &self.tenant_defaults;
        if !(1..=1000).contains(&d.weight) {
            return Err(GpuError::config(
                "tenant_defaults.weight",
                format!("must be in 1..=1000, got {}", d.weight),
            ));
        }
        if d.max_in_flight == 0 || d.max_in_flight > self.max_in_flight_per_tenant {
            return Err(GpuError::config(
                "tenant_defaults.max_in_flight",
                format!(
                    "must be in 1..={}, got {}",
                    self.max_in_flight_per_tenant, d.max_in_flight
                ),
            ));
        }
        if d.memory_quota_bytes == 0 || d.memory_quota_bytes > self.max_quota_bytes {
            return Err(GpuError::config(
                "tenant_defaults.memory_quota_bytes",
                format!(
                    "must be in 1..={}, got {}",
                    self.max_quota_bytes, d.memory_quota_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The limits granted to a tenant asking for `opts`, or an error naming the option out of
    /// range.
    pub fn grant(&self, opts: &TenantOptions) -> Result<Grant> {
        let d = &self.tenant_defaults;
        let weight = if opts.weight == 0 {
            d.weight
        } else {
            opts.weight
        };
        if weight > 1000 {
            return Err(GpuError::config(
                "weight",
                format!("must be in 1..=1000, got {weight}"),
            ));
        }
        let max_in_flight = if opts.max_in_flight == 0 {
            d.max_in_flight
        } else {
            opts.max_in_flight
        };
        if max_in_flight > self.max_in_flight_per_tenant {
            return Err(GpuError::config(
                "max_in_flight",
                format!(
                    "must be at most {}, got {max_in_flight}",
                    self.max_in_flight_per_tenant
                ),
            ));
        }
        let quota = if opts.memory_quota_bytes == 0 {
            d.memory_quota_bytes
        } else {
            opts.memory_quota_bytes
        };
        if quota > self.max_quota_bytes {
            return Err(GpuError::config(
                "memory_quota_bytes",
                format!("must be at most {}, got {quota}", self.max_quota_bytes),
            ));
        }
        if opts.name.len() > 256 {
            return Err(GpuError::config("name", "longer than 256 bytes"));
        }
        Ok(Grant {
            name: opts.name.clone(),
            weight,
            priority: opts.priority,
            max_in_flight,
            memory_quota_bytes: quota,
        })
    }
}

/// The limits a tenant was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub weight: u32,
    pub priority: Priority,
    pub max_in_flight: u32,
    pub memory_quota_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_validates_and_roundtrips_through_toml_like_json() {
        let cfg = ExecutorConfig::default();
        cfg.validate().expect("the default is valid");
        let json = serde_json::to_string(&cfg).expect("serializes");
        let back: ExecutorConfig = serde_json::from_str(&json).expect("own output parses");
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<ExecutorConfig>(r#"{"colour": 1}"#).is_err());
    }

    #[test]
    fn a_cumulus_toml_section_parses() {
        let cfg: ExecutorConfig = toml::from_str(
            r#"
            listen = { unix = "/run/cumulus/gpu.sock" }
            backend = "cuda"
            max_in_flight_total = 4
            [tenant_defaults]
            memory_quota_bytes = 1073741824
            "#,
        )
        .expect("parses");
        cfg.validate().expect("valid");
        assert_eq!(cfg.listen, Listen::Unix("/run/cumulus/gpu.sock".into()));
        assert_eq!(
            cfg.tenant_defaults.weight, 1,
            "unset fields keep their defaults"
        );
        let err = toml::from_str::<ExecutorConfig>("backnd = \"cpu\"").expect_err("typo");
        assert!(err.to_string().contains("backnd"), "{err}");
    }

    #[test]
    fn bad_settings_name_their_field() {
        let remote = ExecutorConfig::new(Listen::Tcp("10.0.0.1:7000".parse().expect("addr")));
        let err = remote.validate().expect_err("not loopback").to_string();
        assert!(err.contains("`listen`"), "{err}");
        let zero = ExecutorConfig {
            max_in_flight_total: 0,
            ..ExecutorConfig::default()
        };
        assert!(
            zero.validate()
                .expect_err("zero")
                .to_string()
                .contains("max_in_flight_total")
        );
    }

    #[test]
    fn grants_fill_defaults_and_refuse_what_is_out_of_range() {
        let cfg = ExecutorConfig::default();
        let g = cfg.grant(&TenantOptions::named("a")).expect("defaults");
        assert_eq!(g.weight, 1);
        assert_eq!(g.max_in_flight, cfg.tenant_defaults.max_in_flight);
        let too_heavy = TenantOptions {
            weight: 5000,
            ..TenantOptions::default()
        };
        assert!(cfg.grant(&too_heavy).is_err());
        let too_big = TenantOptions {
            memory_quota_bytes: u64::MAX,
            ..TenantOptions::default()
        };
        assert!(cfg.grant(&too_big).is_err());
    }
}
