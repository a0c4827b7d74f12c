//! Cumulus GPU executor: one process per GPU owns the CUDA context, and the function instances
//! of its node (inference stages, training workers) submit their work to it over a local socket
//! (gRPC, `gpu.v1.GpuExecutor`, on a Unix domain socket or loopback TCP).
//!
//! - Every tenant gets its own CUDA stream and cuBLAS handle, a weighted share of the device
//!   (fair queueing over estimated FLOPs), a bound on its work in flight, a priority class and a
//!   memory quota charged per allocation ([`executor`]).
//! - A model's weights are uploaded once and shared by every tenant that loads the same model
//!   (by content hash), freed when the last one leaves ([`executor::weights`]).
//! - A tenant's error (bad shapes, ids out of range, its quota) goes back to that tenant only:
//!   every input is checked on the host before any of it reaches the device.
//! - Two real backends run the same [`program`]s (the zoo's layer kinds translated into
//!   [`backend::Backend`] operations): [`backend::cpu::CpuBackend`], always built, and the CUDA
//!   backend (cuBLAS + NVRTC [`kernels`]) behind the `cuda` feature, which loads the CUDA
//!   libraries at run time. The startup log says which backend runs and why.
//!
//! The executor as a library ([`run`] gives an [`ExecutorHandle`]; `cumulus gpu-executor` is a
//! thin binary over it), the tenant's side ([`ExecutorClient`]) and the probe ([`probe`]):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cumulus_gpu::Result<()> {
//! use cumulus_gpu::{
//!     BackendChoice, ExecutorClient, ExecutorConfig, HostTensor, LayerRange, Listen, ModelSource,
//!     TenantOptions,
//! };
//! use cumulus_models::{Model, ModelConfig};
//!
//! let dir = tempfile::tempdir().expect("temp dir");
//! let model = Model::new(&ModelConfig::default_for("mlp")?, &candle_core::Device::Cpu)?;
//! model.save(dir.path().join("mlp"))?;
//!
//! let cfg = ExecutorConfig {
//!     backend: BackendChoice::Cpu,
//!     ..ExecutorConfig::new(Listen::Unix(dir.path().join("gpu.sock")))
//! };
//! let executor = cumulus_gpu::run(cfg).await?;
//!
//! let client = ExecutorClient::connect(&executor.listen, TenantOptions::named("stage")).await?;
//! let mlp = client
//!     .load_model(ModelSource::Folder(dir.path().join("mlp")), LayerRange::all())
//!     .await?;
//! let y = client.forward(&mlp, &HostTensor::f32(vec![2, 64], vec![0.1; 128])?).await?;
//! assert_eq!(y.shape(), &[2, 10]);
//! drop(client);
//! executor.stop().await?;
//! # Ok(()) }
//! ```

pub mod backend;
pub mod client;
pub mod config;
pub mod error;
pub mod executor;
pub mod kernels;
pub mod metrics;
pub mod probe;
pub mod program;
pub mod server;
pub mod tensor;
mod wire;

pub use client::{ExecutorClient, LayerRange, SessionInfo, TrainStepOutput};
pub use config::{BackendChoice, ExecutorConfig, Listen, Priority, TenantOptions};
pub use cumulus_models::Loss;
pub use error::{GpuError, Result};
pub use executor::weights::ModelSource;
pub use executor::{ExecutorStats, ModelHandle, TenantStats, WorkOutput};
pub use probe::{GpuInfo, ProbeReport, probe};
pub use program::check_supported;
pub use server::{ExecutorHandle, run, serve_until_signal};
pub use tensor::{DType, HostTensor, TensorData};
