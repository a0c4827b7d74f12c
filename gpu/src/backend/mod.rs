//! The [`Backend`] trait: the tensor operations the zoo's layers need for inference and for
//! training steps, over flat row-major `f32` buffers, implemented once for the CPU
//! ([`cpu::CpuBackend`], always built) and once for CUDA (`cuda::CudaBackend`: cuBLAS + NVRTC
//! kernels, behind the `cuda` feature).
//!
//! Every operation is enqueued on a per-tenant [`Backend::Stream`]: the CUDA backend returns
//! before the work is done (completion is observed with [`Backend::download`] /
//! [`Backend::poll`]), the CPU backend does the work at once. Operations trust their sizes: the
//! checked entry point is [`Exec`](crate::program::Exec), which validates every buffer length
//! before it calls here, so that no input can make a kernel read or write out of bounds (on a
//! GPU that would poison the context of every tenant, not only the guilty one).
//!
//! ```
//! use cumulus_gpu::backend::{Backend, GemmSpec, cpu::CpuBackend};
//! use cumulus_gpu::Priority;
//!
//! let cpu = CpuBackend::new();
//! let s = cpu.new_stream(Priority::Normal)?;
//! // [2, 3] x [3, 1]
//! let a = cpu.upload(&s, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let b = cpu.upload(&s, &[1.0, 0.0, -1.0])?;
//! let mut c = cpu.alloc(&s, 2)?;
//! cpu.gemm(&s, &GemmSpec::new(2, 1, 3), &a, &b, &mut c)?;
//! let out = cpu.finish(cpu.download(&s, &[&c])?)?;
//! assert_eq!(out[0], vec![-2.0, -2.0]);
//! # Ok::<(), cumulus_gpu::GpuError>(())
//! ```

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use cumulus_models::Loss;

use crate::config::Priority;
use crate::error::Result;

/// Which implementation runs the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Cuda,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Element-wise nonlinearity; the discriminants are the codes the CUDA kernels switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Act {
    Identity = 0,
    Relu = 1,
    Tanh = 2,
    /// The exact (erf) GELU.
    Gelu = 3,
    Sigmoid = 4,
}

impl From<cumulus_models::blocks::Activation> for Act {
    fn from(a: cumulus_models::blocks::Activation) -> Self {
        use cumulus_models::blocks::Activation as A;
        match a {
            A::Relu => Self::Relu,
            A::Tanh => Self::Tanh,
            A::Gelu => Self::Gelu,
            A::Sigmoid => Self::Sigmoid,
        }
    }
}

/// `C = alpha * op(A) op(B) + beta * C`, row-major and contiguous, repeated `batch` times with
/// element strides between the matrices of a batch (a stride of 0 reuses one matrix, e.g. a
/// convolution's weights for every image).
///
/// `A` is `[m, k]` (`[k, m]` when `trans_a`), `B` is `[k, n]` (`[n, k]` when `trans_b`), `C` is
/// `[m, n]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl GemmSpec {
    /// One plain product `C[m, n] = A[m, k] B[k, n]`.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        }
    }

    /// `x W^T` for a PyTorch-layout weight `W[n, k]`: the linear layer's product.
    pub fn linear(rows: usize, out: usize, inp: usize) -> Self {
        Self {
            trans_b: true,
            ..Self::new(rows, out, inp)
        }
    }

    /// Elements each operand must hold (the last matrix of the batch included).
    pub fn extents(&self) -> (usize, usize, usize) {
        let last = self.batch.saturating_sub(1);
        (
            last * self.stride_a + self.m * self.k,
            last * self.stride_b + self.k * self.n,
            last * self.stride_c + self.m * self.n,
        )
    }
}

