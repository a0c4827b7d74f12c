//! The [`Layer`] trait every model is built from, the per-layer metadata ([`ParamInfo`],
//! [`LayerInfo`]) the partitioner reads, and [`ParamBuilder`], the seeded initializer that creates
//! a model's variables under their checkpoint names.
//!
//! A layer is a *meaningful group* (a ResNet BasicBlock, a transformer block, one Linear plus its
//! activation), not a single tensor op. Its parameter names are the safetensors keys, e.g.
//! `layers.3.conv1.weight`.
//!
//! ```
//! use candle_core::{DType, Device};
//! use cumulus_models::layer::{Init, ParamBuilder};
//!
//! let mut pb = ParamBuilder::new(&Device::Cpu, DType::F32, 7);
//! let mut scope = pb.scope("layers.0");
//! let w = scope.param("weight", &[4, 3], Init::Uniform(0.5))?;
//! let infos = scope.finish();
//! assert_eq!(infos[0].name, "layers.0.weight");
//! assert_eq!(w.dims(), &[4, 3]);
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::Serialize;

use crate::error::{ModelError, Result};

/// One named tensor of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamInfo {
    /// Full name, equal to the safetensors key.
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(serialize_with = "serialize_dtype")]
    pub dtype: DType,
    /// `false` for buffers such as BatchNorm running statistics: saved, never optimized.
    pub trainable: bool,
}

fn serialize_dtype<S: serde::Serializer>(
    dtype: &DType,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(dtype.as_str())
}

impl ParamInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size_in_bytes()
    }
}

/// A contiguous piece of a model that maps one activation to the next.
pub trait Layer: Send + Sync {
    /// Name, also the prefix of its parameter names (`layers.3`).
    fn name(&self) -> &str;
    /// Kind, e.g. `linear`, `basic_block`, `transformer_block`.
    fn kind(&self) -> &'static str;
    /// Its tensors (trainable parameters and buffers), names equal to the safetensors keys.
    fn params(&self) -> &[ParamInfo];
    /// Output shape for an input shape (batch dimension included); an error names what does not fit.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;
    /// Check an input's values beyond its shape (id ranges, dtypes); the default accepts all.
    /// [`Model::forward_range`](crate::Model::forward_range) calls it on the first layer of a range
    /// so that bad ids are an input error, not a failure inside a kernel.
    fn check_input(&self, _xs: &Tensor) -> Result<()> {
        Ok(())
    }
    /// Estimated floating-point operations of one forward pass (a multiply-add counts 2).
    fn flops(&self, input: &[usize]) -> u64;
    /// Forward pass; `train` enables dropout and batch statistics.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

/// Everything the partitioner and `models inspect` want to know about one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerInfo {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub params: Vec<ParamInfo>,
    /// Trainable parameter count (buffers excluded).
    pub param_count: usize,
    /// Bytes of all tensors, buffers included (what a stage must hold in memory).
    pub param_bytes: usize,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub flops: u64,
}

impl LayerInfo {
    /// Describe `layer` at `index` for an input of `input_shape`.
    pub fn of(index: usize, layer: &dyn Layer, input_shape: &[usize]) -> Result<Self> {
        let params = layer.params().to_vec();
        Ok(Self {
            index,
            name: layer.name().to_string(),
            kind: layer.kind().to_string(),
            param_count: params
                .iter()
                .filter(|p| p.trainable)
                .map(ParamInfo::numel)
                .sum(),
            param_bytes: params.iter().map(ParamInfo::bytes).sum(),
            params,
            input_shape: input_shape.to_vec(),
            output_shape: layer.output_shape(input_shape)?,
            flops: layer.flops(input_shape),
        })
    }
}

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in `[-bound, bound]` (PyTorch's Linear/Conv default uses `1/sqrt(fan_in)`).
    Uniform(f64),
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// Every element equal to this value.
    Const(f64),
}

/// Creates a model's variables from one seeded RNG, in construction order, and records them in a
/// [`VarMap`] under their full names.
pub struct ParamBuilder {
    device: Device,
    dtype: DType,
    rng: StdRng,
    varmap: VarMap,
    infos: Vec<ParamInfo>,
    /// Parameter names to leave out (layers another stage holds): they get a one-element
    /// placeholder broadcast to their shape, are not recorded, and cost no memory.
    skip: Option<SkipFn>,
}

/// Which parameter names a [`ParamBuilder`] leaves out.
type SkipFn = Box<dyn Fn(&str) -> bool + Send>;

impl ParamBuilder {
    /// A builder whose parameters are drawn from `seed` on `device` with `dtype`.
    pub fn new(device: &Device, dtype: DType, seed: u64) -> Self {
        Self {
            device: device.clone(),
            dtype,
            rng: StdRng::seed_from_u64(seed),
            varmap: VarMap::new(),
            infos: Vec::new(),
            skip: None,
        }
    }

    /// Leaves out every parameter whose name `skip` accepts (see [`crate::Model::load_layers`]).
    pub fn skipping(mut self, skip: impl Fn(&str) -> bool + Send + 'static) -> Self {
        self.skip = Some(Box::new(skip));
        self
    }

    fn skipped(&self, name: &str) -> bool {
        self.skip.as_ref().is_some_and(|s| s(name))
    }

