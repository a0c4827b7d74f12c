//! [`probe`]: which CUDA devices this process can use, and if none, why — without ever
//! panicking (cudarc panics on the first call into a library it cannot load, so the libraries
//! are looked for first and every driver call runs under `catch_unwind`).
//!
//! `cumulus gpu-executor --probe` prints the report and exits with [`ProbeReport::exit_code`].
//!
//! ```
//! let report = cumulus_gpu::probe();
//! println!("{report}");
//! if !report.usable() {
//!     assert!(report.problem.is_some());
//!     assert_eq!(report.exit_code(), 1);
//! }
//! ```

use std::fmt;

/// One usable GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    /// `(major, minor)`.
    pub compute_capability: (i32, i32),
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Whether this build has the `cuda` feature.
    pub cuda_built: bool,
    /// `(library, found)` for libcuda, libnvrtc and libcublas (empty without the feature).
    pub libraries: Vec<(&'static str, bool)>,
    pub devices: Vec<GpuInfo>,
    /// Why no device is usable, when none is.
    pub problem: Option<String>,
}

impl ProbeReport {
    /// Whether at least one device can run the executor's CUDA backend.
    pub fn usable(&self) -> bool {
        self.problem.is_none() && !self.devices.is_empty()
    }

    /// 0 when a device is usable, 1 otherwise (`cumulus gpu-executor --probe`).
    pub fn exit_code(&self) -> i32 {
        if self.usable() { 0 } else { 1 }
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(problem) = &self.problem {
            return write!(f, "no CUDA device: {problem}");
        }
        writeln!(f, "{} usable CUDA device(s):", self.devices.len())?;
        for d in &self.devices {
            writeln!(
                f,
                "  cuda:{}  {}  compute capability {}.{}  {} MiB total, {} MiB free",
                d.ordinal,
                d.name,
                d.compute_capability.0,
                d.compute_capability.1,
                d.total_bytes >> 20,
                d.free_bytes >> 20
            )?;
        }
        Ok(())
    }
}

/// Looks for the CUDA libraries and devices.
pub fn probe() -> ProbeReport {
    imp::probe()
}

#[cfg(not(feature = "cuda"))]
mod imp {
    pub fn probe() -> super::ProbeReport {
        super::ProbeReport {
            cuda_built: false,
            libraries: Vec::new(),
            devices: Vec::new(),
            problem: Some(
                "this binary was built without the `cuda` feature (the CPU backend is used)".into(),
            ),
        }
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use cudarc::driver::CudaContext;

    use super::{GpuInfo, ProbeReport};
    use crate::backend::cuda::ffi;

    /// Runs `f`, turning a panic (cudarc's answer to some driver states) into an error, with
    /// the panic message kept out of stderr.
    fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = catch_unwind(AssertUnwindSafe(f));
        std::panic::set_hook(hook);
        match r {
            Ok(r) => r,
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver panicked".into())),
        }
    }

    fn device(ordinal: usize) -> Result<GpuInfo, String> {
        guarded(|| {
            let ctx = CudaContext::new(ordinal).map_err(|e| format!("{e}"))?;
            let name = ctx.name().map_err(|e| format!("{e}"))?;
            let cc = ctx.compute_capability().map_err(|e| format!("{e}"))?;
            let (free, total) = ctx.mem_get_info().map_err(|e| format!("{e}"))?;
            Ok(GpuInfo {
                ordinal,
                name,
                compute_capability: cc,
                total_bytes: total as u64,
                free_bytes: free as u64,
            })
        })
    }

    pub fn probe() -> ProbeReport {
        let libs = ffi::libraries();
        let mut report = ProbeReport {
            cuda_built: true,
            libraries: vec![
                ("libcuda", libs.cuda),
                ("libnvrtc", libs.nvrtc),
                ("libcublas", libs.cublas),
            ],
            devices: Vec::new(),
            problem: None,
        };
        let missing: Vec<&str> = report
            .libraries
            .iter()
            .filter(|(_, found)| !found)
            .map(|(name, _)| *name)
            .collect();
        if !libs.cuda {
            report.problem = Some(
                "the NVIDIA driver library (libcuda.so) could not be loaded: no driver on this \
                 machine, or it is not on the library path"
                    .into(),
            );
            return report;
        }
        if !missing.is_empty() {
            report.problem = Some(format!(
                "{} could not be loaded (the executor compiles its kernels with NVRTC and runs \
                 matrix products with cuBLAS): add their folder to LD_LIBRARY_PATH, e.g. from \
                 the nvidia-cuda-nvrtc and nvidia-cublas wheels",
                missing.join(" and ")
            ));
            return report;
        }
        let count = match guarded(|| CudaContext::device_count().map_err(|e| format!("{e}"))) {
            Ok(n) => n.max(0) as usize,
            Err(e) => {
                report.problem = Some(format!("the driver could not count devices: {e}"));
                return report;
            }
        };
        if count == 0 {
            report.problem = Some("the driver reports no CUDA device".into());
            return report;
        }
        let mut errors = Vec::new();
        for ordinal in 0..count {
            match device(ordinal) {
                Ok(info) => report.devices.push(info),
                Err(e) => errors.push(format!("cuda:{ordinal}: {e}")),
            }
        }
        if report.devices.is_empty() {
            report.problem = Some(format!("no device could be opened: {}", errors.join("; ")));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_why_when_there_is_no_device() {
        let report = probe();
        let text = report.to_string();
        if report.usable() {
            assert!(text.contains("cuda:0"), "{text}");
        } else {
            assert!(text.starts_with("no CUDA device: "), "{text}");
            assert_eq!(report.exit_code(), 1);
        }
    }
}
