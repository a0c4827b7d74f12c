//! The `infer-stage` function: one instance runs batches of one model's layer range (the whole
//! model, or one layer group of a partitioned plan) and answers the output.
//!
//! A batch travels in binary, never as JSON tensors: the payload is a little-endian `u32`
//! length, a small JSON header ([`StageTask`]: model folder, layer range, dtype and shape of
//! the input), then the input's raw little-endian elements. The answer has the same framing
//! ([`StageOutput`] header, then the output's raw `f32`s).
//!
//! An instance keeps the models it has loaded (a few, least recently used first out), so only
//! its first batch of a model pays for reading the weights; the forward runs on a blocking
//! thread, so the instance keeps answering its health checks while it computes.
//!
//! ```
//! use cumulus_inference::stage::{RawTensor, StageTask, decode_task, encode_task};
//! let input = RawTensor::f32(vec![2, 3], &[0.0; 6]);
//! let task = StageTask::whole("/models/mlp", &input);
//! let payload = encode_task(&task, &input);
//! let (back, data) = decode_task(&payload).unwrap();
//! assert_eq!(back, task);
//! assert_eq!(data.data, input.data);
//! ```

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use candle_core::{DType, Device, Tensor};
use cumulus_models::folder::FolderConfig;
use cumulus_models::{Model, ModelError};
use cumulus_runtime::instance::{FunctionError, FunctionKind, InvokeContext};
use serde::{Deserialize, Serialize};

/// The name the function is registered under.
pub const KIND: &str = "infer-stage";
/// Models one instance keeps loaded.
const CACHED_MODELS: usize = 4;
/// Largest header of a payload, bytes.
const MAX_HEADER_BYTES: usize = 64 << 10;
/// Most elements of one batch.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Element type of a raw tensor: what our models take and give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawDType {
    F32,
    U32,
}

impl RawDType {
    fn candle(self) -> DType {
        match self {
            RawDType::F32 => DType::F32,
            RawDType::U32 => DType::U32,
        }
    }
}

/// A row-major tensor as little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: RawDType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl RawTensor {
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let mut data = BytesMut::with_capacity(values.len() * 4);
        for v in values {
            data.put_f32_le(*v);
        }
        Self {
            dtype: RawDType::F32,
            shape,
            data: data.freeze(),
        }
    }

    pub fn u32(shape: Vec<usize>, values: &[u32]) -> Self {
        let mut data = BytesMut::with_capacity(values.len() * 4);
        for v in values {
            data.put_u32_le(*v);
        }
        Self {
            dtype: RawDType::U32,
            shape,
            data: data.freeze(),
        }
    }

    /// Rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Elements, or `None` when the shape overflows.
    pub fn elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Checks that the bytes hold exactly the shape's elements.
    pub fn check(&self) -> Result<(), String> {
        let n = self
            .elements()
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("shape {:?} holds too many elements", self.shape))?;
        if self.data.len() != n * 4 {
            return Err(format!(
                "shape {:?} needs {} bytes, the payload has {}",
                self.shape,
                n * 4,
                self.data.len()
            ));
        }
        Ok(())
    }

    /// The tensor on the CPU.
    pub fn to_candle(&self) -> Result<Tensor, String> {
        self.check()?;
        Tensor::from_raw_buffer(&self.data, self.dtype.candle(), &self.shape, &Device::Cpu)
            .map_err(|e| e.to_string())
    }

    /// A candle tensor of f32 or u32 as raw bytes.
    pub fn from_candle(t: &Tensor) -> Result<Self, String> {
        let shape = t.dims().to_vec();
        let flat = t.flatten_all().map_err(|e| e.to_string())?;
        match t.dtype() {
            DType::F32 => Ok(Self::f32(
                shape,
                &flat.to_vec1::<f32>().map_err(|e| e.to_string())?,
            )),
            DType::U32 => Ok(Self::u32(
                shape,
                &flat.to_vec1::<u32>().map_err(|e| e.to_string())?,
            )),
            other => Err(format!("a {other:?} tensor cannot travel between stages")),
        }
    }

    /// Concatenates tensors along the first dimension (same dtype and row shape).
    pub fn concat(parts: &[&RawTensor]) -> Result<RawTensor, String> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        let mut rows = 0;
        let mut data = BytesMut::new();
        for p in parts {
            if p.dtype != first.dtype || p.shape.get(1..) != first.shape.get(1..) {
                return Err(format!(
                    "cannot batch a {:?} {:?} with a {:?} {:?}",
                    p.dtype, p.shape, first.dtype, first.shape
                ));
            }
            rows += p.rows();
            data.extend_from_slice(&p.data);
        }
        let mut shape = first.shape.clone();
        if let Some(r) = shape.first_mut() {
            *r = rows;
        }
        Ok(RawTensor {
            dtype: first.dtype,
            shape,
            data: data.freeze(),
        })
    }

    /// Splits along the first dimension into pieces of `rows[i]` rows each.
    pub fn split(&self, rows: &[usize]) -> Result<Vec<RawTensor>, String> {
        if rows.iter().sum::<usize>() != self.rows() {
            return Err(format!("cannot split {} rows into {:?}", self.rows(), rows));
        }
        let row_bytes = if self.rows() == 0 {
            0
        } else {
            self.data.len() / self.rows()
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut at = 0;
        for &r in rows {
            let mut shape = self.shape.clone();
            shape[0] = r;
            out.push(RawTensor {
                dtype: self.dtype,
                shape,
                data: self.data.slice(at..at + r * row_bytes),
            });
            at += r * row_bytes;
        }
        Ok(out)
    }
}

