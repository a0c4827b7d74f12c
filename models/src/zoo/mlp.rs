//! Dense layers: [`DenseLayer`] (one Linear, then an optional activation and dropout) and the
//! MLP built from them, one layer per Linear: `layers.0 .. layers.{n-1}`, the last one without
//! activation (it returns logits).

use candle_core::Tensor;

use crate::blocks::{Activation, Linear, dropout};
use crate::config::MlpConfig;
use crate::error::Result;
use crate::layer::{Layer, ParamBuilder, ParamInfo, expect_dim, expect_rank, sat_mul, sat_sum};

/// `activation(x W^T + b)` with dropout in training; input `[batch, in]`, output `[batch, out]`.
pub struct DenseLayer {
    name: String,
    params: Vec<ParamInfo>,
    fc: Linear,
    activation: Option<Activation>,
    dropout: f32,
    fan_in: usize,
    fan_out: usize,
}

impl DenseLayer {
    /// A layer named `name` with parameters `name.weight` `[fan_out, fan_in]` and `name.bias`.
    pub fn new(
        pb: &mut ParamBuilder,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        activation: Option<Activation>,
        dropout: f32,
    ) -> Result<Self> {
        let mut scope = pb.scope(name);
        let fc = Linear::new(&mut scope, "", fan_in, fan_out)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            fc,
            activation,
            dropout,
            fan_in,
            fan_out,
        })
    }
}

impl Layer for DenseLayer {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        if self.activation.is_some() {
            "linear_activation"
        } else {
            "linear"
        }
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(&self.name, input, 2, "[batch, features]")?;
        expect_dim(&self.name, input, 1, self.fan_in, "features")?;
        Ok(vec![input[0], self.fan_out])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let rows = input.first().copied().unwrap_or(0);
        let act = if self.activation.is_some() {
            sat_mul(&[rows, self.fan_out])
        } else {
            0
        };
        sat_sum(&[self.fc.flops(rows), act])
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let ys = self.fc.forward(xs)?;
        match self.activation {
            Some(act) => dropout(&act.forward(&ys)?, self.dropout, train),
            None => Ok(ys),
        }
    }
}

/// The MLP's layers: one [`DenseLayer`] per hidden width, then the output layer.
pub fn build(cfg: &MlpConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut fan_in = cfg.input_dim;
    for (i, &width) in cfg.hidden.iter().enumerate() {
        let name = format!("layers.{i}");
        layers.push(Box::new(DenseLayer::new(
            pb,
            &name,
            fan_in,
            width,
            Some(cfg.activation),
            cfg.dropout,
        )?));
        fan_in = width;
    }
    let name = format!("layers.{}", cfg.hidden.len());
    layers.push(Box::new(DenseLayer::new(
        pb,
        &name,
        fan_in,
        cfg.n_outputs,
        None,
        0.0,
    )?));
    Ok(layers)
}
