//! CUDA checks. `nvrtc_compiles_every_kernel` needs only libnvrtc (CI runs it with the
//! nvidia-cuda-nvrtc wheel); the others need a GPU and print `SKIPPED` with the probe's reason
//! where there is none. On a GPU: every operation and every zoo program equals the CPU backend
//! within 1e-4 relative, and the executor serves several tenants on CUDA streams.
//!
//! `bench/gpu/check.sh` runs these (`cuda` in the name) on the GPU machine and collects the
//! per-check errors that [`report`] writes to `$CUMULUS_GPU_REPORT`.

use std::path::Path;

use cumulus_gpu::backend::cpu::CpuBackend;
use cumulus_gpu::backend::cuda::{CudaBackend, compile_kernels, ffi};
use cumulus_gpu::executor::weights::{ModelSource, read_model};
use cumulus_gpu::{
    BackendChoice, ExecutorClient, ExecutorConfig, GpuError, HostTensor, LayerRange, Listen,
    TenantOptions, probe,
};
use cumulus_models::{Loss, ModelConfig, architectures};

use crate::common::{
    forward_on, host, perturbed_model, rel_err, report, save, small_config, train_on, wave,
};
use crate::suite::op_suite;

/// CUDA against the CPU backend.
const TOL: f32 = 1e-4;

