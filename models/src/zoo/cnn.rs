//! LeNet-5-style CNN. Layers (input `[batch, c, h, w]`, h and w at least 12):
//!
//! | layer | kind | does |
//! |---|---|---|
//! | `layers.0` | `conv_pool` | conv 5x5 c->6 (padding 2), ReLU, max-pool 2 |
//! | `layers.1` | `conv_pool` | conv 5x5 6->16, ReLU, max-pool 2 |
//! | `layers.2` | `flatten_linear` | flatten, Linear 16*h'*w' -> 120, ReLU |
//! | `layers.3` | `linear_activation` | Linear 120 -> 84, ReLU |
//! | `layers.4` | `linear` | Linear 84 -> n_classes (logits) |
//!
//! With padding 2 on the first convolution a 28x28 MNIST image gives the classic 16x5x5 = 400
//! features before the first Linear.

use candle_core::Tensor;

use crate::blocks::{Activation, Conv2d, Linear, max_pool2x2};
use crate::config::LenetConfig;
use crate::error::{ModelError, Result};
use crate::layer::{Layer, ParamBuilder, ParamInfo, expect_dim, expect_rank, sat_mul, sat_sum};

use super::mlp::DenseLayer;

/// Convolution, ReLU and 2x2 max-pooling.
pub struct ConvPool {
    name: String,
    params: Vec<ParamInfo>,
    conv: Conv2d,
    in_channels: usize,
}

impl ConvPool {
    pub fn new(
        pb: &mut ParamBuilder,
        name: &str,
        c_in: usize,
        c_out: usize,
        padding: usize,
    ) -> Result<Self> {
        let mut scope = pb.scope(name);
        let conv = Conv2d::new(&mut scope, "", c_in, c_out, 5, padding, 1, true)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            conv,
            in_channels: c_in,
        })
    }
}

impl Layer for ConvPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "conv_pool"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(&self.name, input, 4, "[batch, channels, height, width]")?;
        expect_dim(&self.name, input, 1, self.in_channels, "channels")?;
        let pooled = |side: usize| self.conv.out_size(side).map(|s| s / 2).filter(|&s| s > 0);
        match (pooled(input[2]), pooled(input[3])) {
            (Some(h), Some(w)) => Ok(vec![input[0], self.conv.out_channels(), h, w]),
            _ => Err(ModelError::input(
                &self.name,
                format!(
                    "image {}x{} too small for a 5x5 convolution and 2x2 pooling",
                    input[2], input[3]
                ),
            )),
        }
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let conv = self.conv.flops(input);
        // ReLU and pooling touch each conv output about twice.
        let per_output = sat_mul(&[input.get(1).copied().unwrap_or(1), 25]).max(1);
        sat_sum(&[conv, (conv / per_output).saturating_mul(2)])
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        max_pool2x2(&self.conv.forward(xs)?.relu()?)
    }
}

/// Flatten `[batch, c, h, w]` to `[batch, c*h*w]`, then Linear and ReLU.
pub struct FlattenLinear {
    name: String,
    params: Vec<ParamInfo>,
    fc: Linear,
    fan_in: usize,
    fan_out: usize,
}

impl FlattenLinear {
    pub fn new(pb: &mut ParamBuilder, name: &str, fan_in: usize, fan_out: usize) -> Result<Self> {
        let mut scope = pb.scope(name);
        let fc = Linear::new(&mut scope, "", fan_in, fan_out)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            fc,
            fan_in,
            fan_out,
        })
    }
}

impl Layer for FlattenLinear {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "flatten_linear"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let features = input
            .iter()
            .skip(1)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if input.len() < 2 || features != Some(self.fan_in) {
            return Err(ModelError::input(
                &self.name,
                format!(
                    "expected [batch, ...] with {} features per example, got {input:?}",
                    self.fan_in
                ),
            ));
        }
        Ok(vec![input[0], self.fan_out])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let rows = input.first().copied().unwrap_or(0);
        sat_sum(&[self.fc.flops(rows), sat_mul(&[rows, self.fan_out])])
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward(&xs.flatten_from(1)?)?.relu()
    }
}

/// LeNet's five layers.
pub fn build(cfg: &LenetConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    let h = ((cfg.height / 2) - 4) / 2;
    let w = ((cfg.width / 2) - 4) / 2;
    Ok(vec![
        Box::new(ConvPool::new(pb, "layers.0", cfg.in_channels, 6, 2)?),
        Box::new(ConvPool::new(pb, "layers.1", 6, 16, 0)?),
        Box::new(FlattenLinear::new(pb, "layers.2", 16 * h * w, 120)?),
        Box::new(DenseLayer::new(
            pb,
            "layers.3",
            120,
            84,
            Some(Activation::Relu),
            0.0,
        )?),
        Box::new(DenseLayer::new(
            pb,
            "layers.4",
            84,
            cfg.n_classes,
            None,
            0.0,
        )?),
    ])
}
