//! [`Model`]: an ordered list of [`Layer`]s with their variables, run whole or as any contiguous
//! range of layers (what the partitioner's layer groups and the inference stages execute).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cumulus_models::{Model, ModelConfig};
//!
//! let cfg = ModelConfig::default_for("mlp")?;
//! let model = Model::with_seed(&cfg, &Device::Cpu, 42)?;
//! let xs = Tensor::zeros((4, 64), candle_core::DType::F32, &Device::Cpu)?;
//! let whole = model.forward_t(&xs, false)?;
//! let mid = model.forward_range(0, 0, &xs, false)?;
//! let split = model.forward_range(1, model.num_layers() - 1, &mid, false)?;
//! assert_eq!(whole.to_vec2::<f32>()?, split.to_vec2::<f32>()?);
//! for info in model.layer_infos(&[4, 64])? {
//!     println!("{} {} {} params", info.name, info.kind, info.param_count);
//! }
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::layer::{Layer, LayerInfo, ParamBuilder, ParamInfo};
use crate::size::SizeLimits;
use crate::zoo;

/// A built model: its config, its layers and the variables they read.
pub struct Model {
    config: ModelConfig,
    layers: Vec<Box<dyn Layer>>,
    varmap: VarMap,
    device: Device,
    dtype: DType,
    /// The layers whose weights are held, when only some are (a stage of a partitioned model).
    held: Option<(usize, usize)>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field(
                "layers",
                &self.layers.iter().map(|l| l.name()).collect::<Vec<_>>(),
            )
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Model {
    /// An F32 model initialized from seed 0.
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self> {
        Self::with_seed(config, device, 0)
    }

    /// An F32 model initialized from `seed`: the same seed gives the same weights.
    pub fn with_seed(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::with_options(config, device, seed, DType::F32)
    }

    /// A model of float type `dtype` (F64 is what the finite-difference tests use), refused
    /// before anything is allocated when it has more than [`crate::MAX_PARAMS`] parameters.
    pub fn with_options(
        config: &ModelConfig,
        device: &Device,
        seed: u64,
        dtype: DType,
    ) -> Result<Self> {
        Self::with_limits(config, device, seed, dtype, &SizeLimits::default())
    }

    /// As [`Model::with_options`], under `limits`: the config's size ([`ModelConfig::size`]) is
    /// checked against them before any parameter is allocated.
    pub fn with_limits(
        config: &ModelConfig,
        device: &Device,
        seed: u64,
        dtype: DType,
        limits: &SizeLimits,
    ) -> Result<Self> {
        let size = config.size(1)?;
        limits.check(config, &size)?;
        if !dtype.is_float() {
            return Err(ModelError::config(
                "dtype",
                format!("must be a float type, got {dtype:?}"),
            ));
        }
        let mut pb = ParamBuilder::new(device, dtype, seed);
        let layers = zoo::build(config, &mut pb)?;
        Ok(Self {
            config: config.clone(),
            layers,
            varmap: pb.into_varmap(),
            device: device.clone(),
            dtype,
            held: None,
        })
    }

    /// The model with only layers `first..=last` holding weights (the others hold one-element
    /// placeholders, never run): what one stage of a partitioned model keeps in memory.
    /// [`Model::forward_range`] refuses any layer outside the range.
    pub fn partial(
        config: &ModelConfig,
        device: &Device,
        first: usize,
        last: usize,
        limits: &SizeLimits,
    ) -> Result<Self> {
        let size = config.size(1)?;
        limits.check(config, &size)?;
        let in_range = move |name: &str| {
            name.strip_prefix("layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| (first..=last).contains(&i))
        };
        let mut pb = ParamBuilder::new(device, DType::F32, 0).skipping(move |name| !in_range(name));
        let layers = zoo::build(config, &mut pb)?;
        if first > last || last >= layers.len() {
            return Err(ModelError::LayerRange {
                first,
                last,
                len: layers.len(),
            });
        }
        Ok(Self {
            config: config.clone(),
            layers,
            varmap: pb.into_varmap(),
            device: device.clone(),
            dtype: DType::F32,
            held: Some((first, last)),
        })
    }

    /// The layers whose weights this model holds: all, or a range (see [`Model::partial`]).
    pub fn held_layers(&self) -> (usize, usize) {
        self.held
            .unwrap_or((0, self.layers.len().saturating_sub(1)))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The whole model.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_range(0, self.layers.len() - 1, xs, train)
    }

    /// Layers `first ..= last` only: `xs` is the model input when `first == 0`, otherwise the
    /// output of layer `first - 1`.
    pub fn forward_range(
        &self,
        first: usize,
        last: usize,
        xs: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        if first > last || last >= self.layers.len() {
            return Err(ModelError::LayerRange {
                first,
                last,
                len: self.layers.len(),
            });
        }
        if let Some((lo, hi)) = self.held
            && (first < lo || last > hi)
        {
            return Err(ModelError::input(
                self.layers[first].name(),
                format!("this stage holds layers {lo}..={hi} only, not {first}..={last}"),
            ));
        }
        let layer = &self.layers[first];
        layer.output_shape(xs.dims())?;
        layer.check_input(xs)?;
        let ids_ok = first == 0 && self.config.takes_ids();
        if !ids_ok && xs.dtype() != self.dtype {
            return Err(ModelError::input(
                layer.name(),
                format!("expected dtype {:?}, got {:?}", self.dtype, xs.dtype()),
            ));
        }
        let mut ys = xs.clone();
        for layer in &self.layers[first..=last] {
            ys = layer.forward_t(&ys, train)?;
        }
        Ok(ys)
    }

    /// A valid, deterministic input of `batch` examples at the config's [`input_shape`]
    /// (ModelConfig::input_shape): floats in [-1, 1], ids spread over their range. For profiling
    /// and benchmarks.
    pub fn example_input(&self, batch: usize) -> Result<Tensor> {
        let shape = self.config.input_shape(batch);
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                ModelError::config("batch", format!("{batch} examples of {shape:?} overflow"))
            })?;
        let wave = |i: usize| ((i as f64) * 0.37).sin();
        let tensor = match &self.config {
            ModelConfig::Pmf(c) => {
                let ids: Vec<u32> = (0..n)
                    .map(|i| if i % 2 == 0 { (i / 2 * 7919) % c.n_users } else { (i / 2 * 104_729) % c.n_items } as u32)
                    .collect();
                Tensor::from_vec(ids, shape, &self.device)?
            }
            ModelConfig::Transformer(c) => {
                let ids: Vec<u32> = (0..n).map(|i| ((i * 7919) % c.vocab_size) as u32).collect();
                Tensor::from_vec(ids, shape, &self.device)?
            }
            ModelConfig::SparseLogreg(c) => {
                let pairs: Vec<f32> = (0..n)
                    .map(|i| {
                        if i % 2 == 0 {
                            ((i / 2 * 7919) % c.n_features) as f32
                        } else {
                            wave(i) as f32
                        }
                    })
                    .collect();
                Tensor::from_vec(pairs, shape, &self.device)?.to_dtype(self.dtype)?
            }
            _ => {
                let values: Vec<f32> = (0..n).map(|i| wave(i) as f32).collect();
                Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?
            }
        };
        Ok(tensor)
    }

