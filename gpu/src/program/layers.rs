//! One [`LayerOp`] per zoo layer kind: its hyper-parameters, its output shape, and its forward
//! pass written as [`Exec`] operations, reading its weights (in the zoo's parameter order) from
//! a slice of device buffers.

use crate::backend::{Act, Backend, BnParams, ConvGeom, GemmSpec, MfTables};
use crate::error::{GpuError, Result};
use crate::program::exec::{DevTensor, Exec, Tracked, prod};

/// Layer norm and batch norm epsilon of the zoo (PyTorch's default).
pub const NORM_EPS: f32 = 1e-5;

/// A square-kernel convolution without bias (the bias, where there is one, is its own param).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub pad: usize,
    pub stride: usize,
}

/// What one layer computes. The weights a variant reads are listed in its doc, in the order of
/// the layer's parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerOp {
    /// `act(x W^T + b)` (`weight`, `bias`); `flatten` takes any `[batch, ...]` input
    /// (`flatten_linear`); `dropout` only matters for training.
    Dense {
        fan_in: usize,
        fan_out: usize,
        act: Act,
        flatten: bool,
        dropout: f32,
    },
    /// Weighted sum of gathered rows plus bias (`weight [n_features, n_out]`, `bias`).
    SparseLinear { n_features: usize, n_out: usize },
    /// 5x5 convolution with bias, ReLU, 2x2 max-pool (`weight`, `bias`).
    ConvPool { conv: Conv },
    /// Convolution, eval-mode batch norm, ReLU (`conv.weight`, `bn.{weight, bias,
    /// running_mean, running_var}`).
    ConvBnRelu { conv: Conv },
    /// ResNet BasicBlock (`conv1.weight`, `bn1.*`, `conv2.weight`, `bn2.*`, then
    /// `shortcut.conv.weight`, `shortcut.bn.*` when there is a shortcut).
    BasicBlock {
        conv1: Conv,
        conv2: Conv,
        shortcut: Option<Conv>,
    },
    /// Global average pool and Linear (`fc.weight`, `fc.bias`).
    AvgPoolLinear { channels: usize, n_out: usize },
    /// Token plus learned position embeddings (`tok_emb.weight`, `pos_emb.weight`).
    Embedding {
        vocab: usize,
        max_seq: usize,
        d: usize,
    },
    /// Pre-norm encoder block (`ln1.*`, `attn.{q,k,v,o}.*`, `ln2.*`, `mlp.fc1.*`, `mlp.fc2.*`).
    TransformerBlock {
        d: usize,
        n_heads: usize,
        d_ff: usize,
    },
    /// Layer norm, mean over the sequence, Linear (`ln.*`, `fc.*`).
    PoolClassifier { d: usize, n_out: usize },
    /// Biased matrix factorization (`user_factors`, `item_factors`, `user_bias`, `item_bias`,
    /// `global_bias`).
    MatrixFactorization {
        n_users: usize,
        n_items: usize,
        factors: usize,
    },
}

fn expect_rank(layer: &str, input: &[usize], rank: usize, what: &str) -> Result<()> {
    if input.len() != rank {
        return Err(GpuError::bad_input(
            layer,
            format!("expected {what} (rank {rank}), got shape {input:?}"),
        ));
    }
    Ok(())
}

fn expect_dim(layer: &str, input: &[usize], dim: usize, want: usize, what: &str) -> Result<()> {
    if input.get(dim) != Some(&want) {
        return Err(GpuError::bad_input(
            layer,
            format!("expected {what} = {want} in dimension {dim}, got shape {input:?}"),
        ));
    }
    Ok(())
}

fn geom(layer: &str, input: &[usize], conv: &Conv) -> Result<ConvGeom> {
    expect_rank(layer, input, 4, "[batch, channels, height, width]")?;
    expect_dim(layer, input, 1, conv.c_in, "channels")?;
    ConvGeom::new(
        [input[0], input[1], input[2], input[3]],
        conv.k,
        conv.pad,
        conv.stride,
    )
    .filter(|g| g.oh > 0 && g.ow > 0)
    .ok_or_else(|| {
        GpuError::bad_input(
            layer,
            format!(
                "image {}x{} too small for a {}x{} convolution",
                input[2], input[3], conv.k, conv.k
            ),
        )
    })
}

