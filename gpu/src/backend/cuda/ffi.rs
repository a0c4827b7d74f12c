//! Every `unsafe` call of the crate: probing the CUDA libraries, the context settings, device and
//! pinned allocations, cuBLAS calls and the launch of each kernel of [`crate::kernels::SOURCE`].
//!
//! The workspace denies `unsafe_code`; this module allows it because cudarc's kernel launches,
//! raw allocations and library probes are `unsafe fn`s, and keeping all of them here (with one
//! typed wrapper per kernel, whose argument list is written once against the kernel's C
//! signature) keeps the reasoning in one file. Callers reach these wrappers only through
//! [`Exec`](crate::program::Exec), which has checked every buffer length against the sizes passed.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};

use crate::backend::{ConvGeom, GemmSpec};
use crate::kernels::ROW_THREADS;

/// Which of the CUDA libraries can be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Libraries {
    pub cuda: bool,
    pub nvrtc: bool,
    pub cublas: bool,
}

/// Looks for libcuda, libnvrtc and libcublas without calling into them: cudarc panics on the
/// first call into a library it cannot load, so this must come first.
pub fn libraries() -> Libraries {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate names and closes them; it
    // runs no code of the libraries beyond their initializers.
    unsafe {
        Libraries {
            cuda: cudarc::driver::sys::is_culib_present(),
            nvrtc: cudarc::nvrtc::sys::is_culib_present(),
            cublas: cudarc::cublas::sys::is_culib_present(),
        }
    }
}

/// Whether libnvrtc can be loaded (all the kernel compile check needs).
pub fn nvrtc_present() -> bool {
    // SAFETY: as in `libraries`.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Turns off cudarc's per-buffer event tracking for buffers created from now on.
///
/// The executor orders work itself: activation buffers are used only on the stream of the
/// tenant that allocated them; weights are written once, on the loader stream, which is
/// synchronized before any tenant can read them, and freed only once no work item that reads
/// them is in flight (each item holds a reference until its completion event has fired); pinned
/// download buffers are reused only after their event completed. Without tracking, a launch
/// costs one driver call instead of three per buffer argument.
pub fn disable_event_tracking(ctx: &CudaContext) {
    // SAFETY: called right after the context is created, before any buffer exists, and the
    // invariants above hold for every buffer the executor creates.
    unsafe { ctx.disable_event_tracking() }
}

/// Keeps freed device memory in the stream-ordered pool instead of returning it to the driver
/// at every synchronization (the default threshold of 0 makes each work item map fresh pages).
pub fn keep_pool_memory(ctx: &CudaContext) -> Result<(), DriverError> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    ctx.bind_to_thread()?;
    let mut pool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `pool` receives the device's default pool handle, owned by the driver; the
    // attribute takes a pointer to a u64 that lives for the duration of the call.
    unsafe {
        cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result()?;
        cudarc::driver::sys::cuMemPoolSetAttribute(
            pool,
            cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
    }
}

/// A device buffer of `len` floats with unspecified contents (every operation overwrites its
/// outputs completely, so zero-filling would only cost a launch).
pub fn alloc(stream: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<f32>, DriverError> {
    // SAFETY: the memory is only ever read by kernels after an operation has written it; reading
    // stale device memory is not undefined behaviour on the host side in any case.
    unsafe { stream.alloc::<f32>(len.max(1)) }
}

/// Page-locked host memory for asynchronous downloads (not write-combined: the host reads it).
pub fn alloc_pinned(
    ctx: &Arc<CudaContext>,
    len: usize,
) -> Result<PinnedHostSlice<f32>, DriverError> {
    // SAFETY: `f32` is valid for any bit pattern; the slice is read only after the copy into it
    // completed (its event has fired).
    unsafe { ctx.alloc_pinned_with_flags::<f32>(len.max(1), 0) }
}

/// Pins cuBLAS to plain FP32 arithmetic (no TF32), so results match the CPU backend to 1e-4.
pub fn set_default_math(blas: &CudaBlas) -> Result<(), cudarc::cublas::result::CublasError> {
    // SAFETY: the handle is valid for the lifetime of `blas`.
    unsafe {
        cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), cublasMath_t::CUBLAS_DEFAULT_MATH)
            .result()
    }
}