    /// Per-layer metadata for a model input of `input_shape` (batch included), shapes chained
    /// through the layers.
    pub fn layer_infos(&self, input_shape: &[usize]) -> Result<Vec<LayerInfo>> {
        let mut shape = input_shape.to_vec();
        let mut infos = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let info = LayerInfo::of(i, layer.as_ref(), &shape)?;
            shape.clone_from(&info.output_shape);
            infos.push(info);
        }
        Ok(infos)
    }

    /// Every tensor (parameters and buffers) in layer order.
    pub fn param_infos(&self) -> Vec<ParamInfo> {
        self.layers
            .iter()
            .flat_map(|l| l.params().iter().cloned())
            .collect()
    }

    /// Number of trainable parameters (BatchNorm running statistics excluded).
    pub fn total_params(&self) -> usize {
        self.param_infos()
            .iter()
            .filter(|p| p.trainable)
            .map(ParamInfo::numel)
            .sum()
    }

    /// The variable named `name` (parameter or buffer).
    pub fn var(&self, name: &str) -> Option<Var> {
        self.varmap
            .data()
            .lock()
            .expect("the VarMap mutex is never held across a panic")
            .get(name)
            .cloned()
    }

    /// The trainable variables, in layer order: what an optimizer updates.
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars(true).into_iter().map(|(_, v)| v).collect()
    }

    /// `(name, variable)` for every tensor (`trainable_only` drops the buffers), in layer order.
    pub fn named_vars(&self, trainable_only: bool) -> Vec<(String, Var)> {
        let data = self
            .varmap
            .data()
            .lock()
            .expect("the VarMap mutex is never held across a panic");
        self.param_infos()
            .into_iter()
            .filter(|p| p.trainable || !trainable_only)
            .filter_map(|p| data.get(&p.name).map(|v| (p.name, v.clone())))
            .collect()
    }

    /// The underlying candle variable map (shared with the layers).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Overwrite the tensor `name` with `value` (same shape; converted to the model's dtype and
    /// device).
    pub fn set_param(&self, name: &str, value: &Tensor) -> Result<()> {
        let var = self
            .var(name)
            .ok_or_else(|| ModelError::UnknownParameter(name.to_string()))?;
        if var.dims() != value.dims() {
            return Err(ModelError::input(
                name,
                format!("expected shape {:?}, got {:?}", var.dims(), value.dims()),
            ));
        }
        var.set(&value.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        Ok(())
    }
}