/// What one invocation computes: layers `first..=last` of the model in `model_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTask {
    pub model_dir: PathBuf,
    pub first: usize,
    /// The last layer, inclusive; `None`: the model's last.
    pub last: Option<usize>,
    pub dtype: RawDType,
    pub shape: Vec<usize>,
    /// Profile instead of serving: run each layer of the range on its own this many times
    /// (after one warm-up) and answer each layer's mean time (the partitioner's input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<u32>,
    /// Run the layers on the node's GPU executor at this socket (`[gpu] device = "cuda"`);
    /// layers it does not cover run on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<PathBuf>,
}

impl StageTask {
    /// The whole model on `input`.
    pub fn whole(model_dir: impl Into<PathBuf>, input: &RawTensor) -> Self {
        Self {
            model_dir: model_dir.into(),
            first: 0,
            last: None,
            dtype: input.dtype,
            shape: input.shape.clone(),
            profile: None,
            gpu: None,
        }
    }
}

/// Most repeats a profile may ask for per layer.
pub const MAX_PROFILE_REPEATS: u32 = 1000;

/// The answer's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOutput {
    pub dtype: RawDType,
    pub shape: Vec<usize>,
    /// Time the forward itself took in the instance, µs.
    pub compute_us: u64,
    /// Whether this invocation loaded the model first.
    pub loaded: bool,
    /// With a profile task: each layer's mean time, ms, in range order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_ms: Vec<f64>,
}

fn frame<H: Serialize>(header: &H, data: &[u8]) -> Bytes {
    let json = serde_json::to_vec(header).expect("stage headers always serialize");
    let mut out = BytesMut::with_capacity(4 + json.len() + data.len());
    out.put_u32_le(json.len() as u32);
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out.freeze()
}

fn unframe<H: for<'de> Deserialize<'de>>(payload: &Bytes) -> Result<(H, Bytes), String> {
    let len = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the payload is shorter than its length prefix")?;
    if len > MAX_HEADER_BYTES || 4 + len > payload.len() {
        return Err(format!(
            "a header of {len} bytes does not fit the {}-byte payload",
            payload.len()
        ));
    }
    let header =
        serde_json::from_slice(&payload[4..4 + len]).map_err(|e| format!("header: {e}"))?;
    Ok((header, payload.slice(4 + len..)))
}

pub fn encode_task(task: &StageTask, input: &RawTensor) -> Bytes {
    frame(task, &input.data)
}

/// The task and its input, checked against each other.
pub fn decode_task(payload: &Bytes) -> Result<(StageTask, RawTensor), String> {
    let (task, data): (StageTask, Bytes) = unframe(payload)?;
    let input = RawTensor {
        dtype: task.dtype,
        shape: task.shape.clone(),
        data,
    };
    input.check()?;
    Ok((task, input))
}

