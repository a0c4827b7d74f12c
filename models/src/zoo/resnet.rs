//! CIFAR-style ResNet (He et al. 2016, as in kuangliu/pytorch-cifar): a 3x3 stem without
//! max-pooling, four stages of BasicBlocks (64, 128, 256, 512 channels; stride 2 at the start of
//! stages 2-4) and a global-average-pool + Linear head. Depth 18 has blocks (2, 2, 2, 2),
//! depth 34 has (3, 4, 6, 3).
//!
//! Layers: `layers.0` stem (`conv`, `bn`), `layers.1 ..= layers.N` one BasicBlock each (`conv1`,
//! `bn1`, `conv2`, `bn2`, and `shortcut.conv`, `shortcut.bn` where the shape changes), and the
//! last layer the head (`fc`). BatchNorm running statistics are buffers: saved, not trained.

use candle_core::Tensor;

use crate::blocks::{BatchNorm2d, Conv2d, Linear};
use crate::config::ResnetConfig;
use crate::error::{ModelError, Result};
use crate::layer::{Layer, ParamBuilder, ParamInfo, expect_dim, expect_rank, sat_mul, sat_sum};

fn check_image(name: &str, input: &[usize], channels: usize) -> Result<()> {
    expect_rank(name, input, 4, "[batch, channels, height, width]")?;
    expect_dim(name, input, 1, channels, "channels")?;
    if input[2] == 0 || input[3] == 0 {
        return Err(ModelError::input(name, format!("empty image {input:?}")));
    }
    Ok(())
}

/// Normalization FLOPs: about four per element (subtract, divide, scale, shift).
fn bn_flops(shape: &[usize]) -> u64 {
    sat_mul(shape).saturating_mul(4)
}

/// 3x3 convolution, BatchNorm, ReLU.
pub struct Stem {
    name: String,
    params: Vec<ParamInfo>,
    conv: Conv2d,
    bn: BatchNorm2d,
    in_channels: usize,
}

impl Stem {
    pub fn new(pb: &mut ParamBuilder, name: &str, c_in: usize, c_out: usize) -> Result<Self> {
        let mut scope = pb.scope(name);
        let conv = Conv2d::new(&mut scope, "conv", c_in, c_out, 3, 1, 1, false)?;
        let bn = BatchNorm2d::new(&mut scope, "bn", c_out)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            conv,
            bn,
            in_channels: c_in,
        })
    }
}

impl Layer for Stem {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "conv_bn_relu"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_image(&self.name, input, self.in_channels)?;
        Ok(vec![input[0], self.conv.out_channels(), input[2], input[3]])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let out = self.output_shape(input).unwrap_or_default();
        sat_sum(&[self.conv.flops(input), bn_flops(&out), sat_mul(&out)])
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(xs)?, train)?.relu()
    }
}

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
pub struct BasicBlock {
    name: String,
    params: Vec<ParamInfo>,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    shortcut: Option<(Conv2d, BatchNorm2d)>,
    in_channels: usize,
    stride: usize,
}

impl BasicBlock {
    pub fn new(
        pb: &mut ParamBuilder,
        name: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let mut scope = pb.scope(name);
        let conv1 = Conv2d::new(&mut scope, "conv1", c_in, c_out, 3, 1, stride, false)?;
        let bn1 = BatchNorm2d::new(&mut scope, "bn1", c_out)?;
        let conv2 = Conv2d::new(&mut scope, "conv2", c_out, c_out, 3, 1, 1, false)?;
        let bn2 = BatchNorm2d::new(&mut scope, "bn2", c_out)?;
        let shortcut = if stride != 1 || c_in != c_out {
            let conv = Conv2d::new(
                &mut scope,
                "shortcut.conv",
                c_in,
                c_out,
                1,
                0,
                stride,
                false,
            )?;
            let bn = BatchNorm2d::new(&mut scope, "shortcut.bn", c_out)?;
            Some((conv, bn))
        } else {
            None
        };
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
            in_channels: c_in,
            stride,
        })
    }
}

impl Layer for BasicBlock {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "basic_block"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_image(&self.name, input, self.in_channels)?;
        let side = |s: usize| (s - 1) / self.stride + 1;
        Ok(vec![
            input[0],
            self.conv1.out_channels(),
            side(input[2]),
            side(input[3]),
        ])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let Ok(out) = self.output_shape(input) else {
            return 0;
        };
        let short = self
            .shortcut
            .as_ref()
            .map_or(0, |(c, _)| sat_sum(&[c.flops(input), bn_flops(&out)]));
        let elementwise = sat_mul(&out).saturating_mul(3); // two ReLUs and the sum
        sat_sum(&[
            self.conv1.flops(input),
            self.conv2.flops(&out),
            bn_flops(&out).saturating_mul(2),
            short,
            elementwise,
        ])
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let ys = self
            .bn1
            .forward_t(&self.conv1.forward(xs)?, train)?
            .relu()?;
        let ys = self.bn2.forward_t(&self.conv2.forward(&ys)?, train)?;
        let short = match &self.shortcut {
            Some((conv, bn)) => bn.forward_t(&conv.forward(xs)?, train)?,
            None => xs.clone(),
        };
        (ys + short)?.relu()
    }
}

/// Global average pooling and the classifier.
pub struct Head {
    name: String,
    params: Vec<ParamInfo>,
    fc: Linear,
    channels: usize,
    n_classes: usize,
}

impl Head {
    pub fn new(
        pb: &mut ParamBuilder,
        name: &str,
        channels: usize,
        n_classes: usize,
    ) -> Result<Self> {
        let mut scope = pb.scope(name);
        let fc = Linear::new(&mut scope, "fc", channels, n_classes)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            fc,
            channels,
            n_classes,
        })
    }
}

impl Layer for Head {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "avgpool_linear"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_image(&self.name, input, self.channels)?;
        if input[2] == 0 || input[3] == 0 {
            return Err(ModelError::input(
                &self.name,
                format!("empty feature map {input:?}"),
            ));
        }
        Ok(vec![input[0], self.n_classes])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        sat_sum(&[
            sat_mul(input),
            self.fc.flops(input.first().copied().unwrap_or(0)),
        ])
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward(&xs.mean(3)?.mean(2)?)
    }
}

/// The stem, the BasicBlocks of every stage and the head.
pub fn build(cfg: &ResnetConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    let blocks: [usize; 4] = match cfg.depth {
        18 => [2, 2, 2, 2],
        34 => [3, 4, 6, 3],
        other => {
            return Err(ModelError::config(
                "depth",
                format!("must be 18 or 34, got {other}"),
            ));
        }
    };
    let mut layers: Vec<Box<dyn Layer>> =
        vec![Box::new(Stem::new(pb, "layers.0", cfg.in_channels, 64)?)];
    let mut c_in = 64;
    for (stage, &count) in blocks.iter().enumerate() {
        let c_out = 64 << stage;
        for b in 0..count {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let name = format!("layers.{}", layers.len());
            layers.push(Box::new(BasicBlock::new(pb, &name, c_in, c_out, stride)?));
            c_in = c_out;
        }
    }
    let name = format!("layers.{}", layers.len());
    layers.push(Box::new(Head::new(pb, &name, c_in, cfg.n_classes)?));
    Ok(layers)
}
