//! Model folders: `config.json` ([`FolderConfig`]: the [`ModelConfig`] under `model`, plus the
//! KServe V2 `inputs` / `outputs` tensor specs) and `model.safetensors` (every parameter and
//! buffer under its layer-qualified name).
//!
//! Loading checks the weights file completely before touching the model: a truncated or corrupted
//! file, a missing, extra, mis-shaped or mis-typed tensor, or non-finite values are refused with a
//! [`ModelError::Checkpoint`] naming the file and the tensor. Writes go to a temporary file first
//! and are renamed into place, so a crash never leaves half a model behind.
//!
//! ```
//! use candle_core::Device;
//! use cumulus_models::{Model, ModelConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let model = Model::new(&ModelConfig::default_for("logreg")?, &Device::Cpu)?;
//! model.save(dir.path())?;
//! let back = Model::load(dir.path(), &Device::Cpu)?;
//! assert_eq!(back.total_params(), model.total_params());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, TensorSpec};
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::size::SizeLimits;

/// File name of a folder's configuration.
pub const CONFIG_FILE: &str = "config.json";
/// File name of a folder's weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Largest safetensors header accepted (the JSON index of the tensors; a few hundred bytes each).
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// The content of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub model: ModelConfig,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl FolderConfig {
    /// The folder config of `model` (tensor specs derived from the model config).
    pub fn of(model: &ModelConfig) -> Self {
        Self {
            model: model.clone(),
            inputs: model.inputs(),
            outputs: model.outputs(),
        }
    }

    /// Read and validate `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Io {
            path: file.clone(),
            source,
        })?;
        let bad = |reason: String| ModelError::ConfigFile {
            file: file.clone(),
            reason,
        };
        let cfg: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.model.validate().map_err(|e| bad(e.to_string()))?;
        if cfg.inputs != cfg.model.inputs() {
            return Err(bad(format!(
                "key `inputs` does not match the model: expected {:?}",
                cfg.model.inputs()
            )));
        }
        if cfg.outputs != cfg.model.outputs() {
            return Err(bad(format!(
                "key `outputs` does not match the model: expected {:?}",
                cfg.model.outputs()
            )));
        }
        Ok(cfg)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` through a temporary sibling and a rename.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The safetensors name of a float dtype.
fn st_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I64 => "I64",
        _ => "unsupported",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl Model {
    /// Write `dir/config.json` and `dir/model.safetensors` (creating `dir`).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config = serde_json::to_string_pretty(&FolderConfig::of(self.config()))
            .expect("a ModelConfig always serializes to JSON");
        let config_path = dir.join(CONFIG_FILE);
        write_atomically(&config_path, |tmp| {
            std::fs::write(tmp, &config).map_err(io(tmp))
        })?;
        let tensors: HashMap<String, Tensor> = self
            .named_vars(false)
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        let weights = dir.join(WEIGHTS_FILE);
        write_atomically(&weights, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| ModelError::Checkpoint {
                file: tmp.to_path_buf(),
                tensor: None,
                reason: format!("cannot write: {e}"),
            })
        })
    }

    /// Build the model described by `dir/config.json` (F32) and load `dir/model.safetensors`.
    /// A config over the default [`SizeLimits`] is refused before anything is allocated.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with_limits(dir, device, &SizeLimits::default())
    }

    /// As [`Model::load`], under `limits`.
    pub fn load_with_limits(
        dir: impl AsRef<Path>,
        device: &Device,
        limits: &SizeLimits,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = FolderConfig::read(dir)?;
        let model = Self::with_limits(&cfg.model, device, 0, DType::F32, limits)?;
        model.load_weights(dir.join(WEIGHTS_FILE))?;
        Ok(model)
    }

    /// Replace every parameter and buffer with the tensors of a safetensors file, after checking
    /// that the file holds exactly this model's tensors, intact. On error nothing is changed. A
    /// file larger than this model's tensors plus a header of [`MAX_HEADER_BYTES`] is refused
    /// before it is read.
    pub fn load_weights(&self, file: impl AsRef<Path>) -> Result<()> {
        let file = file.as_ref();
        let expected: u64 = self
            .param_infos()
            .iter()
            .map(|p| p.bytes() as u64)
            .sum::<u64>()
            .saturating_add(8 + MAX_HEADER_BYTES);
        let len = std::fs::metadata(file).map_err(io(file))?.len();
        if len > expected {
            return Err(ModelError::Checkpoint {
                file: file.to_path_buf(),
                tensor: None,
                reason: format!(
                    "file is {len} bytes, more than the {expected} this {} model's tensors and a header can take",
                    self.config().arch()
                ),
            });
        }
        let bytes = std::fs::read(file).map_err(io(file))?;
        let tensors = read_checked(file, &bytes, self)?;
        for (name, tensor) in tensors {
            let var = self
                .var(&name)
                .expect("read_checked only returns names of this model");
            var.set(&tensor)?;
        }
        Ok(())
    }
}

impl Model {
    /// Builds the model of `dir/config.json` holding only layers `first..=last`, and reads
    /// just their tensors from `dir/model.safetensors` (positioned reads: the other layers'
    /// bytes are never read). What a stage of a partitioned model loads.
    pub fn load_layers(
        dir: impl AsRef<Path>,
        first: usize,
        last: usize,
        device: &Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = FolderConfig::read(dir)?;
        let model = Self::partial(&cfg.model, device, first, last, &SizeLimits::default())?;
        model.read_held_weights(&dir.join(WEIGHTS_FILE))?;
        Ok(model)
    }

    /// Reads the tensors this model holds from `file` by their offsets, each checked (dtype,
    /// shape, bounds, finite values) before any is set.
    fn read_held_weights(&self, file: &Path) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let fail = |tensor: Option<&str>, reason: String| ModelError::Checkpoint {
            file: file.to_path_buf(),
            tensor: tensor.map(str::to_string),
            reason,
        };
        let mut f = std::fs::File::open(file).map_err(io(file))?;
        let len = f.metadata().map_err(io(file))?.len();
        let mut head = [0u8; 8];
        f.read_exact(&mut head)
            .map_err(|_| fail(None, format!("file is {len} bytes, too short for a header")))?;
        let header_len = u64::from_le_bytes(head);
        if header_len > MAX_HEADER_BYTES || 8 + header_len > len {
            return Err(fail(
                None,
                format!("a header of {header_len} bytes does not fit the {len}-byte file"),
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header).map_err(io(file))?;
        let mut entries: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header)
                .map_err(|e| fail(None, format!("corrupted header: {e}")))?;
        let data_start = 8 + header_len;
        let mut tensors = Vec::new();
        for info in self.param_infos() {
            let name = info.name.as_str();
            let value = entries
                .remove(name)
                .ok_or_else(|| fail(Some(name), "missing from the file".to_string()))?;
            let entry: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| fail(Some(name), format!("corrupted header entry: {e}")))?;
            let want = st_dtype(info.dtype);
            if entry.dtype != want || entry.shape != info.shape {
                return Err(fail(
                    Some(name),
                    format!(
                        "{} {:?} where the model needs {want} {:?}",
                        entry.dtype, entry.shape, info.shape
                    ),
                ));
            }
            let (begin, end) = entry.data_offsets;
            if begin > end || end - begin != info.bytes() || data_start + end as u64 > len {
                return Err(fail(
                    Some(name),
                    format!(
                        "data [{begin}, {end}) does not hold {} bytes within the file",
                        info.bytes()
                    ),
                ));
            }
            let mut raw = vec![0u8; end - begin];
            f.seek(SeekFrom::Start(data_start + begin as u64))
                .and_then(|_| f.read_exact(&mut raw))
                .map_err(io(file))?;
            if !all_finite(&raw, info.dtype) {
                return Err(fail(
                    Some(name),
                    "holds NaN or infinite values (corrupted?)".into(),
                ));
            }
            tensors.push((
                info.name.clone(),
                Tensor::from_raw_buffer(&raw, info.dtype, &info.shape, self.device())?,
            ));
        }
        for (name, tensor) in tensors {
            let var = self
                .var(&name)
                .expect("only names of this model's held tensors were read");
            var.set(&tensor)?;
        }
        Ok(())
    }
}

/// Parse `bytes` as a safetensors file holding exactly `model`'s tensors, each finite.
fn read_checked(file: &Path, bytes: &[u8], model: &Model) -> Result<Vec<(String, Tensor)>> {
    let fail = |tensor: Option<&str>, reason: String| ModelError::Checkpoint {
        file: PathBuf::from(file),
        tensor: tensor.map(str::to_string),
        reason,
    };
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(fail(
            None,
            format!(
                "file is {} bytes, too short for a safetensors header",
                bytes.len()
            ),
        ));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("slice of length 8")) as usize;
    let data_start = 8usize.saturating_add(header_len);
    let Some(header) = bytes.get(8..data_start) else {
        return Err(fail(
            None,
            format!(
                "header of {header_len} bytes does not fit in a {}-byte file (truncated?)",
                bytes.len()
            ),
        ));
    };
    let data = &bytes[data_start..];
    let mut entries: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| fail(None, format!("corrupted header: {e}")))?;
    entries.remove("__metadata__");

    let mut out = Vec::new();
    for info in model.param_infos() {
        let name = info.name.as_str();
        let value = entries
            .remove(name)
            .ok_or_else(|| fail(Some(name), "missing from the file".to_string()))?;
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| fail(Some(name), format!("corrupted header entry: {e}")))?;
        let want = st_dtype(info.dtype);
        if entry.dtype != want {
            return Err(fail(
                Some(name),
                format!("dtype {} where the model needs {want}", entry.dtype),
            ));
        }
        if entry.shape != info.shape {
            return Err(fail(
                Some(name),
                format!(
                    "shape {:?} where the model needs {:?}",
                    entry.shape, info.shape
                ),
            ));
        }
        let (begin, end) = entry.data_offsets;
        if begin > end || end - begin != info.bytes() {
            return Err(fail(
                Some(name),
                format!(
                    "data offsets [{begin}, {end}) do not hold {} bytes",
                    info.bytes()
                ),
            ));
        }
        let Some(raw) = data.get(begin..end) else {
            return Err(fail(
                Some(name),
                format!(
                    "data [{begin}, {end}) lies past the end of the file's {}-byte data section (truncated?)",
                    data.len()
                ),
            ));
        };
        if !all_finite(raw, info.dtype) {
            return Err(fail(
                Some(name),
                "holds NaN or infinite values (corrupted?)".to_string(),
            ));
        }
        let tensor = Tensor::from_raw_buffer(raw, info.dtype, &info.shape, model.device())?;
        out.push((info.name, tensor));
    }
    if let Some(extra) = entries.keys().next() {
        return Err(fail(
            Some(extra),
            format!("not a tensor of this {} model", model.config().arch()),
        ));
    }
    Ok(out)
}

/// Whether the little-endian floats in `raw` are all finite (other dtypes are not checked).
fn all_finite(raw: &[u8], dtype: DType) -> bool {
    match dtype {
        DType::F32 => raw
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
        DType::F64 => raw.chunks_exact(8).all(|c| {
            f64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")).is_finite()
        }),
        _ => true,
    }
}