impl LayerOp {
    /// Output shape for `input` (batch included); the error names what does not fit.
    pub fn output_shape(&self, layer: &str, input: &[usize]) -> Result<Vec<usize>> {
        match *self {
            Self::Dense {
                fan_in,
                fan_out,
                flatten,
                ..
            } => {
                if flatten {
                    let features: usize = prod(input.get(1..).unwrap_or(&[]))?;
                    if input.len() < 2 || features != fan_in {
                        return Err(GpuError::bad_input(
                            layer,
                            format!(
                                "expected [batch, ...] with {fan_in} features per example, got {input:?}"
                            ),
                        ));
                    }
                } else {
                    expect_rank(layer, input, 2, "[batch, features]")?;
                    expect_dim(layer, input, 1, fan_in, "features")?;
                }
                Ok(vec![input[0], fan_out])
            }
            Self::SparseLinear { n_out, .. } => {
                expect_rank(layer, input, 3, "[batch, pairs, 2] (index, value) pairs")?;
                expect_dim(layer, input, 2, 2, "(index, value) pair size")?;
                Ok(vec![input[0], n_out])
            }
            Self::ConvPool { conv } => {
                let g = geom(layer, input, &conv)?;
                if g.oh < 2 || g.ow < 2 {
                    return Err(GpuError::bad_input(
                        layer,
                        format!(
                            "image {}x{} too small for a 5x5 convolution and 2x2 pooling",
                            input[2], input[3]
                        ),
                    ));
                }
                Ok(vec![g.n, conv.c_out, g.oh / 2, g.ow / 2])
            }
            Self::ConvBnRelu { conv } => {
                let g = geom(layer, input, &conv)?;
                Ok(vec![g.n, conv.c_out, g.oh, g.ow])
            }
            Self::BasicBlock { conv1, .. } => {
                let g = geom(layer, input, &conv1)?;
                Ok(vec![g.n, conv1.c_out, g.oh, g.ow])
            }
            Self::AvgPoolLinear { channels, n_out } => {
                expect_rank(layer, input, 4, "[batch, channels, height, width]")?;
                expect_dim(layer, input, 1, channels, "channels")?;
                if input[2] == 0 || input[3] == 0 {
                    return Err(GpuError::bad_input(
                        layer,
                        format!("empty feature map {input:?}"),
                    ));
                }
                Ok(vec![input[0], n_out])
            }
            Self::Embedding { max_seq, d, .. } => {
                expect_rank(layer, input, 2, "[batch, seq] token ids")?;
                if input[1] == 0 || input[1] > max_seq {
                    return Err(GpuError::bad_input(
                        layer,
                        format!("sequence length {} not in 1..={max_seq}", input[1]),
                    ));
                }
                Ok(vec![input[0], input[1], d])
            }
            Self::TransformerBlock { d, .. } => {
                expect_rank(layer, input, 3, "[batch, seq, d_model]")?;
                expect_dim(layer, input, 2, d, "d_model")?;
                if input[1] == 0 {
                    return Err(GpuError::bad_input(layer, "empty sequence"));
                }
                Ok(input.to_vec())
            }
            Self::PoolClassifier { d, n_out } => {
                expect_rank(layer, input, 3, "[batch, seq, d_model]")?;
                expect_dim(layer, input, 2, d, "d_model")?;
                if input[1] == 0 {
                    return Err(GpuError::bad_input(layer, "empty sequence"));
                }
                Ok(vec![input[0], n_out])
            }
            Self::MatrixFactorization { .. } => {
                expect_rank(layer, input, 2, "[batch, 2] (user, item) ids")?;
                expect_dim(layer, input, 1, 2, "ids per example")?;
                Ok(vec![input[0]])
            }
        }
    }

