//! Model weights: reading a model (folder or inline bytes) into a checked [`HostModel`] off the
//! device thread, and the device-side [`Registry`] that keeps **one resident copy** of each
//! tensor, shared by every tenant that loads the same model.
//!
//! Sharing is by content: a model's identity is the SHA-256 of its (re-serialized) config and
//! its weights file, so two tenants loading the same folder, a copy of it, or the same bytes
//! inline share one upload, and a retrained model with the same name does not. Tensors are
//! shared one by one (`(model hash, tensor name)`), so two stages whose layer ranges overlap
//! share the overlap. The registry holds weak references: a tensor leaves the device when the
//! last loaded model (held by tenants and by their work in flight) that reads it is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use cumulus_models::ModelConfig;
use cumulus_models::folder::{CONFIG_FILE, FolderConfig, WEIGHTS_FILE};
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::error::{GpuError, Result};
use crate::executor::quota::{Account, Charge};
use crate::program::{ParamSpec, Program};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model folder on the executor's node (`config.json` + `model.safetensors`).
    Folder(PathBuf),
    /// The same two files' bytes, sent over the socket.
    Inline {
        config_json: Vec<u8>,
        safetensors: Vec<u8>,
    },
}

impl ModelSource {
    /// A model held in memory (a training worker's), as config and safetensors bytes: what
    /// `Model::save` would write, without touching the disk.
    pub fn from_model(model: &cumulus_models::Model) -> Result<Self> {
        let config_json = serde_json::to_vec(&FolderConfig::of(model.config()))
            .expect("a FolderConfig always serializes");
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, var) in model.named_vars(false) {
            let values = var
                .as_tensor()
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| GpuError::InvalidRequest(format!("tensor `{name}`: {e}")))?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((name, var.dims().to_vec(), bytes));
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| GpuError::InvalidRequest(format!("safetensors: {e}")))?;
        let safetensors = safetensors::serialize(views, None)
            .map_err(|e| GpuError::InvalidRequest(format!("safetensors: {e}")))?;
        Ok(Self::Inline {
            config_json,
            safetensors,
        })
    }

    /// Reads a model folder on the client's side, for an executor that cannot see its path.
    pub fn inline_from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| GpuError::Io { path, source })
        };
        Ok(Self::Inline {
            config_json: read(CONFIG_FILE)?,
            safetensors: read(WEIGHTS_FILE)?,
        })
    }
}

/// A layer range's weights, read and checked on the host.
#[derive(Debug)]
pub struct HostModel {
    /// Hex SHA-256 of config and weights.
    pub hash: String,
    pub program: Program,
    /// One per [`Program::params`], in order.
    pub tensors: Vec<Vec<f32>>,
}

fn parse_config(bytes: &[u8], origin: &str) -> Result<ModelConfig> {
    let bad = |reason: String| GpuError::InvalidRequest(format!("{origin}: {reason}"));
    let cfg = match serde_json::from_slice::<FolderConfig>(bytes) {
        Ok(folder) => folder.model,
        Err(folder_err) => serde_json::from_slice::<ModelConfig>(bytes)
            .map_err(|_| bad(format!("not a model folder config: {folder_err}")))?,
    };
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Whether `path` lies under one of `roots` (any path when there are none).
fn allowed(path: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let real = path
        .canonicalize()
        .map_err(|e| GpuError::InvalidRequest(format!("model folder {}: {e}", path.display())))?;
    if roots.is_empty() {
        return Ok(real);
    }
    for root in roots {
        if let Ok(r) = root.canonicalize()
            && real.starts_with(&r)
        {
            return Ok(real);
        }
    }
    Err(GpuError::InvalidRequest(format!(
        "{} is not under a model root of this executor",
        path.display()
    )))
}

/// Reads a file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    // The path came with the request: not finding it is the request's fault.
    let io = |e: std::io::Error| GpuError::InvalidRequest(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limit {
        return Err(GpuError::TooLarge {
            what: format!("{}", path.display()),
            size: len,
            limit,
        });
    }
    std::fs::read(path).map_err(io)
}

/// Reads `source`, translates layers `first ..= last` and checks their weights: present, F32,
/// the expected shapes, finite. Blocking: call it off the async runtime.
pub fn read_model(
    source: &ModelSource,
    first: usize,
    last: Option<usize>,
    training: bool,
    roots: &[PathBuf],
    max_bytes: u64,
) -> Result<HostModel> {
    let (config, weights, origin) = match source {
        ModelSource::Folder(dir) => {
            let dir = allowed(dir, roots)?;
            (
                read_bounded(&dir.join(CONFIG_FILE), 1 << 20)?,
                read_bounded(&dir.join(WEIGHTS_FILE), max_bytes)?,
                dir.display().to_string(),
            )
        }
        ModelSource::Inline {
            config_json,
            safetensors,
        } => (
            config_json.clone(),
            safetensors.clone(),
            "inline model".to_string(),
        ),
    };
    let cfg = parse_config(&config, &origin)?;
    let program = Program::new(&cfg, first, last)?;
    if training {
        program.check_trainable()?;
    }
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&cfg).expect("a ModelConfig always serializes"));
    hasher.update([0u8]);
    hasher.update(&weights);
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = safetensors::SafeTensors::deserialize(&weights).map_err(|e| {
        GpuError::InvalidRequest(format!(
            "{origin}: {WEIGHTS_FILE} is not a safetensors file: {e}"
        ))
    })?;
    let tensors = program
        .params()
        .map(|spec| read_tensor(&file, spec, &origin))
        .collect::<Result<Vec<_>>>()?;
    Ok(HostModel {
        hash,
        program,
        tensors,
    })
}

