//! Programs: a contiguous layer range of a zoo model, translated layer by layer into backend
//! operations ([`layers::LayerOp`]), with the weights it reads under the model's safetensors
//! names. The translation mirrors `cumulus_models::zoo` (same names, same parameter order, same
//! arithmetic), and the tests check it against `Model::forward_range` for every architecture.
//!
//! Kinds the executor cannot run (or cannot train) are refused with
//! [`GpuError::Unsupported`] naming the layer and its kind, so the caller runs them on the CPU.
//!
//! ```
//! use cumulus_gpu::program::Program;
//! use cumulus_models::ModelConfig;
//!
//! let cfg = ModelConfig::default_for("lenet")?;
//! let p = Program::new(&cfg, 1, Some(2))?;
//! assert_eq!(p.layers()[0].kind, "conv_pool");
//! assert_eq!(p.output_shape(&[8, 6, 14, 14])?, vec![8, 120]);
//! assert!(Program::new(&cfg, 0, None)?.check_trainable().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod exec;
pub mod layers;
pub mod train;
mod zoo;

use cumulus_models::ModelConfig;

use crate::backend::Backend;
use crate::error::{GpuError, Result};
use crate::tensor::{HostTensor, TensorData};
pub use exec::{DevTensor, Exec, Tracked};
use layers::LayerOp;

/// Ids travel to the device as `f32`: exact below this.
pub const MAX_EXACT_ID: usize = 1 << 24;

/// One tensor a program reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The safetensors key, e.g. `layers.3.conv1.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// `false` for BatchNorm running statistics.
    pub trainable: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One layer of a program.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProgram {
    /// The layer's name, the prefix of its parameters (`layers.3`).
    pub name: String,
    /// The zoo's kind (`basic_block`, ...).
    pub kind: &'static str,
    pub op: LayerOp,
    pub params: Vec<ParamSpec>,
}

/// A layer range of a model, ready to run on any backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    arch: &'static str,
    first: usize,
    last: usize,
    num_layers: usize,
    layers: Vec<LayerProgram>,
    /// Whether the first layer reads integer ids (the model input of `pmf` and `transformer`).
    takes_ids: bool,
}

impl Program {
    /// The program of layers `first ..= last` (`None`: to the model's end) of `cfg`.
    pub fn new(cfg: &ModelConfig, first: usize, last: Option<usize>) -> Result<Self> {
        cfg.validate()?;
        let all = zoo::all_layers(cfg)?;
        let num_layers = all.len();
        let last = last.unwrap_or(num_layers - 1);
        if first > last || last >= num_layers {
            return Err(cumulus_models::ModelError::LayerRange {
                first,
                last,
                len: num_layers,
            }
            .into());
        }
        let layers: Vec<LayerProgram> =
            all.into_iter().skip(first).take(last - first + 1).collect();
        for layer in &layers {
            // Ids travel as f32; tables with more rows than f32 counts exactly cannot be indexed.
            let rows = match layer.op {
                LayerOp::Embedding { vocab, .. } => vocab,
                LayerOp::MatrixFactorization {
                    n_users, n_items, ..
                } => n_users.max(n_items),
                LayerOp::SparseLinear { n_features, .. } => n_features,
                _ => 0,
            };
            if rows > MAX_EXACT_ID {
                return Err(GpuError::Unsupported {
                    layer: layer.name.clone(),
                    kind: layer.kind.to_string(),
                    reason: format!("{rows} table rows, ids are exact only below 2^24"),
                });
            }
        }
        Ok(Self {
            arch: cfg.arch(),
            first,
            last,
            num_layers,
            layers,
            takes_ids: first == 0 && cfg.takes_ids(),
        })
    }

    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// `(first, last)`, inclusive.
    pub fn range(&self) -> (usize, usize) {
        (self.first, self.last)
    }

