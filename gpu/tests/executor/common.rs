//! Helpers shared by the test modules.
#![allow(dead_code)]

/// `max |a - b| / max(1, max |b|)`: the relative error the tests bound.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    if a.iter().chain(b).any(|v| v.is_nan()) {
        return f32::INFINITY;
    }
    diff / scale
}

/// Deterministic values in [-1, 1).
pub fn wave(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cumulus_gpu::backend::Backend;
use cumulus_gpu::backend::cpu::CpuBackend;
use cumulus_gpu::executor::quota::Ledger;
use cumulus_gpu::program::{Exec, Program};
use cumulus_gpu::{HostTensor, Priority};
use cumulus_models::{Model, ModelConfig};

/// Small configs of every architecture (a ResNet on 8x8 images), for fast checks.
pub fn small_config(arch: &str) -> ModelConfig {
    let json = match arch {
        "logreg" => r#"{"arch":"logreg","n_features":12,"n_outputs":3}"#,
        "sparse_logreg" => {
            r#"{"arch":"sparse_logreg","n_features":50,"n_outputs":2,"pairs_per_example":5}"#
        }
        "mlp" => {
            r#"{"arch":"mlp","input_dim":16,"hidden":[32,24],"n_outputs":5,"activation":"gelu"}"#
        }
        "lenet" => r#"{"arch":"lenet","in_channels":1,"height":16,"width":20,"n_classes":7}"#,
        "resnet" => r#"{"arch":"resnet","depth":18,"n_classes":10,"in_channels":3,"image_size":8}"#,
        "pmf" => r#"{"arch":"pmf","n_users":20,"n_items":30,"n_factors":4}"#,
        "transformer" => {
            r#"{"arch":"transformer","vocab_size":50,"max_seq_len":8,"d_model":16,"n_heads":4,"n_layers":2,"d_ff":32,"n_classes":3}"#
        }
        other => panic!("no small config for {other}"),
    };
    serde_json::from_str(json).expect("valid small config")
}

/// A model whose every tensor (BatchNorm statistics and zero-initialized tables included) holds
/// non-trivial values, so that no translation mistake can hide behind zeros or ones.
pub fn perturbed_model(cfg: &ModelConfig, seed: u32) -> Model {
    let model = Model::with_seed(cfg, &Device::Cpu, u64::from(seed)).expect("model builds");
    for (i, (name, var)) in model.named_vars(false).into_iter().enumerate() {
        let n = var.as_tensor().elem_count();
        let mut v: Vec<f32> = wave(n, seed * 1000 + i as u32)
            .iter()
            .map(|x| x * 0.5)
            .collect();
        if name.ends_with("running_var") {
            v.iter_mut().for_each(|x| *x = x.abs() + 0.5);
        }
        let t = Tensor::from_vec(v, var.dims(), &Device::Cpu).expect("tensor");
        model.set_param(&name, &t).expect("set");
    }
    model
}

/// Saves `model` under `dir/name` and returns the folder.
pub fn save(model: &Model, dir: &Path, name: &str) -> PathBuf {
    let folder = dir.join(name);
    model.save(&folder).expect("model saves");
    folder
}

/// Runs `program` with `tensors` on the CPU backend, unmetered.
pub fn cpu_forward(
    program: &Program,
    tensors: &[Vec<f32>],
    x: &HostTensor,
) -> cumulus_gpu::Result<HostTensor> {
    forward_on(&CpuBackend::new(), program, tensors, x)
}

/// Runs `program` with `tensors` on backend `b`, unmetered (uploading the weights first).
pub fn forward_on<B: Backend>(
    b: &B,
    program: &Program,
    tensors: &[Vec<f32>],
    x: &HostTensor,
) -> cumulus_gpu::Result<HostTensor> {
    let s = b.new_stream(Priority::Normal)?;
    let uploaded = tensors
        .iter()
        .map(|t| b.upload(&s, t))
        .collect::<cumulus_gpu::Result<Vec<_>>>()?;
    let weights: Vec<&B::Buf> = uploaded.iter().collect();
    let ex = Exec::new(b, &s, Ledger::unlimited(), 1 << 28);
    let y = program.forward(&ex, &weights, x)?;
    let out = b.finish(b.download(&s, &[&*y.buf])?)?;
    HostTensor::f32(
        y.shape.clone(),
        out.into_iter().next().expect("one download"),
    )
}

/// The host tensor of a candle tensor.
pub fn host(t: &Tensor) -> HostTensor {
    HostTensor::from_candle(t).expect("convertible")
}

/// Runs one train step of a loaded model on the CPU backend: `(loss, gradients by name)`.
pub fn cpu_train(
    model: &cumulus_gpu::executor::weights::HostModel,
    x: &HostTensor,
    targets: &HostTensor,
    loss: cumulus_models::Loss,
) -> cumulus_gpu::Result<(f32, Vec<(String, HostTensor)>)> {
    train_on(&CpuBackend::new(), model, x, targets, loss)
}

/// One train step on backend `b`: `(loss, gradients by name)`.
pub fn train_on<B: Backend>(
    b: &B,
    model: &cumulus_gpu::executor::weights::HostModel,
    x: &HostTensor,
    targets: &HostTensor,
    loss: cumulus_models::Loss,
) -> cumulus_gpu::Result<(f32, Vec<(String, HostTensor)>)> {
    let s = b.new_stream(Priority::Normal)?;
    let uploaded = model
        .tensors
        .iter()
        .map(|t| b.upload(&s, t))
        .collect::<cumulus_gpu::Result<Vec<_>>>()?;
    let weights: Vec<&B::Buf> = uploaded.iter().collect();
    let ex = Exec::new(b, &s, Ledger::unlimited(), 1 << 28);
    let step =
        cumulus_gpu::program::train::train_step(&model.program, &ex, &weights, x, targets, loss)?;
    let mut bufs: Vec<&B::Buf> = vec![&*step.loss];
    bufs.extend(step.grads.iter().map(|g| &**g));
    let values = b.finish(b.download(&s, &bufs)?)?;
    let loss = values[0][0];
    let grads = model
        .program
        .params()
        .zip(values.into_iter().skip(1))
        .map(|(p, v)| Ok((p.name.clone(), HostTensor::f32(p.shape.clone(), v)?)))
        .collect::<cumulus_gpu::Result<Vec<_>>>()?;
    Ok((loss, grads))
}

/// Prints a check's result and, when `CUMULUS_GPU_REPORT` names a file, appends it there as a
/// JSON line (the GPU check script turns these into its table).
pub fn report(suite: &str, name: &str, rel_err: f32, tol: f32) {
    println!("{suite} {name}: relative error {rel_err:.2e} (tolerance {tol:.0e})");
    if let Ok(path) = std::env::var("CUMULUS_GPU_REPORT") {
        use std::io::Write;
        let line = serde_json::json!({
            "suite": suite, "check": name, "rel_err": rel_err, "tolerance": tol,
            "pass": rel_err <= tol,
        });
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

// --- The executor with real tenants ---------------------------------------------------------

use std::time::Duration;

use cumulus_gpu::{
    BackendChoice, ExecutorClient, ExecutorConfig, ExecutorHandle, ExecutorStats, Listen,
    TenantOptions,
};

/// A CPU executor on a socket in `dir`, after `tweak`.
pub async fn executor(dir: &Path, tweak: impl FnOnce(&mut ExecutorConfig)) -> ExecutorHandle {
    let mut cfg = ExecutorConfig {
        backend: BackendChoice::Cpu,
        ..ExecutorConfig::new(Listen::Unix(dir.join("gpu.sock")))
    };
    tweak(&mut cfg);
    cumulus_gpu::run(cfg).await.expect("executor starts")
}

pub async fn tenant(at: &ExecutorHandle, name: &str) -> ExecutorClient {
    tenant_with(at, TenantOptions::named(name)).await
}

pub async fn tenant_with(at: &ExecutorHandle, opts: TenantOptions) -> ExecutorClient {
    ExecutorClient::connect(&at.listen, opts)
        .await
        .expect("tenant connects")
}

/// Waits (bounded, as a hang guard) until the executor's stats satisfy `ok`.
pub async fn until(
    at: &ExecutorHandle,
    what: &str,
    ok: impl Fn(&ExecutorStats) -> bool,
) -> ExecutorStats {
    for _ in 0..4000 {
        let s = at.stats().await.expect("stats");
        if ok(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the executor never reached: {what}");
}

pub fn model_folder(dir: &Path, arch: &str, seed: u32) -> (Model, PathBuf) {
    let model = perturbed_model(&small_config(arch), seed);
    let folder = save(&model, dir, arch);
    (model, folder)
}

pub fn reference(model: &Model, x: &Tensor) -> Vec<f32> {
    model
        .forward_t(x, false)
        .expect("reference forward")
        .flatten_all()
        .and_then(|y| y.to_vec1::<f32>())
        .expect("f32")
}