fn read_tensor(
    file: &safetensors::SafeTensors<'_>,
    spec: &ParamSpec,
    origin: &str,
) -> Result<Vec<f32>> {
    let bad = |reason: String| {
        GpuError::InvalidRequest(format!("{origin}: tensor `{}`: {reason}", spec.name))
    };
    let view = file
        .tensor(&spec.name)
        .map_err(|_| bad("missing from the weights file".into()))?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(bad(format!(
            "dtype {:?}, the executor needs F32",
            view.dtype()
        )));
    }
    if view.shape() != spec.shape.as_slice() {
        return Err(bad(format!(
            "shape {:?} where the model needs {:?}",
            view.shape(),
            spec.shape
        )));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if values.len() != spec.numel() {
        return Err(bad("data does not match the shape".into()));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad("holds NaN or infinite values".into()));
    }
    Ok(values)
}

/// One resident tensor and the device memory charge that pays for it.
pub struct WeightTensor<B: Backend> {
    pub buf: B::Buf,
    _charge: Charge,
}

impl<B: Backend> WeightTensor<B> {
    /// A tensor uploaded outside the registry (a tenant's private copy).
    pub fn new(buf: B::Buf, charge: Charge) -> Self {
        Self {
            buf,
            _charge: charge,
        }
    }
}

/// A layer range made resident: its program and its tensors.
pub struct LoadedModel<B: Backend> {
    pub hash: String,
    pub program: Program,
    pub weights: Vec<Arc<WeightTensor<B>>>,
}

impl<B: Backend> LoadedModel<B> {
    /// The weight buffers in [`Program::params`] order.
    pub fn buffers(&self) -> Vec<&B::Buf> {
        self.weights.iter().map(|w| &w.buf).collect()
    }
}

/// The resident tensors by `(model hash, tensor name)`.
pub struct Registry<B: Backend> {
    tensors: HashMap<(String, String), Weak<WeightTensor<B>>>,
}

impl<B: Backend> Default for Registry<B> {
    fn default() -> Self {
        Self {
            tensors: HashMap::new(),
        }
    }
}

impl<B: Backend> Registry<B> {
    /// Makes `model` resident, uploading (on `stream`, charged to `device`) only the tensors
    /// not already there. Returns the loaded model and whether every tensor was shared. The
    /// caller synchronizes `stream` before any tenant uses the model.
    pub fn load(
        &mut self,
        backend: &B,
        stream: &B::Stream,
        device: &Arc<Account>,
        reserve: u64,
        model: HostModel,
    ) -> Result<(LoadedModel<B>, bool)> {
        self.purge();
        let mut weights = Vec::with_capacity(model.tensors.len());
        let mut shared = true;
        for (spec, data) in model.program.params().zip(&model.tensors) {
            let key = (model.hash.clone(), spec.name.clone());
            if let Some(t) = self.tensors.get(&key).and_then(Weak::upgrade) {
                weights.push(t);
                continue;
            }
            shared = false;
            let bytes = data.len() as u64 * 4;
            let (free, _) = backend.memory_info()?;
            if free < bytes.saturating_add(reserve) {
                return Err(GpuError::DeviceMemory {
                    requested: bytes,
                    available: free.saturating_sub(reserve),
                });
            }
            let charge = Charge::new(&[device], bytes)?;
            let t = Arc::new(WeightTensor::new(backend.upload(stream, data)?, charge));
            self.tensors.insert(key, Arc::downgrade(&t));
            weights.push(t);
        }
        let HostModel { hash, program, .. } = model;
        Ok((
            LoadedModel {
                hash,
                program,
                weights,
            },
            shared,
        ))
    }

    /// Forgets tensors that have left the device.
    pub fn purge(&mut self) {
        self.tensors.retain(|_, w| w.strong_count() > 0);
    }

    /// `(tensors, bytes)` resident through the registry.
    pub fn resident(&mut self) -> (usize, u64) {
        self.purge();
        let bytes = self
            .tensors
            .values()
            .filter_map(Weak::upgrade)
            .map(|t| t._charge.bytes())
            .sum();
        (self.tensors.len(), bytes)
    }
}
