//! Tensor building blocks shared by the zoo: linear, 2-D convolution, batch norm, layer norm and
//! activations, written over plain candle ops so that every one of them has a backward pass
//! (candle-nn's fused softmax/layer-norm kernels have none) and works for any float dtype.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use cumulus_models::blocks::Linear;
//! use cumulus_models::layer::ParamBuilder;
//!
//! let mut pb = ParamBuilder::new(&Device::Cpu, DType::F32, 0);
//! let mut scope = pb.scope("layers.0");
//! let fc = Linear::new(&mut scope, "", 3, 2)?;
//! let y = fc.forward(&Tensor::zeros((5, 3), DType::F32, &Device::Cpu)?)?;
//! assert_eq!(y.dims(), &[5, 2]);
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

use candle_core::{D, DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::layer::{Init, ParamScope, sat_mul, sat_sum};

/// `a.b`, or `b` when `a` is empty.
fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

/// Element-wise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Tanh,
    /// The exact (erf) GELU, PyTorch's default.
    Gelu,
    Sigmoid,
}

impl Activation {
    pub fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Relu => xs.relu(),
            Self::Tanh => xs.tanh(),
            Self::Gelu => xs.gelu_erf(),
            // Written as 1 / (1 + exp(-x)) so it differentiates for every dtype.
            Self::Sigmoid => (xs.neg()?.exp()? + 1.0)?.recip(),
        }
    }
}

/// Dropout with probability `p` in training, identity otherwise.
pub fn dropout(xs: &Tensor, p: f32, train: bool) -> candle_core::Result<Tensor> {
    if train && p > 0.0 {
        candle_nn::ops::dropout(xs, p)
    } else {
        Ok(xs.clone())
    }
}

/// `y = x W^T + b` over the last dimension; `weight` is `[out, in]` as in PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    /// Parameters `<name>.weight` and `<name>.bias` with PyTorch's default uniform init.
    pub fn new(
        scope: &mut ParamScope<'_>,
        name: &str,
        fan_in: usize,
        fan_out: usize,
    ) -> Result<Self> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = scope.param(
            &join(name, "weight"),
            &[fan_out, fan_in],
            Init::Uniform(bound),
        )?;
        let bias = scope.param(&join(name, "bias"), &[fan_out], Init::Uniform(bound))?;
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)
    }

    /// FLOPs for `rows` input rows.
    pub fn flops(&self, rows: usize) -> u64 {
        let (out, inp) = self.weight.dims2().unwrap_or((0, 0));
        sat_sum(&[sat_mul(&[2, rows, inp, out]), sat_mul(&[rows, out])])
    }
}

/// 2-D convolution, weight `[out, in, k, k]`, optional bias.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub padding: usize,
    pub stride: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scope: &mut ParamScope<'_>,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
        bias: bool,
    ) -> Result<Self> {
        let bound = 1.0 / ((c_in * kernel * kernel) as f64).sqrt();
        let weight = scope.param(
            &join(name, "weight"),
            &[c_out, c_in, kernel, kernel],
            Init::Uniform(bound),
        )?;
        let bias = if bias {
            Some(scope.param(&join(name, "bias"), &[c_out], Init::Uniform(bound))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            padding,
            stride,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = xs.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(ys),
        }
    }

    pub fn kernel(&self) -> usize {
        self.weight.dims().get(2).copied().unwrap_or(1)
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims().first().copied().unwrap_or(0)
    }

    /// Spatial output size for an input size `h`, `None` when the kernel does not fit.
    pub fn out_size(&self, h: usize) -> Option<usize> {
        h.checked_add(2 * self.padding)?
            .checked_sub(self.kernel())
            .map(|d| d / self.stride + 1)
    }

    /// FLOPs for an input `[n, c, h, w]`.
    pub fn flops(&self, input: &[usize]) -> u64 {
        let [n, c, h, w] = input else { return 0 };
        let (Some(oh), Some(ow)) = (self.out_size(*h), self.out_size(*w)) else {
            return 0;
        };
        let k = self.kernel();
        sat_mul(&[2, *n, self.out_channels(), oh, ow, *c, k, k])
    }
}

