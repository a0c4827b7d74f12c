//! Which backend the executor runs on, and why (the reason goes to the startup log): the CPU when
//! the configuration forces it or the probe finds no usable CUDA device, else CUDA; with
//! `backend = "cuda"` a missing device is an error instead.

#[cfg(feature = "cuda")]
use crate::backend::Backend;
use crate::backend::cpu::CpuBackend;
use crate::config::{BackendChoice, ExecutorConfig};
use crate::error::GpuError;

/// The backend picked.
pub(crate) enum Chosen {
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::backend::cuda::CudaBackend>),
    Cpu(CpuBackend, String),
    Failed(GpuError),
}

pub(crate) fn open_backend(cfg: &ExecutorConfig) -> Chosen {
    if cfg.backend == BackendChoice::Cpu {
        return Chosen::Cpu(CpuBackend::new(), "forced by the configuration".into());
    }
    let report = crate::probe::probe();
    let problem = match report.problem.clone() {
        Some(p) => p,
        None if report.devices.iter().all(|d| d.ordinal != cfg.device) => {
            format!(
                "no CUDA device {} ({} found)",
                cfg.device,
                report.devices.len()
            )
        }
        None => return open_cuda(cfg),
    };
    if cfg.backend == BackendChoice::Cuda {
        Chosen::Failed(GpuError::NoDevice(problem))
    } else {
        Chosen::Cpu(
            CpuBackend::new(),
            format!("no usable CUDA device: {problem}"),
        )
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(cfg: &ExecutorConfig) -> Chosen {
    match crate::backend::cuda::CudaBackend::open(cfg.device) {
        Ok(b) => {
            tracing::info!(device = %b.device_name(), "gpu executor backend: cuda");
            Chosen::Cuda(Box::new(b))
        }
        Err(e) if cfg.backend == BackendChoice::Auto => Chosen::Cpu(
            CpuBackend::new(),
            format!("CUDA device failed to open: {e}"),
        ),
        Err(e) => Chosen::Failed(e),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_cfg: &ExecutorConfig) -> Chosen {
    // The probe reports "built without the cuda feature" before this can be reached.
    Chosen::Cpu(CpuBackend::new(), "built without the `cuda` feature".into())
}