pub fn encode_output(header: &StageOutput, output: &RawTensor) -> Bytes {
    frame(header, &output.data)
}

pub fn decode_output(payload: &Bytes) -> Result<(StageOutput, RawTensor), String> {
    let (header, data): (StageOutput, Bytes) = unframe(payload)?;
    let output = RawTensor {
        dtype: header.dtype,
        shape: header.shape.clone(),
        data,
    };
    output.check()?;
    Ok((header, output))
}

/// A loaded model (or the layers of one a stage holds), keyed by its folder, its layer range
/// and the weights file's modification time.
struct Cached {
    dir: PathBuf,
    layers: Option<(usize, usize)>,
    modified: Option<SystemTime>,
    model: Arc<Model>,
}

/// Models loaded by this process, most recently used last.
#[derive(Default)]
pub struct ModelCache {
    models: Mutex<VecDeque<Cached>>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCache").finish_non_exhaustive()
    }
}

impl ModelCache {
    /// The model of `dir`, loaded now when it is not cached (or its weights changed). Blocking.
    pub fn get(&self, dir: &Path) -> Result<(Arc<Model>, bool), ModelError> {
        self.get_layers(dir, None)
    }

    /// Layers `first..=last` of the model of `dir` (the whole model for `None`): a stage of a
    /// partitioned model reads only its own layers' weights, so its memory is what the plan
    /// sized it for. Blocking.
    pub fn get_layers(
        &self,
        dir: &Path,
        layers: Option<(usize, usize)>,
    ) -> Result<(Arc<Model>, bool), ModelError> {
        let modified = std::fs::metadata(dir.join(cumulus_models::folder::WEIGHTS_FILE))
            .and_then(|m| m.modified())
            .ok();
        {
            let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = models
                .iter()
                .position(|c| c.dir == dir && c.layers == layers && c.modified == modified)
            {
                let hit = models.remove(i).expect("the position was just found");
                let model = hit.model.clone();
                models.push_back(hit);
                return Ok((model, false));
            }
        }
        let model = match layers {
            None => Model::load(dir, &Device::Cpu),
            Some((first, last)) => Model::load_layers(dir, first, last, &Device::Cpu),
        };
        let model = Arc::new(model?);
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        models.retain(|c| !(c.dir == dir && c.layers == layers));
        if models.len() >= CACHED_MODELS {
            models.pop_front();
        }
        models.push_back(Cached {
            dir: dir.to_path_buf(),
            layers,
            modified,
            model: model.clone(),
        });
        Ok((model, true))
    }
}

/// Runs `task` on `input` with a model from `cache`. Blocking: call it on a compute thread.
pub fn run_stage(
    cache: &ModelCache,
    task: &StageTask,
    input: &RawTensor,
) -> Result<(StageOutput, RawTensor), FunctionError> {
    // A stage with a last layer loads only its range; an out-of-range one is refused by the
    // loader (bad payload) before anything is read.
    let range = task.last.map(|last| (task.first, last));
    let (model, loaded) = cache
        .get_layers(&task.model_dir, range)
        .map_err(|e| match e {
            ModelError::LayerRange { .. } => FunctionError::BadPayload(e.to_string()),
            e => FunctionError::Failed(e.to_string()),
        })?;
    let last = task.last.unwrap_or(model.num_layers().saturating_sub(1));
    if task.first > last || last >= model.num_layers() {
        return Err(FunctionError::BadPayload(format!(
            "layers {}..={last} are not in a {}-layer model",
            task.first,
            model.num_layers()
        )));
    }
    let xs = input.to_candle().map_err(FunctionError::BadPayload)?;
    let bad = |e: ModelError| FunctionError::BadPayload(e.to_string());
    let started = Instant::now();
    let mut layer_ms = Vec::new();
    let ys = match task.profile {
        None => model
            .forward_range(task.first, last, &xs, false)
            .map_err(bad)?,
        Some(repeats) => {
            if repeats == 0 || repeats > MAX_PROFILE_REPEATS {
                return Err(FunctionError::BadPayload(format!(
                    "profile repeats must be in 1..={MAX_PROFILE_REPEATS}"
                )));
            }
            let mut ys = xs;
            for layer in task.first..=last {
                let run = || model.forward_range(layer, layer, &ys, false).map_err(bad);
                let mut next = run()?;
                // The mean over back-to-back runs, not the median: an instance's CPU share is
                // a quota per scheduling period, and only the mean sees the periods it waits.
                let t = Instant::now();
                for _ in 0..repeats {
                    next = run()?;
                }
                layer_ms.push(t.elapsed().as_secs_f64() * 1e3 / f64::from(repeats));
                ys = next;
            }
            ys
        }
    };
    let output = RawTensor::from_candle(&ys).map_err(FunctionError::Failed)?;
    let compute_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok((
        StageOutput {
            dtype: output.dtype,
            shape: output.shape.clone(),
            compute_us,
            loaded,
            layer_ms,
        },
        output,
    ))
}