    /// Layers of the whole model.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    pub fn layers(&self) -> &[LayerProgram] {
        &self.layers
    }

    /// Every tensor the range reads, in layer order.
    pub fn params(&self) -> impl Iterator<Item = &ParamSpec> {
        self.layers.iter().flat_map(|l| l.params.iter())
    }

    /// Bytes of the range's weights.
    pub fn weight_bytes(&self) -> u64 {
        self.params().map(|p| p.numel() as u64 * 4).sum()
    }

    /// Whether the input of the range is integer ids.
    pub fn takes_ids(&self) -> bool {
        self.takes_ids
    }

    /// Checks that [`train::train_step`] covers every layer of the range (dense layers without
    /// dropout, i.e. MLPs and dense logistic regression); the error names the first that is not.
    pub fn check_trainable(&self) -> Result<()> {
        for l in &self.layers {
            match l.op {
                LayerOp::Dense { dropout, .. } if dropout > 0.0 => {
                    return Err(GpuError::Unsupported {
                        layer: l.name.clone(),
                        kind: l.kind.to_string(),
                        reason: format!("training with dropout ({dropout}) is not implemented"),
                    });
                }
                LayerOp::Dense { .. } => {}
                _ => {
                    return Err(GpuError::Unsupported {
                        layer: l.name.clone(),
                        kind: l.kind.to_string(),
                        reason: "training covers linear and linear_activation layers only".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The output shape for an input of `input` (batch first), checking every layer.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.shapes(input).map(|mut s| s.pop().unwrap_or_default())
    }

    /// The input shape followed by every layer's output shape.
    fn shapes(&self, input: &[usize]) -> Result<Vec<Vec<usize>>> {
        let first = &self.layers[0].name;
        if input.first().copied().unwrap_or(0) == 0 {
            return Err(GpuError::bad_input(first, format!("empty batch {input:?}")));
        }
        let mut shapes = vec![input.to_vec()];
        for l in &self.layers {
            let next =
                l.op.output_shape(&l.name, shapes.last().expect("starts non-empty"))?;
            shapes.push(next);
        }
        Ok(shapes)
    }

    /// Estimated FLOPs of a forward pass on an input of `input` (0 for a shape that does not
    /// fit; at least 1 otherwise).
    pub fn flops(&self, input: &[usize]) -> u64 {
        let Ok(shapes) = self.shapes(input) else {
            return 0;
        };
        let total: u64 = self
            .layers
            .iter()
            .zip(shapes.windows(2))
            .map(|(l, io)| l.op.flops(&io[0], &io[1]))
            .fold(0u64, u64::saturating_add);
        total.max(1)
    }

    /// Checks an input completely (type, shape through every layer, id ranges) before any of it
    /// reaches a device.
    pub fn check_input(&self, x: &HostTensor) -> Result<Vec<usize>> {
        let out = self.output_shape(x.shape())?;
        let first = &self.layers[0];
        match (self.takes_ids, x.data()) {
            (true, TensorData::U32(ids)) => check_ids(first, ids)?,
            (true, TensorData::F32(_)) => {
                return Err(GpuError::bad_input(
                    &first.name,
                    "ids must be UINT32, got FP32",
                ));
            }
            (false, TensorData::U32(_)) => {
                return Err(GpuError::bad_input(
                    &first.name,
                    "expected FP32 values, got UINT32",
                ));
            }
            (false, TensorData::F32(values)) => {
                if let LayerOp::SparseLinear { n_features, .. } = first.op {
                    for pair in values.chunks_exact(2) {
                        let v = pair[0];
                        if !(v >= 0.0 && v < n_features as f32 && v.fract() == 0.0) {
                            return Err(GpuError::bad_input(
                                &first.name,
                                format!(
                                    "feature index {v} is not a whole number in [0, {n_features})"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs the range on `x` (checked with [`Program::check_input`] first). `weights` are the
    /// device buffers of [`Program::params`], in that order.
    pub fn forward<B: Backend>(
        &self,
        ex: &Exec<'_, B>,
        weights: &[&B::Buf],
        x: &HostTensor,
    ) -> Result<DevTensor<B>> {
        let shapes = self.shapes(x.shape())?;
        self.check_input(x)?;
        let mut act = DevTensor {
            buf: ex.upload(&x.to_f32_vec())?,
            shape: x.shape().to_vec(),
        };
        let mut offset = 0;
        for (l, shape) in self.layers.iter().zip(shapes.into_iter().skip(1)) {
            let n = l.params.len();
            let w = weights.get(offset..offset + n).ok_or_else(|| {
                GpuError::Device(format!(
                    "internal: {} weights for {}",
                    weights.len(),
                    l.name
                ))
            })?;
            act = l.op.forward(ex, w, act, shape)?;
            offset += n;
        }
        Ok(act)
    }
}

/// Checks integer ids against the first layer's tables.
fn check_ids(layer: &LayerProgram, ids: &[u32]) -> Result<()> {
    match layer.op {
        LayerOp::Embedding { vocab, .. } => {
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
                return Err(GpuError::bad_input(
                    &layer.name,
                    format!("token id {bad} out of range (the model has {vocab})"),
                ));
            }
        }
        LayerOp::MatrixFactorization {
            n_users, n_items, ..
        } => {
            for pair in ids.chunks_exact(2) {
                if pair[0] as usize >= n_users {
                    return Err(GpuError::bad_input(
                        &layer.name,
                        format!("user id {} out of range (the model has {n_users})", pair[0]),
                    ));
                }
                if pair[1] as usize >= n_items {
                    return Err(GpuError::bad_input(
                        &layer.name,
                        format!("item id {} out of range (the model has {n_items})", pair[1]),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether the executor can run layers `first ..= last` of `cfg` (and train them, with
/// `training`), without loading anything: callers decide up front whether to fall back.
pub fn check_supported(
    cfg: &ModelConfig,
    first: usize,
    last: Option<usize>,
    training: bool,
) -> Result<()> {
    let p = Program::new(cfg, first, last)?;
    if training {
        p.check_trainable()?;
    }
    Ok(())
}