/// Geometry of a square-kernel 2-D convolution over NCHW images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub pad: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// The geometry for an input `[n, c, h, w]`, or `None` when the kernel does not fit.
    pub fn new(input: [usize; 4], k: usize, pad: usize, stride: usize) -> Option<Self> {
        let [n, c, h, w] = input;
        let out = |s: usize| (s + 2 * pad).checked_sub(k).map(|d| d / stride.max(1) + 1);
        Some(Self {
            n,
            c,
            h,
            w,
            k,
            pad,
            stride: stride.max(1),
            oh: out(h)?,
            ow: out(w)?,
        })
    }

    /// Rows of one image's column matrix: `c * k * k`.
    pub fn col_rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Columns of one image's column matrix: `oh * ow`.
    pub fn col_cols(&self) -> usize {
        self.oh * self.ow
    }
}

/// The tables of a matrix-factorization layer.
#[derive(Debug)]
pub struct MfTables<'a, T> {
    pub user_factors: &'a T,
    pub item_factors: &'a T,
    pub user_bias: &'a T,
    pub item_bias: &'a T,
    pub global_bias: &'a T,
}

/// The parameters of an eval-mode batch norm (running statistics).
#[derive(Debug)]
pub struct BnParams<'a, T> {
    pub mean: &'a T,
    pub var: &'a T,
    pub weight: &'a T,
    pub bias: &'a T,
    pub eps: f32,
}