    /// A placeholder of `shape` that holds one element (a stride-0 view).
    fn placeholder(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::zeros((), self.dtype, &self.device)?.broadcast_as(shape)?)
    }

    /// Start a layer whose parameter names are prefixed by `prefix.`.
    pub fn scope(&mut self, prefix: &str) -> ParamScope<'_> {
        let start = self.infos.len();
        ParamScope {
            builder: self,
            prefix: prefix.to_string(),
            start,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The map of every variable created so far.
    pub fn into_varmap(self) -> VarMap {
        self.varmap
    }

    fn create(
        &mut self,
        name: String,
        shape: &[usize],
        init: Init,
        trainable: bool,
    ) -> Result<Tensor> {
        if self.skipped(&name) {
            return self.placeholder(shape);
        }
        let n: usize = shape.iter().product();
        // Draws are f64 whatever the dtype (the same seed gives the same weights in F32 and F64);
        // an F32 model keeps them as f32 straight away (`as` rounds as candle's cast does), so
        // building never holds an f64 copy of a tensor twice its size.
        let mut draw: Box<dyn FnMut(&mut StdRng) -> f64> = match init {
            Init::Const(v) => Box::new(move |_| v),
            Init::Uniform(bound) => {
                let dist = Uniform::new_inclusive(-bound, bound)
                    .map_err(|e| ModelError::config(&name, format!("init bound {bound}: {e}")))?;
                Box::new(move |rng| dist.sample(rng))
            }
            Init::Normal(std) => {
                let dist = Normal::new(0.0, std)
                    .map_err(|e| ModelError::config(&name, format!("init std {std}: {e}")))?;
                Box::new(move |rng| dist.sample(rng))
            }
        };
        let rng = &mut self.rng;
        let tensor = if self.dtype == DType::F32 {
            let values: Vec<f32> = (0..n).map(|_| draw(rng) as f32).collect();
            Tensor::from_vec(values, shape, &Device::Cpu)?
        } else {
            let values: Vec<f64> = (0..n).map(|_| draw(rng)).collect();
            Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(self.dtype)?
        }
        .to_device(&self.device)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        let mut data = self.varmap.data().lock().expect(
            "the VarMap mutex is only held inside this builder, which never panics with it",
        );
        if data.insert(name.clone(), var).is_some() {
            return Err(ModelError::config(name, "parameter name used twice"));
        }
        self.infos.push(ParamInfo {
            name,
            shape: shape.to_vec(),
            dtype: self.dtype,
            trainable,
        });
        Ok(out)
    }
}

/// The parameters of one layer being built; see [`ParamBuilder::scope`].
pub struct ParamScope<'a> {
    builder: &'a mut ParamBuilder,
    prefix: String,
    start: usize,
}

impl ParamScope<'_> {
    /// A trainable parameter `prefix.name`.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = format!("{}.{name}", self.prefix);
        self.builder.create(full, shape, init, true)
    }

    /// A buffer `prefix.name` (saved, not trained), e.g. BatchNorm running statistics.
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let full = format!("{}.{name}", self.prefix);
        if self.builder.skipped(&full) {
            return Ok(Var::from_tensor(&self.builder.placeholder(shape)?)?);
        }
        self.builder.create(full.clone(), shape, init, false)?;
        let data = self.builder.varmap.data().lock().expect(
            "the VarMap mutex is only held inside this builder, which never panics with it",
        );
        Ok(data
            .get(&full)
            .expect("the buffer was inserted just above")
            .clone())
    }

    /// The layer's name (the prefix).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn dtype(&self) -> DType {
        self.builder.dtype
    }

    pub fn device(&self) -> &Device {
        &self.builder.device
    }

    /// The infos of the parameters created in this scope, in creation order.
    pub fn finish(self) -> Vec<ParamInfo> {
        self.builder.infos[self.start..].to_vec()
    }
}

/// The product of `factors`, saturating at `u64::MAX`: the FLOP count of an absurd shape stays a
/// number instead of overflowing (callers bound the batch; this keeps `flops` total).
pub fn sat_mul(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |acc, &f| acc.saturating_mul(f as u64))
}

/// The sum of `terms`, saturating at `u64::MAX`.
pub fn sat_sum(terms: &[u64]) -> u64 {
    terms.iter().fold(0u64, |acc, &t| acc.saturating_add(t))
}

/// Check that `input` has rank `rank`; `what` describes the expected layout for the message.
pub(crate) fn expect_rank(layer: &str, input: &[usize], rank: usize, what: &str) -> Result<()> {
    if input.len() != rank {
        return Err(ModelError::input(
            layer,
            format!("expected {what} (rank {rank}), got shape {input:?}"),
        ));
    }
    Ok(())
}

/// Check that dimension `dim` of `input` equals `expected`.
pub(crate) fn expect_dim(
    layer: &str,
    input: &[usize],
    dim: usize,
    expected: usize,
    what: &str,
) -> Result<()> {
    if input.get(dim) != Some(&expected) {
        return Err(ModelError::input(
            layer,
            format!("expected {what} = {expected} in dimension {dim}, got shape {input:?}"),
        ));
    }
    Ok(())
}
