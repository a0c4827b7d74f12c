//! The profiler behind `cumulus partition --model DIR`: each layer's time at each memory tier,
//! measured inside `infer-stage` function instances limited to that tier (its memory, and the
//! CPU share the tier buys), plus the layers' weight, activation and output sizes and the
//! invocation overhead and bandwidth of the platform — the partitioner's [`Instance`].
//!
//! A tier whose instance cannot run the model (it does not start, or runs out of memory) leaves
//! the layers without a time at that tier, which the partitioner reads as "cannot run there".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use cumulus_models::Model;
use cumulus_models::folder::FolderConfig;
use cumulus_partitioner::{Instance, Layer};
use cumulus_runtime::keepalive::KeepAliveConfig;
use cumulus_runtime::{InvokeRequest, Platform};

use crate::stage::{self, RawDType, RawTensor, StageTask};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ProfileSettings {
    /// Memory tiers to measure at, MB (each one of `functions.memory_tiers_mb`).
    pub tiers: Vec<u32>,
    /// Rows per request.
    pub batch: usize,
    /// Timed runs per layer (after a warm-up); their median is kept.
    pub repeats: u32,
    /// The latency SLO of the instance, ms.
    pub slo_ms: f64,
    /// Most functions a plan may use.
    pub max_functions: usize,
    /// Memory of an instance before any weights, MB.
    pub base_memory_mb: u32,
}

/// Why a profile could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Model(String),
    #[error("profiling at {tier} MB: {reason}")]
    Tier { tier: u32, reason: String },
    #[error("no tier could run the model: {0}")]
    NoTier(String),
}

fn function_name(dir: &Path, tier: u32) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in dir.to_string_lossy().bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("infer-profile-{tier}-{hash:08x}")
}

/// One row of zeros … `batch` rows of the model's input.
pub(crate) fn input_of(folder: &FolderConfig, batch: usize) -> RawTensor {
    let shape = folder.model.input_shape(batch);
    let n: usize = shape.iter().product();
    match folder.inputs.first().map(|t| t.datatype.as_str()) {
        Some("UINT32") => RawTensor::u32(shape, &vec![0; n]),
        _ => RawTensor::f32(shape, &vec![0.0; n]),
    }
}

struct Measured {
    layer_ms: Vec<f64>,
    /// (invocation wall time, its compute time, payload bytes) of plain forwards.
    calls: Vec<(f64, f64, usize)>,
}