    /// Estimated floating-point operations of one forward pass from `input` to `output` (a
    /// multiply-add counts 2): the scheduler's cost of a work item.
    pub fn flops(&self, input: &[usize], output: &[usize]) -> u64 {
        let n = |s: &[usize]| s.iter().product::<usize>() as u64;
        let conv = |c: &Conv, inp: &[usize]| -> u64 {
            geom("", inp, c).map_or(0, |g| {
                2 * (g.n * c.c_out * g.oh * g.ow * c.c_in * c.k * c.k) as u64
            })
        };
        match self {
            Self::Dense {
                fan_in, fan_out, ..
            } => 2 * input[0] as u64 * (*fan_in * *fan_out) as u64,
            // Two FLOPs per (pair, output): n(input) counts each pair twice.
            Self::SparseLinear { n_out, .. } => n(input) * *n_out as u64,
            Self::ConvPool { conv: c } => conv(c, input) + 5 * n(output),
            Self::ConvBnRelu { conv: c } => conv(c, input) + 5 * n(output),
            Self::BasicBlock {
                conv1,
                conv2,
                shortcut,
            } => {
                conv(conv1, input)
                    + conv(conv2, output)
                    + shortcut.as_ref().map_or(0, |s| conv(s, input))
                    + 12 * n(output)
            }
            Self::AvgPoolLinear { channels, n_out } => {
                n(input) + 2 * input[0] as u64 * (*channels * *n_out) as u64
            }
            Self::Embedding { .. } => n(output),
            Self::TransformerBlock { d, d_ff, .. } => {
                let (b, s) = (input[0] as u64, input[1] as u64);
                let (d, f) = (*d as u64, *d_ff as u64);
                8 * b * s * d * d + 4 * b * s * s * d + 4 * b * s * d * f + 20 * b * s * d
            }
            Self::PoolClassifier { d, n_out } => {
                10 * n(input) + 2 * input[0] as u64 * (*d * *n_out) as u64
            }
            Self::MatrixFactorization { factors, .. } => {
                input[0] as u64 * (2 * *factors as u64 + 3)
            }
        }
    }