/// Weight of a new batch's statistics in BatchNorm's running statistics (PyTorch's default).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// Batch normalization over `[n, c, h, w]` with PyTorch semantics: batch statistics (biased
/// variance) in training, running statistics (momentum 0.1, unbiased variance) otherwise.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm2d {
    pub fn new(scope: &mut ParamScope<'_>, name: &str, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: scope.param(&join(name, "weight"), &[channels], Init::Const(1.0))?,
            bias: scope.param(&join(name, "bias"), &[channels], Init::Const(0.0))?,
            running_mean: scope.buffer(
                &join(name, "running_mean"),
                &[channels],
                Init::Const(0.0),
            )?,
            running_var: scope.buffer(&join(name, "running_var"), &[channels], Init::Const(1.0))?,
            eps: 1e-5,
            momentum: BATCH_NORM_MOMENTUM,
        })
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let (mean, var) = if train {
            let count = (n * h * w) as f64;
            let mean = xs.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let centered = xs.broadcast_sub(&mean)?;
            let var = centered
                .sqr()?
                .mean_keepdim(0)?
                .mean_keepdim(2)?
                .mean_keepdim(3)?;
            let m = self.momentum;
            let unbiased = (var.detach() * (count / (count - 1.0).max(1.0)))?.flatten_all()?;
            let rm = ((self.running_mean.as_tensor() * (1.0 - m))?
                + (mean.detach().flatten_all()? * m)?)?;
            let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            self.running_mean.set(&rm)?;
            self.running_var.set(&rv)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().reshape((1, c, 1, 1))?,
                self.running_var.as_tensor().reshape((1, c, 1, 1))?,
            )
        };
        let normed = xs
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

/// Layer normalization over the last dimension (PyTorch `nn.LayerNorm`, eps 1e-5).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(scope: &mut ParamScope<'_>, name: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: scope.param(&join(name, "weight"), &[dim], Init::Const(1.0))?,
            bias: scope.param(&join(name, "bias"), &[dim], Init::Const(0.0))?,
            eps: 1e-5,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centered = xs.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// 2x2 max-pooling with stride 2 (odd trailing rows/columns dropped, as PyTorch does), written as
/// reshape + max so its gradient is exact: candle 0.11's `max_pool2d` backward scales the gradient
/// by 1/4 (it multiplies by the mask's average instead of dividing).
pub fn max_pool2x2(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    xs.narrow(2, 0, 2 * h2)?
        .narrow(3, 0, 2 * w2)?
        .reshape((n, c, h2, 2, w2, 2))?
        .max(5)?
        .max(3)
}

/// Softmax over the last dimension with a backward pass (max-subtracted for stability).
pub fn softmax_last_dim(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let e = xs.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Gather rows of `table` (`[n, d]`, or `[n]`) by integer `ids` of any shape; the gradient reaches
/// only the gathered rows (index-select's backward is a scatter-add).
pub fn gather_rows(table: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let flat = ids.flatten_all()?;
    let rows = table.index_select(&flat, 0)?;
    let mut shape = ids.dims().to_vec();
    shape.extend_from_slice(&table.dims()[1..]);
    rows.reshape(shape)
}

/// Check that `ids` holds integer ids (U8, U32 or I64) in `0..limit`; `what` names them in the
/// error ("token id", "user id", ...).
pub fn check_ids(layer: &str, what: &str, ids: &Tensor, limit: usize) -> Result<()> {
    if !matches!(ids.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(ModelError::input(
            layer,
            format!("{what}s must be integers (UINT32), got {:?}", ids.dtype()),
        ));
    }
    if ids.elem_count() == 0 {
        return Ok(());
    }
    let flat = ids.flatten_all()?.to_dtype(DType::I64)?;
    let min = flat.min(0)?.to_scalar::<i64>()?;
    let max = flat.max(0)?.to_scalar::<i64>()?;
    if min < 0 {
        return Err(ModelError::input(
            layer,
            format!("{what} {min} is negative"),
        ));
    }
    if max as u64 >= limit as u64 {
        return Err(ModelError::input(
            layer,
            format!("{what} {max} out of range (the model has {limit})"),
        ));
    }
    Ok(())
}

/// Check that float-coded ids (sparse feature indices) are whole numbers in `0..limit`.
pub fn check_float_ids(layer: &str, what: &str, ids: &Tensor, limit: usize) -> Result<()> {
    let values = ids.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    for v in values {
        if !(v >= 0.0 && v < limit as f64 && v.fract() == 0.0) {
            return Err(ModelError::input(
                layer,
                format!("{what} {v} is not a whole number in [0, {limit})"),
            ));
        }
    }
    Ok(())
}

/// An input error as a candle error, for checks inside `forward_t`.
pub fn to_candle(err: ModelError) -> candle_core::Error {
    candle_core::Error::Msg(err.to_string())
}