async fn invoke(
    platform: &Platform,
    function: &str,
    task: &StageTask,
    input: &RawTensor,
) -> Result<(f64, stage::StageOutput), String> {
    let payload = stage::encode_task(task, input);
    let started = Instant::now();
    let done = platform
        .invoke_request(InvokeRequest {
            function: function.to_string(),
            payload,
            deadline: Some(Duration::from_secs(300)),
            job: None,
            cancel: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64() * 1e3;
    let (header, _) = stage::decode_output(&done.output)?;
    Ok((wall, header))
}

async fn measure_tier(
    platform: &Platform,
    dir: &Path,
    folder: &FolderConfig,
    tier: u32,
    s: &ProfileSettings,
) -> Result<Measured, String> {
    let function = function_name(dir, tier);
    let mut spec = platform.config().functions.spec(stage::KIND);
    spec.kind = Some(stage::KIND.to_string());
    spec.memory_mb = tier;
    spec.max_instances = 1;
    spec.min_instances = 0;
    spec.queue_capacity = 1;
    spec.timeout_ms = 300_000;
    spec.keep_alive = KeepAliveConfig::Fixed { ttl_ms: 60_000 };
    platform
        .deploy(&function, spec)
        .map_err(|e| e.to_string())?;
    let result = async {
        let input = input_of(folder, s.batch);
        let forward = StageTask::whole(dir, &input);
        // Start the instance and load the model: neither is what a layer costs.
        invoke(platform, &function, &forward, &input).await?;
        let mut calls = Vec::new();
        for rows in [1, s.batch.max(1) * 4] {
            let x = input_of(folder, rows);
            let task = StageTask::whole(dir, &x);
            for _ in 0..5 {
                let (wall, header) = invoke(platform, &function, &task, &x).await?;
                calls.push((wall, header.compute_us as f64 / 1e3, x.data.len()));
            }
        }
        let profile = StageTask {
            profile: Some(s.repeats),
            ..forward
        };
        let (_, header) = invoke(platform, &function, &profile, &input).await?;
        Ok(Measured {
            layer_ms: header.layer_ms,
            calls,
        })
    }
    .await;
    platform.undeploy(&function).await;
    result
}

/// Profiles the model in `dir` on `platform` and builds the partitioner's instance.
pub async fn profile_model(
    platform: &Platform,
    dir: PathBuf,
    s: &ProfileSettings,
) -> Result<Instance, ProfileError> {
    let model_dir = dir.clone();
    let (folder, infos) = tokio::task::spawn_blocking(move || {
        let folder = FolderConfig::read(&model_dir).map_err(|e| e.to_string())?;
        let model = Model::load(&model_dir, &Device::Cpu).map_err(|e| e.to_string())?;
        let infos = model
            .layer_infos(&folder.model.input_shape(1))
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((folder, infos))
    })
    .await
    .map_err(|e| ProfileError::Model(e.to_string()))?
    .map_err(ProfileError::Model)?;
    let elem = |shape: &[usize]| shape.iter().skip(1).product::<usize>() as u64 * 4;
    let batch = s.batch.max(1) as u64;
    let mut times: Vec<BTreeMap<u32, f64>> = vec![BTreeMap::new(); infos.len()];
    let mut calls = Vec::new();
    let mut failures = Vec::new();
    for &tier in &s.tiers {
        match measure_tier(platform, &dir, &folder, tier, s).await {
            Ok(m) if m.layer_ms.len() == infos.len() => {
                for (t, ms) in times.iter_mut().zip(m.layer_ms) {
                    t.insert(tier, ms);
                }
                calls.extend(m.calls);
            }
            Ok(m) => failures.push(format!(
                "{tier} MB: {} layer times for {} layers",
                m.layer_ms.len(),
                infos.len()
            )),
            Err(reason) => {
                tracing::warn!(tier, %reason, "the model does not run at this tier");
                failures.push(format!("{tier} MB: {reason}"));
            }
        }
    }
    if calls.is_empty() {
        return Err(ProfileError::NoTier(failures.join("; ")));
    }
    // The invocation's own cost: wall time less compute, on the smallest payloads; the
    // bandwidth from how that overhead grows with the payload.
    let overhead = |small: bool| {
        let min_bytes = calls.iter().map(|c| c.2).min().unwrap_or(0);
        let mut v: Vec<f64> = calls
            .iter()
            .filter(|c| (c.2 == min_bytes) == small)
            .map(|c| (c.0 - c.1).max(0.0))
            .collect();
        v.sort_by(f64::total_cmp);
        (
            v.get(v.len() / 2).copied().unwrap_or(0.0),
            calls
                .iter()
                .filter(|c| (c.2 == min_bytes) == small)
                .map(|c| c.2)
                .next()
                .unwrap_or(0),
        )
    };
    let (small_ms, small_bytes) = overhead(true);
    let (big_ms, big_bytes) = overhead(false);
    let bandwidth = if big_bytes > small_bytes && big_ms > small_ms {
        (big_bytes - small_bytes) as f64 / (big_ms - small_ms)
    } else {
        // Too fast to tell apart: loopback at about 1 GB/s.
        1.0e6
    };
    let layers = infos
        .iter()
        .zip(times)
        .map(|(info, time_ms)| Layer {
            name: info.name.clone(),
            weight_bytes: info.param_bytes as u64,
            activation_bytes: batch * (elem(&info.input_shape) + elem(&info.output_shape)),
            output_bytes: batch * elem(&info.output_shape),
            time_ms,
        })
        .collect();
    let config = platform.config();
    let input_bytes = batch
        * match input_of(&folder, 1).dtype {
            RawDType::F32 | RawDType::U32 => elem(&folder.model.input_shape(1)),
        };
    Ok(Instance {
        layers,
        input_bytes,
        tiers_mb: s.tiers.clone(),
        price_per_gb_s: config.pricing.gb_second_usd,
        price_per_invocation: config.pricing.invocation_usd,
        slo_ms: s.slo_ms,
        invoke_overhead_ms: small_ms,
        bandwidth_bytes_per_ms: bandwidth.clamp(1.0e3, 1.0e8),
        max_payload_bytes: config.functions.max_payload_bytes as u64,
        max_functions: s.max_functions,
        base_memory_mb: s.base_memory_mb,
    })
}
