//! [`CpuBackend`]: the operations in plain Rust over `Vec<f32>`, with candle's CPU matrix product
//! (the `gemm` crate, multi-threaded and vectorized) for [`Backend::gemm`]. Work runs at once on
//! the calling thread, so a download is complete as soon as it is asked for.
//!
//! It computes in the same order as the zoo's candle layers (subtract the mean, divide by the
//! square root, then scale and shift), so its results match `Model::forward_range` to rounding.

use candle_core::{Device, Tensor};
use cumulus_models::Loss;

use super::{Act, Backend, BackendKind, BnParams, ConvGeom, GemmSpec, MfTables};
use crate::config::Priority;
use crate::error::{GpuError, Result};

/// The CPU backend (stateless).
#[derive(Debug, Default, Clone)]
pub struct CpuBackend;

/// A CPU "stream": work runs synchronously, so there is nothing to hold.
#[derive(Debug)]
pub struct CpuStream;

impl CpuBackend {
    pub fn new() -> Self {
        Self
    }
}

fn candle(e: candle_core::Error) -> GpuError {
    GpuError::Device(format!("cpu matmul: {e}"))
}

/// A `[rows, cols]` candle view of `data` (transposed when `trans`, i.e. stored `[cols, rows]`).
fn matrix(data: &[f32], rows: usize, cols: usize, trans: bool) -> Result<Tensor> {
    if trans {
        Tensor::from_slice(data, (cols, rows), &Device::Cpu)
            .and_then(|t| t.t())
            .map_err(candle)
    } else {
        Tensor::from_slice(data, (rows, cols), &Device::Cpu).map_err(candle)
    }
}