fn op(trans: bool) -> cublasOperation_t {
    if trans {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// The row-major product of [`GemmSpec`] through column-major cuBLAS: row-major `C = A B` is
/// column-major `C^T = B^T A^T`, so the operands swap and `m`, `n` swap.
pub fn sgemm(
    blas: &CudaBlas,
    g: &GemmSpec,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    c: &mut CudaSlice<f32>,
) -> Result<(), cudarc::cublas::result::CublasError> {
    // Exec checked that every size fits an i32 and that the buffers hold the extents.
    let cfg = GemmConfig {
        transa: op(g.trans_b),
        transb: op(g.trans_a),
        m: g.n as i32,
        n: g.m as i32,
        k: g.k as i32,
        alpha: g.alpha,
        lda: if g.trans_b { g.k } else { g.n } as i32,
        ldb: if g.trans_a { g.m } else { g.k } as i32,
        beta: g.beta,
        ldc: g.n as i32,
    };
    // SAFETY: the leading dimensions describe contiguous row-major operands whose extents
    // (`GemmSpec::extents`) Exec checked against the buffer lengths; the handle's stream is the
    // stream the buffers are used on.
    unsafe {
        if g.batch == 1 {
            blas.gemm(cfg, b, a, c)
        } else {
            blas.gemm_strided_batched(
                StridedBatchedConfig {
                    gemm: cfg,
                    batch_size: g.batch as i32,
                    stride_a: g.stride_b as i64,
                    stride_b: g.stride_a as i64,
                    stride_c: g.stride_c as i64,
                },
                b,
                a,
                c,
            )
        }
    }
}

/// The loaded kernels of [`crate::kernels::KERNELS`].
#[derive(Debug)]
pub struct Kernels {
    bias_act: CudaFunction,
    add_act: CudaFunction,
    softmax_rows: CudaFunction,
    layer_norm: CudaFunction,
    batch_norm: CudaFunction,
    im2col: CudaFunction,
    max_pool2x2: CudaFunction,
    reduce_axis: CudaFunction,
    embedding: CudaFunction,
    sparse_linear: CudaFunction,
    matrix_factorization: CudaFunction,
    transpose_0213: CudaFunction,
    act_backward: CudaFunction,
    loss_grad: CudaFunction,
    _module: Arc<CudaModule>,
}

impl Kernels {
    /// Every kernel of `module`, by name.
    pub fn load(module: Arc<CudaModule>) -> Result<Self, DriverError> {
        let f = |name: &str| module.load_function(name);
        Ok(Self {
            bias_act: f("bias_act")?,
            add_act: f("add_act")?,
            softmax_rows: f("softmax_rows")?,
            layer_norm: f("layer_norm")?,
            batch_norm: f("batch_norm")?,
            im2col: f("im2col")?,
            max_pool2x2: f("max_pool2x2")?,
            reduce_axis: f("reduce_axis")?,
            embedding: f("embedding")?,
            sparse_linear: f("sparse_linear")?,
            matrix_factorization: f("matrix_factorization")?,
            transpose_0213: f("transpose_0213")?,
            act_backward: f("act_backward")?,
            loss_grad: f("loss_grad")?,
            _module: module,
        })
    }
}

/// A grid-stride launch over `n` elements.
fn elementwise(n: u64) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 8192) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `ROW_THREADS` per row (grid-stride over rows).
fn per_row(rows: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (ROW_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

type Buf = CudaSlice<f32>;

// Every wrapper below: SAFETY: the arguments are pushed in the order and with the types of the
// kernel's C signature in `kernels::SOURCE` (pointers as `CudaSlice<f32>`, sizes as `u64`, codes
// as `i32`, scalars as `f32`), every pointer is a live buffer of this context, and Exec checked
// each buffer's length against the sizes passed, which bound every index the kernel computes.

#[allow(clippy::too_many_arguments)]
pub fn bias_act(
    k: &Kernels,
    s: &CudaStream,
    x: &mut Buf,
    bias: &Buf,
    has_bias: bool,
    [outer, dim, inner]: [u64; 3],
    act: i32,
) -> Result<(), DriverError> {
    let has = i32::from(has_bias);
    let mut b = s.launch_builder(&k.bias_act);
    b.arg(x)
        .arg(bias)
        .arg(&has)
        .arg(&outer)
        .arg(&dim)
        .arg(&inner)
        .arg(&act);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(outer * dim * inner)) }.map(drop)
}

pub fn add_act(
    k: &Kernels,
    s: &CudaStream,
    x: &mut Buf,
    y: &Buf,
    n: u64,
    act: i32,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.add_act);
    b.arg(x).arg(y).arg(&n).arg(&act);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(n)) }.map(drop)
}

pub fn softmax_rows(
    k: &Kernels,
    s: &CudaStream,
    x: &mut Buf,
    rows: u64,
    cols: u64,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.softmax_rows);
    b.arg(x).arg(&rows).arg(&cols);
    // SAFETY: see above; the kernel's shared array has ROW_THREADS entries, the block size.
    unsafe { b.launch(per_row(rows)) }.map(drop)
}

#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    k: &Kernels,
    s: &CudaStream,
    x: &Buf,
    y: &mut Buf,
    w: &Buf,
    bias: &Buf,
    rows: u64,
    cols: u64,
    eps: f32,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.layer_norm);
    b.arg(x)
        .arg(y)
        .arg(w)
        .arg(bias)
        .arg(&rows)
        .arg(&cols)
        .arg(&eps);
    // SAFETY: see above; the kernel's shared array has ROW_THREADS entries, the block size.
    unsafe { b.launch(per_row(rows)) }.map(drop)
}

