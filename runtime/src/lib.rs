//! Cumulus function platform: the `/invoke` contract, local process and HTTP backends, warm pools
//! with keep-alive policies, memory and time limits, billing, and the `cumulus.toml` types.
//!
//! - [`Platform`] invokes functions by name: an idle warm instance, else a cold start (up to
//!   `max_instances`), else a bounded queue (full: [`RuntimeError::QueueFull`] at once). Functions
//!   with a `url` go to a remote backend (Knative Serving, OpenFaaS) over the same HTTP contract.
//! - Local instances are processes `cumulus fn <kind>` (see [`instance`]) in a cgroup (v1 or v2)
//!   limiting memory to the tier and CPU to `memory / 1769 MB` vCPUs, or under `RLIMIT_DATA` where
//!   cgroups cannot be created. Deaths are reported as out-of-memory, exit code, or deadline.
//!   Ports never race: the platform starts `cumulus fn <kind> --listen 127.0.0.1:0 --addr-file F`,
//!   the instance binds and then writes its address to `F`, and the platform waits for `/healthz`.
//!   On Knative/OpenFaaS the instance listens on `0.0.0.0:$PORT` instead.
//! - [`keepalive`] holds the pure keep-alive policies (fixed TTL, the hybrid histogram of Shahrad et
//!   al., ATC'20) and a trace simulator comparing them.
//! - [`billing`] prices every invocation like AWS Lambda and aggregates per function and job.
//! - `bench` (feature `bench`) is the logic of `cumulus bench runtime`.
//!
//! The hybrid policy's fallback window (used while a function's histogram is not representative)
//! defaults to 10 minutes, where the paper uses the histogram's range (4 hours): on generated
//! traces with many rare functions the paper's value trades much more idle memory for few cold
//! starts. `fallback_keep_alive_ms = 14400000` restores it.

#[cfg(feature = "bench")]
pub mod bench;
pub mod billing;
mod call;
pub mod config;
mod error;
pub mod instance;
pub mod keepalive;
mod local;
pub mod metrics;
mod platform;
mod pool;
pub mod serving;

pub use config::{
    CumulusConfig, ExecutorBackend, FunctionOverride, FunctionSpec, FunctionsConfig, GpuConfig,
    GpuDevice, LimitMode, StorageConfig,
};
pub use error::{FunctionFailure, InstanceExit, RuntimeError};
pub use platform::{Capacity, Invocation, InvokeRequest, Platform, StartKind};
pub use pool::PoolStats;
pub use serving::{Batching, Execution, InferenceConfig, ModelOverride, ModelServing};
pub use tokio_util::sync::CancellationToken;