/// The activation of one value, in candle's formulas.
pub(crate) fn act_f32(act: Act, x: f32) -> f32 {
    match act {
        Act::Identity => x,
        Act::Relu => x.max(0.0),
        Act::Tanh => x.tanh(),
        Act::Gelu => (libm::erff(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x,
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// The derivative of the activation at pre-activation `z`.
pub(crate) fn act_grad_f32(act: Act, z: f32) -> f32 {
    match act {
        Act::Identity => 1.0,
        Act::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Act::Tanh => {
            let t = z.tanh();
            1.0 - t * t
        }
        Act::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erff(z * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * z * z).exp() * 0.398_942_3; // 1/sqrt(2 pi)
            cdf + z * pdf
        }
        Act::Sigmoid => {
            let s = 1.0 / (1.0 + (-z).exp());
            s * (1.0 - s)
        }
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Stream = CpuStream;
    type Pending = Vec<Vec<f32>>;

    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device_name(&self) -> String {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!("CPU ({threads} threads)")
    }

    fn memory_info(&self) -> Result<(u64, u64)> {
        // Host memory is guarded by the configured device limit alone.
        Ok((u64::MAX, u64::MAX))
    }

    fn new_stream(&self, _priority: Priority) -> Result<CpuStream> {
        Ok(CpuStream)
    }

    fn alloc(&self, _s: &CpuStream, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, _s: &CpuStream, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn copy(&self, _s: &CpuStream, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn download(&self, _s: &CpuStream, bufs: &[&Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        Ok(bufs.iter().map(|b| b.to_vec()).collect())
    }

    fn poll(&self, _p: &Vec<Vec<f32>>) -> Result<bool> {
        Ok(true)
    }

    fn finish(&self, p: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        Ok(p)
    }

    fn synchronize(&self, _s: &CpuStream) -> Result<()> {
        Ok(())
    }

    fn gemm(
        &self,
        _s: &CpuStream,
        g: &GemmSpec,
        a: &Vec<f32>,
        b: &Vec<f32>,
        c: &mut Vec<f32>,
    ) -> Result<()> {
        let (mk, kn, mn) = (g.m * g.k, g.k * g.n, g.m * g.n);
        // A matrix shared by the whole batch (a convolution's weights) is wrapped once.
        let shared_a = if g.stride_a == 0 {
            Some(matrix(&a[..mk], g.m, g.k, g.trans_a)?)
        } else {
            None
        };
        for i in 0..g.batch {
            let a_t = match &shared_a {
                Some(t) => t.clone(),
                None => {
                    let off = i * g.stride_a;
                    matrix(&a[off..off + mk], g.m, g.k, g.trans_a)?
                }
            };
            let off = i * g.stride_b;
            let b_t = matrix(&b[off..off + kn], g.k, g.n, g.trans_b)?;
            let prod = a_t
                .matmul(&b_t)
                .and_then(|p| p.flatten_all())
                .and_then(|p| p.to_vec1::<f32>())
                .map_err(candle)?;
            let out = &mut c[i * g.stride_c..i * g.stride_c + mn];
            if g.beta == 0.0 {
                for (o, p) in out.iter_mut().zip(&prod) {
                    *o = g.alpha * p;
                }
            } else {
                for (o, p) in out.iter_mut().zip(&prod) {
                    *o = g.alpha * p + g.beta * *o;
                }
            }
        }
        Ok(())
    }

    fn bias_act(
        &self,
        _s: &CpuStream,
        x: &mut Vec<f32>,
        bias: Option<&Vec<f32>>,
        [outer, dim, inner]: [usize; 3],
        act: Act,
    ) -> Result<()> {
        let x = &mut x[..outer * dim * inner];
        match bias {
            Some(bias) => {
                for (row, chunk) in x.chunks_exact_mut(inner.max(1)).enumerate() {
                    let b = bias[row % dim];
                    for v in chunk {
                        *v = act_f32(act, *v + b);
                    }
                }
            }
            None => {
                for v in x {
                    *v = act_f32(act, *v);
                }
            }
        }
        Ok(())
    }

    fn add_act(
        &self,
        _s: &CpuStream,
        x: &mut Vec<f32>,
        y: &Vec<f32>,
        n: usize,
        act: Act,
    ) -> Result<()> {
        for (a, b) in x[..n].iter_mut().zip(&y[..n]) {
            *a = act_f32(act, *a + b);
        }
        Ok(())
    }

    fn softmax_rows(
        &self,
        _s: &CpuStream,
        x: &mut Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        for row in x[..rows * cols].chunks_exact_mut(cols.max(1)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
        Ok(())
    }

    fn layer_norm(
        &self,
        _s: &CpuStream,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        let cols_f = cols as f32;
        for (xr, yr) in x[..rows * cols]
            .chunks_exact(cols.max(1))
            .zip(y.chunks_exact_mut(cols.max(1)))
        {
            let mean = xr.iter().sum::<f32>() / cols_f;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols_f;
            let denom = (var + eps).sqrt();
            for (j, (o, v)) in yr.iter_mut().zip(xr).enumerate() {
                *o = (v - mean) / denom * weight[j] + bias[j];
            }
        }
        Ok(())
    }

    fn batch_norm(
        &self,
        _s: &CpuStream,
        x: &mut Vec<f32>,
        p: &BnParams<'_, Vec<f32>>,
        [n, c, hw]: [usize; 3],
        act: Act,
    ) -> Result<()> {
        for (row, chunk) in x[..n * c * hw].chunks_exact_mut(hw.max(1)).enumerate() {
            let ch = row % c;
            let denom = (p.var[ch] + p.eps).sqrt();
            let (mean, w, b) = (p.mean[ch], p.weight[ch], p.bias[ch]);
            for v in chunk {
                *v = act_f32(act, (*v - mean) / denom * w + b);
            }
        }
        Ok(())
    }

    fn im2col(
        &self,
        _s: &CpuStream,
        x: &Vec<f32>,
        cols: &mut Vec<f32>,
        g: &ConvGeom,
    ) -> Result<()> {
        let (rows, ncols) = (g.col_rows(), g.col_cols());
        for img in 0..g.n {
            let src = &x[img * g.c * g.h * g.w..(img + 1) * g.c * g.h * g.w];
            let dst = &mut cols[img * rows * ncols..(img + 1) * rows * ncols];
            for ch in 0..g.c {
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let r = (ch * g.k + ky) * g.k + kx;
                        let out = &mut dst[r * ncols..(r + 1) * ncols];
                        for oy in 0..g.oh {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            for ox in 0..g.ow {
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                out[oy * g.ow + ox] = if iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < g.h
                                    && (ix as usize) < g.w
                                {
                                    src[(ch * g.h + iy as usize) * g.w + ix as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn max_pool2x2(
        &self,
        _s: &CpuStream,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        [nc, h, w]: [usize; 3],
    ) -> Result<()> {
        let (oh, ow) = (h / 2, w / 2);
        for p in 0..nc {
            let src = &x[p * h * w..(p + 1) * h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = |dy: usize, dx: usize| src[(2 * oy + dy) * w + 2 * ox + dx];
                    y[(p * oh + oy) * ow + ox] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                }
            }
        }
        Ok(())
    }

    fn reduce_axis(
        &self,
        _s: &CpuStream,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        [outer, dim, inner]: [usize; 3],
        scale: f32,
    ) -> Result<()> {
        for o in 0..outer {
            for i in 0..inner {
                let mut sum = 0.0f32;
                for d in 0..dim {
                    sum += x[(o * dim + d) * inner + i];
                }
                y[o * inner + i] = sum * scale;
            }
        }
        Ok(())
    }

    fn embedding(
        &self,
        _s: &CpuStream,
        ids: &Vec<f32>,
        table: &Vec<f32>,
        pos: &Vec<f32>,
        y: &mut Vec<f32>,
        tokens: usize,
        seq: usize,
        d: usize,
    ) -> Result<()> {
        for t in 0..tokens {
            let row = ids[t] as usize;
            let p = t % seq;
            for j in 0..d {
                y[t * d + j] = table[row * d + j] + pos[p * d + j];
            }
        }
        Ok(())
    }

    fn sparse_linear(
        &self,
        _s: &CpuStream,
        pairs: &Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        y: &mut Vec<f32>,
        batch: usize,
        k: usize,
        n_out: usize,
    ) -> Result<()> {
        for b in 0..batch {
            for o in 0..n_out {
                let mut sum = 0.0f32;
                for p in 0..k {
                    let at = (b * k + p) * 2;
                    let row = pairs[at] as usize;
                    sum += weight[row * n_out + o] * pairs[at + 1];
                }
                y[b * n_out + o] = sum + bias[o];
            }
        }
        Ok(())
    }

    fn matrix_factorization(
        &self,
        _s: &CpuStream,
        ids: &Vec<f32>,
        t: &MfTables<'_, Vec<f32>>,
        y: &mut Vec<f32>,
        batch: usize,
        factors: usize,
    ) -> Result<()> {
        for b in 0..batch {
            let (u, i) = (ids[2 * b] as usize, ids[2 * b + 1] as usize);
            let p = &t.user_factors[u * factors..(u + 1) * factors];
            let q = &t.item_factors[i * factors..(i + 1) * factors];
            let dot: f32 = p.iter().zip(q).map(|(a, b)| a * b).sum();
            y[b] = ((dot + t.user_bias[u]) + t.item_bias[i]) + t.global_bias[0];
        }
        Ok(())
    }

    fn transpose_0213(
        &self,
        _s: &CpuStream,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        [a, b, c, d]: [usize; 4],
    ) -> Result<()> {
        for ia in 0..a {
            for ib in 0..b {
                for ic in 0..c {
                    let src = ((ia * b + ib) * c + ic) * d;
                    let dst = ((ia * c + ic) * b + ib) * d;
                    y[dst..dst + d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
        Ok(())
    }

    fn act_backward(
        &self,
        _s: &CpuStream,
        z: &Vec<f32>,
        g: &mut Vec<f32>,
        n: usize,
        act: Act,
    ) -> Result<()> {
        for (gv, zv) in g[..n].iter_mut().zip(&z[..n]) {
            *gv *= act_grad_f32(act, *zv);
        }
        Ok(())
    }

    fn loss_grad(
        &self,
        _s: &CpuStream,
        loss: Loss,
        out: &Vec<f32>,
        targets: &Vec<f32>,
        grad: &mut Vec<f32>,
        row_loss: &mut Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let inv = 1.0 / rows as f32;
        for r in 0..rows {
            let x = &out[r * cols..(r + 1) * cols];
            let g = &mut grad[r * cols..(r + 1) * cols];
            let y = targets[r];
            match loss {
                Loss::CrossEntropy => {
                    let label = y as usize;
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
                    let lse = sum.ln();
                    row_loss[r] = -((x[label] - max) - lse);
                    for (j, (gv, v)) in g.iter_mut().zip(x).enumerate() {
                        let p = (v - max).exp() / sum;
                        *gv = (p - if j == label { 1.0 } else { 0.0 }) * inv;
                    }
                }
                Loss::Mse => {
                    let d = x[0] - y;
                    row_loss[r] = d * d;
                    g[0] = 2.0 * d * inv;
                }
                Loss::BinaryLogistic => {
                    let v = x[0];
                    row_loss[r] = v.max(0.0) - v * y + (1.0 + (-v.abs()).exp()).ln();
                    g[0] = (1.0 / (1.0 + (-v).exp()) - y) * inv;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_gemm_operands_follow_the_row_major_contract() {
        let cpu = CpuBackend::new();
        let s = CpuStream;
        // A^T stored [k=2, m=3], B^T stored [n=2, k=2].
        let a = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = vec![1.0, 0.0, 0.0, 1.0];
        let mut c = vec![0.0; 6];
        let g = GemmSpec {
            trans_a: true,
            trans_b: true,
            ..GemmSpec::new(3, 2, 2)
        };
        cpu.gemm(&s, &g, &a, &b, &mut c).expect("gemm");
        // A = [[1,4],[2,5],[3,6]], B = I.
        assert_eq!(c, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn activation_gradients_match_finite_differences() {
        for act in [Act::Relu, Act::Tanh, Act::Gelu, Act::Sigmoid] {
            for z in [-1.7f32, -0.3, 0.4, 2.1] {
                let h = 1e-3;
                let fd = (act_f32(act, z + h) - act_f32(act, z - h)) / (2.0 * h);
                let an = act_grad_f32(act, z);
                assert!((fd - an).abs() < 1e-3, "{act:?} at {z}: {fd} vs {an}");
            }
        }
    }
}