/// `p` = (mean, var, weight, bias).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    k: &Kernels,
    s: &CudaStream,
    x: &mut Buf,
    p: [&Buf; 4],
    [n, c, hw]: [u64; 3],
    eps: f32,
    act: i32,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.batch_norm);
    b.arg(x)
        .arg(p[0])
        .arg(p[1])
        .arg(p[2])
        .arg(p[3])
        .arg(&n)
        .arg(&c)
        .arg(&hw)
        .arg(&eps)
        .arg(&act);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(n * c * hw)) }.map(drop)
}

pub fn im2col(
    k: &Kernels,
    s: &CudaStream,
    x: &Buf,
    cols: &mut Buf,
    g: &ConvGeom,
) -> Result<(), DriverError> {
    let v = [g.n, g.c, g.h, g.w, g.k, g.pad, g.stride, g.oh, g.ow].map(|d| d as u64);
    let mut b = s.launch_builder(&k.im2col);
    b.arg(x).arg(cols);
    for d in &v {
        b.arg(d);
    }
    let total = v[0] * v[1] * v[4] * v[4] * v[7] * v[8];
    // SAFETY: see above.
    unsafe { b.launch(elementwise(total)) }.map(drop)
}

pub fn max_pool2x2(
    k: &Kernels,
    s: &CudaStream,
    x: &Buf,
    y: &mut Buf,
    [nc, h, w]: [u64; 3],
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.max_pool2x2);
    b.arg(x).arg(y).arg(&nc).arg(&h).arg(&w);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(nc * (h / 2) * (w / 2))) }.map(drop)
}

pub fn reduce_axis(
    k: &Kernels,
    s: &CudaStream,
    x: &Buf,
    y: &mut Buf,
    [outer, dim, inner]: [u64; 3],
    scale: f32,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.reduce_axis);
    b.arg(x)
        .arg(y)
        .arg(&outer)
        .arg(&dim)
        .arg(&inner)
        .arg(&scale);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(outer * inner)) }.map(drop)
}

/// `sizes` = (tokens, seq, d); the ids were range-checked on the host against `table`'s rows.
pub fn embedding(
    k: &Kernels,
    s: &CudaStream,
    ids: &Buf,
    table: &Buf,
    pos: &Buf,
    y: &mut Buf,
    [tokens, seq, d]: [u64; 3],
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.embedding);
    b.arg(ids)
        .arg(table)
        .arg(pos)
        .arg(y)
        .arg(&tokens)
        .arg(&seq)
        .arg(&d);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(tokens * d)) }.map(drop)
}

/// `sizes` = (batch, k, n_out); the feature indices were range-checked on the host.
pub fn sparse_linear(
    k: &Kernels,
    s: &CudaStream,
    pairs: &Buf,
    w: &Buf,
    bias: &Buf,
    y: &mut Buf,
    [batch, pairs_per, n_out]: [u64; 3],
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.sparse_linear);
    b.arg(pairs)
        .arg(w)
        .arg(bias)
        .arg(y)
        .arg(&batch)
        .arg(&pairs_per)
        .arg(&n_out);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(batch * n_out)) }.map(drop)
}

/// `t` = (user factors, item factors, user bias, item bias, global bias); ids range-checked.
pub fn matrix_factorization(
    k: &Kernels,
    s: &CudaStream,
    ids: &Buf,
    t: [&Buf; 5],
    y: &mut Buf,
    batch: u64,
    factors: u64,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.matrix_factorization);
    b.arg(ids)
        .arg(t[0])
        .arg(t[1])
        .arg(t[2])
        .arg(t[3])
        .arg(t[4])
        .arg(y)
        .arg(&batch)
        .arg(&factors);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(batch)) }.map(drop)
}

pub fn transpose_0213(
    k: &Kernels,
    s: &CudaStream,
    x: &Buf,
    y: &mut Buf,
    dims: [u64; 4],
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.transpose_0213);
    b.arg(x)
        .arg(y)
        .arg(&dims[0])
        .arg(&dims[1])
        .arg(&dims[2])
        .arg(&dims[3]);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(dims.iter().product())) }.map(drop)
}

pub fn act_backward(
    k: &Kernels,
    s: &CudaStream,
    z: &Buf,
    g: &mut Buf,
    n: u64,
    act: i32,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.act_backward);
    b.arg(z).arg(g).arg(&n).arg(&act);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(n)) }.map(drop)
}

/// Cross-entropy labels were checked on the host to be class indices below `cols`.
#[allow(clippy::too_many_arguments)]
pub fn loss_grad(
    k: &Kernels,
    s: &CudaStream,
    loss: i32,
    out: &Buf,
    targets: &Buf,
    grad: &mut Buf,
    row_loss: &mut Buf,
    rows: u64,
    cols: u64,
) -> Result<(), DriverError> {
    let mut b = s.launch_builder(&k.loss_grad);
    b.arg(&loss)
        .arg(out)
        .arg(targets)
        .arg(grad)
        .arg(row_loss)
        .arg(&rows)
        .arg(&cols);
    // SAFETY: see above.
    unsafe { b.launch(elementwise(rows)) }.map(drop)
}