/// A model range resident on the GPU executor, by folder and layer range.
type GpuKey = (PathBuf, usize, Option<usize>);

/// This instance's session with the GPU executor.
#[derive(Default)]
struct GpuSession {
    client: Option<(PathBuf, cumulus_gpu::ExecutorClient)>,
    models: std::collections::HashMap<GpuKey, cumulus_gpu::ModelHandle>,
    /// Ranges the executor does not cover (said once in the log), run on the CPU.
    unsupported: std::collections::HashSet<GpuKey>,
}

enum GpuOutcome {
    Done(StageOutput, RawTensor),
    /// The executor does not cover these layers: run them on the CPU.
    Unsupported,
}

/// The `infer-stage` function kind, registered in the `cumulus` binary.
#[derive(Default, Clone)]
pub struct InferStage {
    cache: Arc<ModelCache>,
    gpu: Arc<tokio::sync::Mutex<GpuSession>>,
}

impl std::fmt::Debug for InferStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferStage").finish_non_exhaustive()
    }
}

impl InferStage {
    /// Runs `task` on the GPU executor at `socket`.
    async fn on_gpu(
        &self,
        socket: &Path,
        function: &str,
        task: &StageTask,
        input: &RawTensor,
    ) -> Result<GpuOutcome, FunctionError> {
        let failed = |e: cumulus_gpu::GpuError| FunctionError::Failed(format!("GPU executor: {e}"));
        let key: GpuKey = (task.model_dir.clone(), task.first, task.last);
        let (client, handle, loaded) = {
            let mut gpu = self.gpu.lock().await;
            if gpu.unsupported.contains(&key) {
                return Ok(GpuOutcome::Unsupported);
            }
            if gpu.client.as_ref().is_none_or(|(s, _)| s != socket) {
                let at = cumulus_gpu::Listen::Unix(socket.to_path_buf());
                let client = cumulus_gpu::ExecutorClient::connect(
                    &at,
                    cumulus_gpu::TenantOptions::named(function),
                )
                .await
                .map_err(failed)?;
                gpu.client = Some((socket.to_path_buf(), client));
                gpu.models.clear();
            }
            let client = gpu.client.as_ref().expect("connected just above").1.clone();
            let (handle, loaded) = match gpu.models.get(&key) {
                Some(h) => (h.clone(), false),
                None => {
                    let folder = FolderConfig::read(&task.model_dir)
                        .map_err(|e| FunctionError::Failed(e.to_string()))?;
                    if let Err(e) =
                        cumulus_gpu::check_supported(&folder.model, task.first, task.last, false)
                    {
                        if e.is_unsupported() {
                            tracing::warn!(model = %task.model_dir.display(), reason = %e, "not on the GPU executor: running on the CPU");
                            gpu.unsupported.insert(key);
                            return Ok(GpuOutcome::Unsupported);
                        }
                        return Err(failed(e));
                    }
                    let range = match task.last {
                        Some(last) => cumulus_gpu::LayerRange::new(task.first, last),
                        None => cumulus_gpu::LayerRange {
                            first: task.first,
                            last: None,
                        },
                    };
                    let handle = client
                        .load_model(
                            cumulus_gpu::ModelSource::Folder(task.model_dir.clone()),
                            range,
                        )
                        .await
                        .map_err(failed)?;
                    gpu.models.insert(key, handle.clone());
                    (handle, true)
                }
            };
            (client, handle, loaded)
        };
        let xs = input.to_candle().map_err(FunctionError::BadPayload)?;
        let host = cumulus_gpu::HostTensor::from_candle(&xs).map_err(failed)?;
        let started = Instant::now();
        let ys = client.forward(&handle, &host).await.map_err(|e| match e {
            e @ (cumulus_gpu::GpuError::InvalidRequest(_)
            | cumulus_gpu::GpuError::BadInput { .. }) => FunctionError::BadPayload(e.to_string()),
            other => failed(other),
        })?;
        let compute_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let ys = ys.to_candle(&Device::Cpu).map_err(failed)?;
        let output = RawTensor::from_candle(&ys).map_err(FunctionError::Failed)?;
        Ok(GpuOutcome::Done(
            StageOutput {
                dtype: output.dtype,
                shape: output.shape.clone(),
                compute_us,
                loaded,
                layer_ms: Vec::new(),
            },
            output,
        ))
    }
}

