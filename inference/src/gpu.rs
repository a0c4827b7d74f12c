//! The GPU path of inference: with `[gpu] device = "cuda"` (or `"auto"` and a CUDA device
//! found), the control plane starts the node's GPU executor (`cumulus-gpu`), and every
//! `infer-stage` invocation runs its layer range there — one resident copy of each model's
//! weights for all the instances of the node — instead of on its own CPU share. A layer the
//! executor does not cover is named in the log and the stage runs on the CPU.

use std::path::{Path, PathBuf};

use cumulus_gpu::{BackendChoice, ExecutorConfig, ExecutorHandle, Listen};
use cumulus_runtime::{ExecutorBackend, GpuConfig, GpuDevice};

/// A running executor and where functions reach it.
#[derive(Debug)]
pub struct GpuExecutor {
    pub socket: PathBuf,
    handle: ExecutorHandle,
}

impl GpuExecutor {
    /// Starts the executor `cfg` asks for, its socket in `work_dir` unless the config names
    /// one; `None` when models run in the instances (`device = "cpu"`, or `"auto"` without a
    /// CUDA device).
    pub async fn start(cfg: &GpuConfig, work_dir: &Path) -> Result<Option<Self>, String> {
        let backend = match (cfg.device, cfg.executor_backend) {
            (GpuDevice::Cpu, _) => return Ok(None),
            (GpuDevice::Auto, _) => {
                let probe = cumulus_gpu::probe();
                if probe.devices.is_empty() {
                    tracing::info!(reason = %probe, "[gpu] device = \"auto\": no CUDA device, models run in their instances");
                    return Ok(None);
                }
                BackendChoice::Cuda
            }
            (GpuDevice::Cuda, ExecutorBackend::Cuda) => BackendChoice::Cuda,
            (GpuDevice::Cuda, ExecutorBackend::Cpu) => BackendChoice::Cpu,
        };
        let socket = cfg
            .socket
            .clone()
            .unwrap_or_else(|| work_dir.join("gpu-executor.sock"));
        let config = ExecutorConfig {
            listen: Listen::Unix(socket.clone()),
            backend,
            device: cfg.ordinal,
            ..ExecutorConfig::default()
        };
        let handle = cumulus_gpu::run(config)
            .await
            .map_err(|e| format!("[gpu] device = \"cuda\": the GPU executor did not start: {e}"))?;
        tracing::info!(socket = %socket.display(), backend = ?handle.backend, device = %handle.device, "GPU executor serving the node's functions");
        Ok(Some(Self { socket, handle }))
    }

    /// Stops the executor (after the functions that use it).
    pub async fn stop(self) {
        if let Err(e) = self.handle.stop().await {
            tracing::warn!(error = %e, "stopping the GPU executor");
        }
    }
}