/// A device that runs the operations. Buffers hold `f32`; ids travel as `f32` (exact below
/// 2^24, which the programs check). One backend is shared by the executor's threads: the
/// device thread (loads) and one launcher thread per tenant, which owns that tenant's stream.
pub trait Backend: Send + Sync + 'static {
    /// A device buffer of `f32`.
    type Buf: Send + Sync;
    /// One tenant's execution context (a CUDA stream and its cuBLAS handle).
    type Stream: Send;
    /// Downloads on their way back to the host.
    type Pending: Send;

    fn kind(&self) -> BackendKind;
    /// Human-readable device description for logs and stats.
    fn device_name(&self) -> String;
    /// `(free, total)` device memory in bytes.
    fn memory_info(&self) -> Result<(u64, u64)>;

    /// Makes the device current on the calling thread (each launcher thread calls it first:
    /// cuBLAS works on the calling thread's current context). A no-op on the CPU.
    fn bind_thread(&self) -> Result<()> {
        Ok(())
    }
    fn new_stream(&self, priority: Priority) -> Result<Self::Stream>;
    /// A buffer of `len` elements with unspecified contents (zeros on the CPU): every
    /// operation overwrites its outputs completely.
    fn alloc(&self, s: &Self::Stream, len: usize) -> Result<Self::Buf>;
    fn upload(&self, s: &Self::Stream, data: &[f32]) -> Result<Self::Buf>;
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// `dst[..src.len()] = src`.
    fn copy(&self, s: &Self::Stream, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// Starts copying `bufs` to the host after everything enqueued on `s` so far.
    fn download(&self, s: &Self::Stream, bufs: &[&Self::Buf]) -> Result<Self::Pending>;
    /// Whether a download has completed (never blocks).
    fn poll(&self, p: &Self::Pending) -> Result<bool>;
    /// The downloaded values (waits if [`Backend::poll`] has not said done yet).
    fn finish(&self, p: Self::Pending) -> Result<Vec<Vec<f32>>>;
    /// Waits until all work enqueued on `s` is done.
    fn synchronize(&self, s: &Self::Stream) -> Result<()>;

    fn gemm(
        &self,
        s: &Self::Stream,
        g: &GemmSpec,
        a: &Self::Buf,
        b: &Self::Buf,
        c: &mut Self::Buf,
    ) -> Result<()>;
    /// `x[o, d, i] = act(x[o, d, i] + bias[d])` for `x` of `[outer, dim, inner]`; no bias adds 0.
    fn bias_act(
        &self,
        s: &Self::Stream,
        x: &mut Self::Buf,
        bias: Option<&Self::Buf>,
        dims: [usize; 3],
        act: Act,
    ) -> Result<()>;
    /// `x = act(x + y)`, element-wise over `n` elements.
    fn add_act(
        &self,
        s: &Self::Stream,
        x: &mut Self::Buf,
        y: &Self::Buf,
        n: usize,
        act: Act,
    ) -> Result<()>;
    /// Softmax over each row of `[rows, cols]`, in place (max-subtracted).
    fn softmax_rows(
        &self,
        s: &Self::Stream,
        x: &mut Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    /// Layer norm over each row of `[rows, cols]` (biased variance), `y = norm(x) * w + b`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        s: &Self::Stream,
        x: &Self::Buf,
        y: &mut Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()>;
    /// Eval-mode batch norm of `[n, c, hw]` in place, then `act`.
    fn batch_norm(
        &self,
        s: &Self::Stream,
        x: &mut Self::Buf,
        p: &BnParams<'_, Self::Buf>,
        dims: [usize; 3],
        act: Act,
    ) -> Result<()>;
    /// Unfolds `[n, c, h, w]` into `[n, c*k*k, oh*ow]` (zero padding).
    fn im2col(
        &self,
        s: &Self::Stream,
        x: &Self::Buf,
        cols: &mut Self::Buf,
        g: &ConvGeom,
    ) -> Result<()>;
    /// 2x2 max pooling with stride 2 of `[nc, h, w]` (odd trailing rows/columns dropped).
    fn max_pool2x2(
        &self,
        s: &Self::Stream,
        x: &Self::Buf,
        y: &mut Self::Buf,
        dims: [usize; 3],
    ) -> Result<()>;
    /// `y[o, i] = scale * sum_d x[o, d, i]` for `x` of `[outer, dim, inner]`.
    fn reduce_axis(
        &self,
        s: &Self::Stream,
        x: &Self::Buf,
        y: &mut Self::Buf,
        dims: [usize; 3],
        scale: f32,
    ) -> Result<()>;
    /// `y[t, :] = table[ids[t], :] + pos[t % seq, :]` for `tokens` ids and rows of width `d`.
    #[allow(clippy::too_many_arguments)]
    fn embedding(
        &self,
        s: &Self::Stream,
        ids: &Self::Buf,
        table: &Self::Buf,
        pos: &Self::Buf,
        y: &mut Self::Buf,
        tokens: usize,
        seq: usize,
        d: usize,
    ) -> Result<()>;
    /// `y[b, o] = sum_p value[b, p] * w[index[b, p], o] + bias[o]` over `(index, value)` pairs
    /// `[batch, k, 2]`.
    #[allow(clippy::too_many_arguments)]
    fn sparse_linear(
        &self,
        s: &Self::Stream,
        pairs: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        y: &mut Self::Buf,
        batch: usize,
        k: usize,
        n_out: usize,
    ) -> Result<()>;
    /// `y[b] = <p[u], q[i]> + bu[u] + bi[i] + g` for `(user, item)` ids `[batch, 2]`.
    fn matrix_factorization(
        &self,
        s: &Self::Stream,
        ids: &Self::Buf,
        t: &MfTables<'_, Self::Buf>,
        y: &mut Self::Buf,
        batch: usize,
        factors: usize,
    ) -> Result<()>;
    /// `y[a, c, b, d] = x[a, b, c, d]` (splitting and merging attention heads).
    fn transpose_0213(
        &self,
        s: &Self::Stream,
        x: &Self::Buf,
        y: &mut Self::Buf,
        dims: [usize; 4],
    ) -> Result<()>;
    /// `g *= act'(z)` element-wise over `n` elements (`z` the pre-activation).
    fn act_backward(
        &self,
        s: &Self::Stream,
        z: &Self::Buf,
        g: &mut Self::Buf,
        n: usize,
        act: Act,
    ) -> Result<()>;
    /// Per-row loss of `out` (`[rows, cols]`) against `targets` (`[rows]`) into `row_loss`, and
    /// the gradient of the batch-mean loss with respect to `out` into `grad`.
    #[allow(clippy::too_many_arguments)]
    fn loss_grad(
        &self,
        s: &Self::Stream,
        loss: Loss,
        out: &Self::Buf,
        targets: &Self::Buf,
        grad: &mut Self::Buf,
        row_loss: &mut Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()>;
}