#[test]
fn nvrtc_compiles_every_kernel() {
    if !ffi::nvrtc_present() {
        println!(
            "nvrtc_compiles_every_kernel: SKIPPED: libnvrtc cannot be loaded (put the folder \
             holding libnvrtc.so.13 on LD_LIBRARY_PATH, e.g. from the nvidia-cuda-nvrtc wheel)"
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

/// The CUDA backend of device 0, or `None` (with the reason printed) where there is none.
fn gpu(test: &str) -> Option<CudaBackend> {
    let report = probe();
    if !report.usable() {
        println!("{test}: SKIPPED: {report}");
        return None;
    }
    Some(CudaBackend::open(0).expect("a usable device opens"))
}

#[test]
fn cuda_probe_lists_the_device() {
    let report = probe();
    println!("{report}");
    assert!(report.cuda_built);
    if report.usable() {
        assert!(!report.devices[0].name.is_empty());
        assert!(report.devices[0].total_bytes > 0);
    } else {
        assert_eq!(report.exit_code(), 1);
    }
}

#[test]
fn cuda_ops_match_the_cpu_backend() {
    let Some(cuda) = gpu("cuda_ops_match_the_cpu_backend") else {
        return;
    };
    let want = op_suite(&CpuBackend::new()).expect("cpu suite");
    let got = op_suite(&cuda).expect("cuda suite");
    assert_eq!(want.len(), got.len());
    let mut failed = Vec::new();
    for ((name, w), (_, g)) in want.iter().zip(&got) {
        let e = rel_err(g, w);
        report("cuda op", name, e, TOL);
        if e > TOL {
            failed.push(format!("{name}: {e:.2e}"));
        }
    }
    assert!(failed.is_empty(), "over {TOL}: {failed:?}");
}

/// CIFAR-sized ResNet-18 and the default transformer on top of the small configs.
fn gpu_configs() -> Vec<(String, ModelConfig)> {
    let mut v: Vec<(String, ModelConfig)> = architectures()
        .iter()
        .map(|a| (format!("{a} (small)"), small_config(a)))
        .collect();
    for arch in ["resnet", "transformer", "lenet", "mlp"] {
        v.push((
            format!("{arch} (default)"),
            ModelConfig::default_for(arch).expect("default"),
        ));
    }
    v
}

#[test]
fn cuda_programs_match_the_cpu_backend() {
    let Some(cuda) = gpu("cuda_programs_match_the_cpu_backend") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let cpu = CpuBackend::new();
    let mut failed = Vec::new();
    for (i, (name, cfg)) in gpu_configs().into_iter().enumerate() {
        let model = perturbed_model(&cfg, 100 + i as u32);
        let folder = save(&model, dir.path(), &format!("m{i}"));
        let n = model.num_layers();
        for (first, last) in [(0, n - 1), (0, n / 2), (n / 2 + usize::from(n > 1), n - 1)] {
            if first > last {
                continue;
            }
            let x = model.example_input(4).expect("input");
            let input = if first == 0 {
                x
            } else {
                model
                    .forward_range(0, first - 1, &x, false)
                    .expect("prefix")
            };
            let m = read_model(
                &ModelSource::Folder(folder.clone()),
                first,
                Some(last),
                false,
                &[],
                1 << 32,
            )
            .expect("reads");
            let want = forward_on(&cpu, &m.program, &m.tensors, &host(&input)).expect("cpu");
            let got = forward_on(&cuda, &m.program, &m.tensors, &host(&input)).expect("cuda");
            let e = rel_err(got.as_f32().expect("f32"), want.as_f32().expect("f32"));
            let check = format!("{name} layers {first}..={last}");
            report("cuda program", &check, e, TOL);
            if e > TOL {
                failed.push(format!("{check}: {e:.2e}"));
            }
        }
    }
    for (i, (loss, outputs)) in [
        (Loss::CrossEntropy, 10),
        (Loss::Mse, 1),
        (Loss::BinaryLogistic, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg: ModelConfig = serde_json::from_str(&format!(
            r#"{{"arch":"mlp","input_dim":64,"hidden":[128,64],"n_outputs":{outputs},"activation":"gelu"}}"#
        ))
        .expect("valid");
        let model = perturbed_model(&cfg, 200 + i as u32);
        let folder = save(&model, dir.path(), &format!("t{i}"));
        let m =
            read_model(&ModelSource::Folder(folder), 0, None, true, &[], 1 << 30).expect("reads");
        let rows = 32;
        let x = host(&model.example_input(rows).expect("input"));
        let targets: Vec<f32> = match loss {
            Loss::CrossEntropy => (0..rows).map(|r| (r % outputs) as f32).collect(),
            Loss::Mse => wave(rows, 7),
            Loss::BinaryLogistic => (0..rows).map(|r| (r % 2) as f32).collect(),
        };
        let t = HostTensor::f32(vec![rows], targets).expect("targets");
        let (lw, gw) = train_on(&cpu, &m, &x, &t, loss).expect("cpu step");
        let (lg, gg) = train_on(&cuda, &m, &x, &t, loss).expect("cuda step");
        let mut e = rel_err(&[lg], &[lw]);
        for ((_, a), (_, b)) in gg.iter().zip(&gw) {
            e = e.max(rel_err(a.as_f32().expect("f32"), b.as_f32().expect("f32")));
        }
        let check = format!("mlp train step {loss:?}");
        report("cuda program", &check, e, TOL);
        if e > TOL {
            failed.push(format!("{check}: {e:.2e}"));
        }
    }
    assert!(failed.is_empty(), "over {TOL}: {failed:?}");
}

async fn cuda_executor(dir: &Path) -> Option<cumulus_gpu::ExecutorHandle> {
    if !probe().usable() {
        println!("cuda_executor_serves_tenants: SKIPPED: {}", probe());
        return None;
    }
    let cfg = ExecutorConfig {
        backend: BackendChoice::Cuda,
        ..ExecutorConfig::new(Listen::Unix(dir.join("gpu.sock")))
    };
    Some(
        cumulus_gpu::run(cfg)
            .await
            .expect("the CUDA executor starts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cuda_executor_serves_tenants() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(exec) = cuda_executor(dir.path()).await else {
        return;
    };
    assert_eq!(exec.backend.as_str(), "cuda");
    let model = perturbed_model(&small_config("resnet"), 300);
    let folder = save(&model, dir.path(), "resnet");
    let loaded = read_model(
        &ModelSource::Folder(folder.clone()),
        0,
        None,
        false,
        &[],
        1 << 30,
    )
    .expect("reads");
    let x = host(&model.example_input(4).expect("input"));
    let want = forward_on(&CpuBackend::new(), &loaded.program, &loaded.tensors, &x).expect("cpu");

    let mut tasks = Vec::new();
    for t in 0..4 {
        let (listen, folder, x) = (exec.listen.clone(), folder.clone(), x.clone());
        tasks.push(tokio::spawn(async move {
            let c = ExecutorClient::connect(&listen, TenantOptions::named(format!("t{t}")))
                .await
                .expect("connects");
            let h = c
                .load_model(ModelSource::Folder(folder), LayerRange::all())
                .await
                .expect("loads");
            let mut outs = Vec::new();
            for _ in 0..10 {
                outs.push(c.forward(&h, &x).await.expect("forward"));
            }
            if t == 0 {
                let bad = HostTensor::f32(vec![1, 3, 4], vec![0.0; 12]).expect("t");
                let err = c.forward(&h, &bad).await.expect_err("bad shape");
                assert!(matches!(err, GpuError::BadInput { .. }), "{err}");
            }
            (c, outs)
        }));
    }
    let mut worst = 0.0f32;
    let mut clients = Vec::new();
    for t in tasks {
        let (c, outs) = t.await.expect("tenant task");
        for y in outs {
            worst = worst.max(rel_err(
                y.as_f32().expect("f32"),
                want.as_f32().expect("f32"),
            ));
        }
        clients.push(c);
    }
    report(
        "cuda executor",
        "4 tenants x 10 resnet forwards",
        worst,
        TOL,
    );
    assert!(worst <= TOL);
    let stats = exec.stats().await.expect("stats");
    assert_eq!(
        stats.resident_weight_bytes,
        loaded.program.weight_bytes(),
        "one shared copy"
    );
    assert!(stats.tenants.iter().all(|t| t.completed == 10));
    drop(clients);
    exec.stop().await.expect("stops");
}