    /// The forward pass of `x` (whose shape [`LayerOp::output_shape`] accepted) with the layer's
    /// weights `w`.
    pub fn forward<B: Backend>(
        &self,
        ex: &Exec<'_, B>,
        w: &[&B::Buf],
        x: DevTensor<B>,
        out_shape: Vec<usize>,
    ) -> Result<DevTensor<B>> {
        let need = |n: usize| {
            if w.len() < n {
                Err(GpuError::Device(format!(
                    "internal: layer has {} weights, {n} needed",
                    w.len()
                )))
            } else {
                Ok(())
            }
        };
        let buf = match *self {
            Self::Dense {
                fan_in,
                fan_out,
                act,
                ..
            } => {
                need(2)?;
                linear(ex, &x.buf, x.shape[0], w[0], w[1], fan_in, fan_out, act)?
            }
            Self::SparseLinear { n_out, .. } => {
                need(2)?;
                let (batch, k) = (x.shape[0], x.shape[1]);
                let mut y = ex.alloc(prod(&[batch, n_out])?)?;
                ex.sparse_linear(&x.buf, w[0], w[1], &mut y, batch, k, n_out)?;
                y
            }
            Self::ConvPool { conv } => {
                need(2)?;
                let (mut y, g) = convolve(ex, &x, w[0], &conv)?;
                ex.bias_act(
                    &mut y,
                    Some(w[1]),
                    [g.n, conv.c_out, g.oh * g.ow],
                    Act::Relu,
                )?;
                let mut pooled = ex.alloc(prod(&out_shape)?)?;
                ex.max_pool2x2(&y, &mut pooled, [g.n * conv.c_out, g.oh, g.ow])?;
                pooled
            }
            Self::ConvBnRelu { conv } => {
                need(5)?;
                conv_bn(ex, &x, w[0], &w[1..5], &conv, Act::Relu)?
            }
            Self::BasicBlock {
                conv1,
                conv2,
                shortcut,
            } => {
                need(if shortcut.is_some() { 15 } else { 10 })?;
                let h = conv_bn(ex, &x, w[0], &w[1..5], &conv1, Act::Relu)?;
                let h = DevTensor {
                    buf: h,
                    shape: out_shape.clone(),
                };
                let mut y = conv_bn(ex, &h, w[5], &w[6..10], &conv2, Act::Identity)?;
                drop(h);
                let n = prod(&out_shape)?;
                match shortcut {
                    Some(sc) => {
                        let s = conv_bn(ex, &x, w[10], &w[11..15], &sc, Act::Identity)?;
                        ex.add_act(&mut y, &s, n, Act::Relu)?;
                    }
                    None => ex.add_act(&mut y, &x.buf, n, Act::Relu)?,
                }
                y
            }
            Self::AvgPoolLinear { channels, n_out } => {
                need(2)?;
                let (n, hw) = (x.shape[0], x.shape[2] * x.shape[3]);
                let mut pooled = ex.alloc(prod(&[n, channels])?)?;
                ex.reduce_axis(&x.buf, &mut pooled, [n * channels, hw, 1], 1.0 / hw as f32)?;
                linear(ex, &pooled, n, w[0], w[1], channels, n_out, Act::Identity)?
            }
            Self::Embedding { d, .. } => {
                need(2)?;
                let (b, s) = (x.shape[0], x.shape[1]);
                let mut y = ex.alloc(prod(&[b, s, d])?)?;
                ex.embedding(&x.buf, w[0], w[1], &mut y, b * s, s, d)?;
                y
            }
            Self::TransformerBlock { d, n_heads, d_ff } => {
                need(16)?;
                transformer_block(ex, x, w, d, n_heads, d_ff)?
            }
            Self::PoolClassifier { d, n_out } => {
                need(4)?;
                let (b, s) = (x.shape[0], x.shape[1]);
                let rows = b * s;
                let mut h = ex.alloc(prod(&[rows, d])?)?;
                ex.layer_norm(&x.buf, &mut h, w[0], w[1], rows, d, NORM_EPS)?;
                let mut pooled = ex.alloc(prod(&[b, d])?)?;
                ex.reduce_axis(&h, &mut pooled, [b, s, d], 1.0 / s as f32)?;
                linear(ex, &pooled, b, w[2], w[3], d, n_out, Act::Identity)?
            }
            Self::MatrixFactorization { factors, .. } => {
                need(5)?;
                let batch = x.shape[0];
                let mut y = ex.alloc(batch)?;
                let t = MfTables {
                    user_factors: w[0],
                    item_factors: w[1],
                    user_bias: w[2],
                    item_bias: w[3],
                    global_bias: w[4],
                };
                ex.matrix_factorization(&x.buf, &t, &mut y, batch, factors)?;
                y
            }
        };
        Ok(DevTensor {
            buf,
            shape: out_shape,
        })
    }
}

/// `act(x W^T + b)` for `rows` rows of `x`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear<B: Backend>(
    ex: &Exec<'_, B>,
    x: &B::Buf,
    rows: usize,
    weight: &B::Buf,
    bias: &B::Buf,
    fan_in: usize,
    fan_out: usize,
    act: Act,
) -> Result<Tracked<B>> {
    let mut y = ex.alloc(prod(&[rows, fan_out])?)?;
    ex.gemm(&GemmSpec::linear(rows, fan_out, fan_in), x, weight, &mut y)?;
    ex.bias_act(&mut y, Some(bias), [rows, fan_out, 1], act)?;
    Ok(y)
}

/// im2col + one batched GEMM with the weights shared by every image: `[n, c_out, oh, ow]`.
fn convolve<B: Backend>(
    ex: &Exec<'_, B>,
    x: &DevTensor<B>,
    weight: &B::Buf,
    conv: &Conv,
) -> Result<(Tracked<B>, ConvGeom)> {
    let g = geom("convolution", &x.shape, conv)?;
    let (rows, cols) = (g.col_rows(), g.col_cols());
    let mut unfolded = ex.alloc(prod(&[g.n, rows, cols])?)?;
    ex.im2col(&x.buf, &mut unfolded, &g)?;
    let mut y = ex.alloc(prod(&[g.n, conv.c_out, cols])?)?;
    let spec = GemmSpec {
        batch: g.n,
        stride_a: 0,
        stride_b: rows * cols,
        stride_c: conv.c_out * cols,
        ..GemmSpec::new(conv.c_out, cols, rows)
    };
    ex.gemm(&spec, weight, &unfolded, &mut y)?;
    Ok((y, g))
}

