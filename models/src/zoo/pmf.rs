//! Probabilistic matrix factorization with biases: `r(u, i) = g + b_u + b_i + <p_u, q_i>`.
//!
//! One layer `layers.0` (`user_factors` `[n_users, k]`, `item_factors` `[n_items, k]`,
//! `user_bias` `[n_users]`, `item_bias` `[n_items]`, `global_bias` `[1]`). Input: integer ids
//! `[batch, 2]` (user, item), U32 preferred; output: predicted ratings `[batch]`. Rows are
//! gathered by index-select, so a step only changes the factors of the users and items it saw.

use candle_core::{DType, Tensor};

use crate::blocks::{check_ids, gather_rows, to_candle};
use crate::config::PmfConfig;
use crate::error::Result;
use crate::layer::{Init, Layer, ParamBuilder, ParamInfo, expect_dim, expect_rank, sat_mul};

/// The whole factorization model as one layer.
pub struct MatrixFactorization {
    name: String,
    params: Vec<ParamInfo>,
    user_factors: Tensor,
    item_factors: Tensor,
    user_bias: Tensor,
    item_bias: Tensor,
    global_bias: Tensor,
    n_users: usize,
    n_items: usize,
}

impl MatrixFactorization {
    pub fn new(pb: &mut ParamBuilder, name: &str, cfg: &PmfConfig) -> Result<Self> {
        let mut scope = pb.scope(name);
        let user_factors = scope.param(
            "user_factors",
            &[cfg.n_users, cfg.n_factors],
            Init::Normal(0.1),
        )?;
        let item_factors = scope.param(
            "item_factors",
            &[cfg.n_items, cfg.n_factors],
            Init::Normal(0.1),
        )?;
        let user_bias = scope.param("user_bias", &[cfg.n_users], Init::Const(0.0))?;
        let item_bias = scope.param("item_bias", &[cfg.n_items], Init::Const(0.0))?;
        let global_bias = scope.param("global_bias", &[1], Init::Const(0.0))?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            user_factors,
            item_factors,
            user_bias,
            item_bias,
            global_bias,
            n_users: cfg.n_users,
            n_items: cfg.n_items,
        })
    }
}

impl Layer for MatrixFactorization {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "matrix_factorization"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(&self.name, input, 2, "[batch, 2] (user, item) ids")?;
        expect_dim(&self.name, input, 1, 2, "ids per example")?;
        Ok(vec![input[0]])
    }

    fn check_input(&self, xs: &Tensor) -> Result<()> {
        check_ids(&self.name, "user id", &xs.narrow(1, 0, 1)?, self.n_users)?;
        check_ids(&self.name, "item id", &xs.narrow(1, 1, 1)?, self.n_items)
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let k = self.user_factors.dims().get(1).copied().unwrap_or(0);
        sat_mul(&[input.first().copied().unwrap_or(0), 2 * k + 3])
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.check_input(xs).map_err(to_candle)?;
        let ids = xs.to_dtype(DType::U32)?;
        let users = ids.narrow(1, 0, 1)?.squeeze(1)?;
        let items = ids.narrow(1, 1, 1)?.squeeze(1)?;
        let p = gather_rows(&self.user_factors, &users)?;
        let q = gather_rows(&self.item_factors, &items)?;
        let dot = (p * q)?.sum(1)?;
        let bu = gather_rows(&self.user_bias, &users)?;
        let bi = gather_rows(&self.item_bias, &items)?;
        ((dot + bu)? + bi)?.broadcast_add(&self.global_bias)
    }
}

/// The factorization's single layer.
pub fn build(cfg: &PmfConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    Ok(vec![Box::new(MatrixFactorization::new(
        pb, "layers.0", cfg,
    )?)])
}
