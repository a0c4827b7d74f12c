//! Logistic regression, dense and sparse.
//!
//! * `logreg`: one [`DenseLayer`](super::mlp::DenseLayer) `layers.0` without activation; input
//!   F32 `[batch, n_features]`, output logits `[batch, n_outputs]`.
//! * `sparse_logreg`: one [`SparseLinear`] `layers.0` over a hashed feature space (Criteo-style).
//!   Its input is F32 `[batch, k, 2]`: `k` (feature index, value) pairs per example, the index an
//!   integer stored as f32 (exact below 2^24) and already hashed into `[0, n_features)`. Rows with
//!   fewer pairs are padded with `(0, 0.0)` pairs, which contribute nothing. The weight table is
//!   gathered with an index-select, so the gradient is non-zero only in the rows of touched features.

use candle_core::{D, DType, Tensor};

use crate::blocks::{check_float_ids, gather_rows, to_candle};
use crate::config::{LogregConfig, SparseLogregConfig};
use crate::error::Result;
use crate::layer::{
    Init, Layer, ParamBuilder, ParamInfo, expect_dim, expect_rank, sat_mul, sat_sum,
};

use super::mlp::DenseLayer;

/// Layers of the dense logistic regression.
pub fn build_dense(cfg: &LogregConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    Ok(vec![Box::new(DenseLayer::new(
        pb,
        "layers.0",
        cfg.n_features,
        cfg.n_outputs,
        None,
        0.0,
    )?)])
}

/// Layers of the sparse logistic regression.
pub fn build_sparse(
    cfg: &SparseLogregConfig,
    pb: &mut ParamBuilder,
) -> Result<Vec<Box<dyn Layer>>> {
    Ok(vec![Box::new(SparseLinear::new(
        pb,
        "layers.0",
        cfg.n_features,
        cfg.n_outputs,
    )?)])
}

/// `y[b] = sum_j value[b, j] * weight[index[b, j]] + bias` with `weight` `[n_features, n_outputs]`.
pub struct SparseLinear {
    name: String,
    params: Vec<ParamInfo>,
    weight: Tensor,
    bias: Tensor,
    n_features: usize,
    n_outputs: usize,
}

impl SparseLinear {
    pub fn new(
        pb: &mut ParamBuilder,
        name: &str,
        n_features: usize,
        n_outputs: usize,
    ) -> Result<Self> {
        let mut scope = pb.scope(name);
        // Zero start, as is usual for (sparse) logistic regression: the loss is convex.
        let weight = scope.param("weight", &[n_features, n_outputs], Init::Const(0.0))?;
        let bias = scope.param("bias", &[n_outputs], Init::Const(0.0))?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            weight,
            bias,
            n_features,
            n_outputs,
        })
    }
}

impl Layer for SparseLinear {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sparse_linear"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(
            &self.name,
            input,
            3,
            "[batch, pairs, 2] (index, value) pairs",
        )?;
        expect_dim(&self.name, input, 2, 2, "(index, value) pair size")?;
        Ok(vec![input[0], self.n_outputs])
    }

    fn check_input(&self, xs: &Tensor) -> Result<()> {
        let index = xs.narrow(D::Minus1, 0, 1)?;
        check_float_ids(&self.name, "feature index", &index, self.n_features)
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let (batch, pairs) = (
            input.first().copied().unwrap_or(0),
            input.get(1).copied().unwrap_or(0),
        );
        sat_sum(&[
            sat_mul(&[2, batch, pairs, self.n_outputs]),
            sat_mul(&[batch, self.n_outputs]),
        ])
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let (batch, k, _) = xs.dims3()?;
        let index = xs.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
        let values = xs.narrow(D::Minus1, 1, 1)?;
        check_float_ids(&self.name, "feature index", &index, self.n_features).map_err(to_candle)?;
        let ids = index.to_dtype(DType::U32)?;
        let rows = gather_rows(&self.weight, &ids)?; // [batch, k, n_outputs]
        let weighted = rows.broadcast_mul(&values)?;
        let summed = if k == 0 {
            Tensor::zeros((batch, self.n_outputs), xs.dtype(), xs.device())?
        } else {
            weighted.sum(1)?
        };
        summed.broadcast_add(&self.bias)
    }
}