impl FunctionKind for InferStage {
    async fn invoke(&self, ctx: InvokeContext, payload: Bytes) -> Result<Bytes, FunctionError> {
        let (task, input) = decode_task(&payload).map_err(FunctionError::BadPayload)?;
        if let (Some(socket), None) = (&task.gpu, task.profile)
            && let GpuOutcome::Done(header, output) =
                self.on_gpu(socket, &ctx.function, &task, &input).await?
        {
            return Ok(encode_output(&header, &output));
        }
        let cache = self.cache.clone();
        let left = ctx.remaining().saturating_sub(Duration::from_millis(5));
        let work = tokio::task::spawn_blocking(move || run_stage(&cache, &task, &input));
        let done = tokio::time::timeout(left, work)
            .await
            .map_err(|_| FunctionError::Failed("the batch ran past its deadline".into()))?
            .map_err(|e| FunctionError::Failed(format!("the forward failed: {e}")))??;
        Ok(encode_output(&done.0, &done.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_refuse_what_does_not_fit() {
        assert!(decode_task(&Bytes::from_static(b"\x01")).is_err());
        assert!(decode_task(&Bytes::from_static(b"\xff\xff\xff\x00{}")).is_err());
        let input = RawTensor::f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let mut payload = encode_task(&StageTask::whole("/m", &input), &input).to_vec();
        payload.pop();
        let err = decode_task(&Bytes::from(payload)).unwrap_err();
        assert!(err.contains("needs 16 bytes"), "{err}");
    }

    #[test]
    fn batches_concatenate_and_split_back() {
        let a = RawTensor::f32(vec![1, 2], &[1.0, 2.0]);
        let b = RawTensor::f32(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let both = RawTensor::concat(&[&a, &b]).unwrap();
        assert_eq!(both.shape, vec![3, 2]);
        let parts = both.split(&[1, 2]).unwrap();
        assert_eq!(parts, vec![a.clone(), b]);
        let c = RawTensor::f32(vec![1, 3], &[0.0; 3]);
        assert!(RawTensor::concat(&[&a, &c]).is_err());
        assert!(both.split(&[1, 1]).is_err());
    }

    #[test]
    fn a_stage_runs_the_model_folder_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cumulus_models::ModelConfig::default_for("mlp").unwrap();
        let model = Model::with_seed(&cfg, &Device::Cpu, 3).unwrap();
        model.save(dir.path()).unwrap();
        let xs = Tensor::ones((3, 64), DType::F32, &Device::Cpu).unwrap();
        let want = model
            .forward_t(&xs, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let cache = ModelCache::default();
        let input = RawTensor::from_candle(&xs).unwrap();
        let task = StageTask::whole(dir.path(), &input);
        let (header, out) = run_stage(&cache, &task, &input).unwrap();
        assert!(header.loaded);
        let got = out.to_candle().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, want);
        let (again, _) = run_stage(&cache, &task, &input).unwrap();
        assert!(!again.loaded, "the second batch uses the cached model");
        let bad = StageTask {
            first: 7,
            ..task.clone()
        };
        assert!(matches!(
            run_stage(&cache, &bad, &input),
            Err(FunctionError::BadPayload(_))
        ));
    }
}