/// Convolution then eval-mode batch norm (`bn` = weight, bias, running mean, running var).
fn conv_bn<B: Backend>(
    ex: &Exec<'_, B>,
    x: &DevTensor<B>,
    weight: &B::Buf,
    bn: &[&B::Buf],
    conv: &Conv,
    act: Act,
) -> Result<Tracked<B>> {
    let (mut y, g) = convolve(ex, x, weight, conv)?;
    let p = BnParams {
        weight: bn[0],
        bias: bn[1],
        mean: bn[2],
        var: bn[3],
        eps: NORM_EPS,
    };
    ex.batch_norm(&mut y, &p, [g.n, conv.c_out, g.oh * g.ow], act)?;
    Ok(y)
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
fn transformer_block<B: Backend>(
    ex: &Exec<'_, B>,
    mut x: DevTensor<B>,
    w: &[&B::Buf],
    d: usize,
    n_heads: usize,
    d_ff: usize,
) -> Result<Tracked<B>> {
    let (b, s) = (x.shape[0], x.shape[1]);
    let rows = b * s;
    let n = prod(&[rows, d])?;
    let dh = d / n_heads;
    let mut h = ex.alloc(n)?;
    ex.layer_norm(&x.buf, &mut h, w[0], w[1], rows, d, NORM_EPS)?;
    let heads = |t: Tracked<B>| -> Result<Tracked<B>> {
        let mut out = ex.alloc(n)?;
        ex.transpose_0213(&t, &mut out, [b, s, n_heads, dh])?;
        Ok(out)
    };
    let q = heads(linear(ex, &h, rows, w[2], w[3], d, d, Act::Identity)?)?;
    let k = heads(linear(ex, &h, rows, w[4], w[5], d, d, Act::Identity)?)?;
    let v = heads(linear(ex, &h, rows, w[6], w[7], d, d, Act::Identity)?)?;
    drop(h);
    let groups = b * n_heads;
    let mut scores = ex.alloc(prod(&[groups, s, s])?)?;
    let qk = GemmSpec {
        trans_b: true,
        alpha: 1.0 / (dh as f32).sqrt(),
        batch: groups,
        stride_a: s * dh,
        stride_b: s * dh,
        stride_c: s * s,
        ..GemmSpec::new(s, s, dh)
    };
    ex.gemm(&qk, &q, &k, &mut scores)?;
    drop((q, k));
    ex.softmax_rows(&mut scores, groups * s, s)?;
    let mut ctx = ex.alloc(n)?;
    let pv = GemmSpec {
        batch: groups,
        stride_a: s * s,
        stride_b: s * dh,
        stride_c: s * dh,
        ..GemmSpec::new(s, dh, s)
    };
    ex.gemm(&pv, &scores, &v, &mut ctx)?;
    drop((scores, v));
    let mut merged = ex.alloc(n)?;
    ex.transpose_0213(&ctx, &mut merged, [b, n_heads, s, dh])?;
    drop(ctx);
    let attn = linear(ex, &merged, rows, w[8], w[9], d, d, Act::Identity)?;
    drop(merged);
    ex.add_act(&mut x.buf, &attn, n, Act::Identity)?;
    drop(attn);
    let mut h2 = ex.alloc(n)?;
    ex.layer_norm(&x.buf, &mut h2, w[10], w[11], rows, d, NORM_EPS)?;
    let hidden = linear(ex, &h2, rows, w[12], w[13], d, d_ff, Act::Gelu)?;
    drop(h2);
    let mlp = linear(ex, &hidden, rows, w[14], w[15], d_ff, d, Act::Identity)?;
    drop(hidden);
    ex.add_act(&mut x.buf, &mlp, n, Act::Identity)?;
    Ok(x.buf)
}
