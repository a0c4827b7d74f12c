//! [`CudaBackend`]: the operations on one GPU with cuBLAS (matrix products) and the NVRTC kernels
//! of [`crate::kernels`], compiled for the device's architecture when the backend opens and
//! cached for the process.
//!
//! Each tenant's [`CudaTenantStream`] is a non-blocking CUDA stream (high priority for
//! latency-critical tenants) with its own cuBLAS handle. Downloads go through pooled page-locked
//! buffers and end with an event that [`Backend::poll`] queries without blocking.

pub mod ffi;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DriverError, PinnedHostSlice};
use cudarc::nvrtc::{CompileOptions, Ptx};
use cumulus_models::Loss;

use super::{Act, Backend, BackendKind, BnParams, ConvGeom, GemmSpec, MfTables};
use crate::config::Priority;
use crate::error::{GpuError, Result};
use crate::kernels;

fn driver(e: DriverError) -> GpuError {
    GpuError::Device(format!("CUDA driver: {e}"))
}

fn blas(e: cudarc::cublas::result::CublasError) -> GpuError {
    GpuError::Device(format!("cuBLAS: {e:?}"))
}

/// Compiles every kernel with NVRTC for `arch` (`compute_90`, ...; `None`: NVRTC's default) and
/// returns the PTX. Needs libnvrtc, not a GPU; the caller checks [`ffi::nvrtc_present`] first
/// (cudarc panics when the library is missing).
pub fn compile_kernels(arch: Option<&str>) -> Result<String> {
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let key = arch.unwrap_or("default").to_string();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(ptx) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(ptx);
    }
    let opts = CompileOptions {
        options: arch
            .map(|a| vec![format!("--gpu-architecture={a}")])
            .unwrap_or_default(),
        name: Some("cumulus_gpu_kernels.cu".into()),
        ..CompileOptions::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(kernels::SOURCE, opts).map_err(|e| {
        let detail = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        GpuError::KernelCompile(detail)
    })?;
    let src = ptx.to_src();
    if let Ok(mut c) = cache.lock() {
        c.insert(key, src.clone());
    }
    Ok(src)
}

/// One tenant's stream and cuBLAS handle.
pub struct CudaTenantStream {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
}

/// Downloads in flight: page-locked copies and the event recorded after them.
pub struct CudaPending {
    event: CudaEvent,
    parts: Vec<(PinnedHostSlice<f32>, usize)>,
}

/// Keeps page-locked buffers for reuse (allocating them costs a driver call and a page-table
/// update each), up to a byte bound.
struct PinnedPool {
    free: Vec<PinnedHostSlice<f32>>,
    bytes: usize,
}

const PINNED_POOL_BYTES: usize = 512 << 20;

/// The CUDA backend of one device.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    kernels: ffi::Kernels,
    /// Stands in for an absent bias (a kernel argument must be a live buffer).
    dummy: CudaSlice<f32>,
    pinned: Mutex<PinnedPool>,
    name: String,
    priorities: (i32, i32),
}

impl CudaBackend {
    /// Opens device `ordinal`: context, kernels (compiled now), stream-ordered pool settings.
    /// Call only after [`crate::probe::probe`] found the libraries and the device: cudarc
    /// panics on a missing library.
    pub fn open(ordinal: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(driver)?;
        ffi::disable_event_tracking(&ctx);
        ffi::keep_pool_memory(&ctx).map_err(driver)?;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let arch = format!("compute_{major}{minor}");
        let ptx = match compile_kernels(Some(&arch)) {
            Ok(p) => p,
            // A device newer than this NVRTC knows: its default target still runs there (JIT).
            Err(GpuError::KernelCompile(log)) if log.contains("gpu-architecture") => {
                compile_kernels(None)?
            }
            Err(e) => return Err(e),
        };
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(driver)?;
        let kernels = ffi::Kernels::load(module).map_err(driver)?;
        let priorities = {
            ctx.bind_to_thread().map_err(driver)?;
            cudarc::driver::result::stream::get_priority_range().map_err(driver)?
        };
        let loader = ctx.new_stream().map_err(driver)?;
        let dummy = ffi::alloc(&loader, 1).map_err(driver)?;
        loader.synchronize().map_err(driver)?;
        let (free, total) = ctx.mem_get_info().map_err(driver)?;
        let name = format!(
            "{} (cuda:{ordinal}, compute {major}.{minor}, {} MiB total, {} MiB free)",
            ctx.name().map_err(driver)?,
            total >> 20,
            free >> 20
        );
        Ok(Self {
            ctx,
            kernels,
            dummy,
            pinned: Mutex::new(PinnedPool {
                free: Vec::new(),
                bytes: 0,
            }),
            name,
            priorities,
        })
    }

    fn take_pinned(&self, len: usize) -> Result<PinnedHostSlice<f32>> {
        let mut pool = self
            .pinned
            .lock()
            .map_err(|_| GpuError::Device("pinned pool lock poisoned".into()))?;
        if let Some(i) = pool
            .free
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() >= len)
            .min_by_key(|(_, p)| p.len())
            .map(|(i, _)| i)
        {
            let p = pool.free.swap_remove(i);
            pool.bytes -= p.num_bytes();
            return Ok(p);
        }
        drop(pool);
        ffi::alloc_pinned(&self.ctx, len.max(1).next_power_of_two()).map_err(driver)
    }

    fn give_pinned(&self, p: PinnedHostSlice<f32>) {
        let Ok(mut pool) = self.pinned.lock() else {
            return;
        };
        if pool.bytes + p.num_bytes() <= PINNED_POOL_BYTES {
            pool.bytes += p.num_bytes();
            pool.free.push(p);
        }
    }
}

fn u(v: usize) -> u64 {
    v as u64
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Stream = CudaTenantStream;
    type Pending = CudaPending;

    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn device_name(&self) -> String {
        self.name.clone()
    }

    fn memory_info(&self) -> Result<(u64, u64)> {
        let (free, total) = self.ctx.mem_get_info().map_err(driver)?;
        Ok((u(free), u(total)))
    }

    fn bind_thread(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver)
    }

    fn new_stream(&self, priority: Priority) -> Result<CudaTenantStream> {
        // Lower numbers are higher priorities: `.1` is the greatest.
        let p = match priority {
            Priority::Normal => self.priorities.0,
            Priority::LatencyCritical => self.priorities.1,
        };
        let stream = self.ctx.new_stream_with_priority(p).map_err(driver)?;
        let handle = CudaBlas::new(stream.clone()).map_err(blas)?;
        ffi::set_default_math(&handle).map_err(blas)?;
        Ok(CudaTenantStream {
            stream,
            blas: handle,
        })
    }

    fn alloc(&self, s: &CudaTenantStream, len: usize) -> Result<CudaSlice<f32>> {
        ffi::alloc(&s.stream, len).map_err(driver)
    }

    fn upload(&self, s: &CudaTenantStream, data: &[f32]) -> Result<CudaSlice<f32>> {
        let mut buf = ffi::alloc(&s.stream, data.len()).map_err(driver)?;
        if !data.is_empty() {
            // From pageable memory the driver stages the data before returning, so `data` may
            // be dropped right after.
            s.stream.memcpy_htod(data, &mut buf).map_err(driver)?;
        }
        Ok(buf)
    }

    fn buf_len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }

    fn copy(
        &self,
        s: &CudaTenantStream,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
    ) -> Result<()> {
        s.stream.memcpy_dtod(src, dst).map_err(driver)
    }

    fn download(&self, s: &CudaTenantStream, bufs: &[&CudaSlice<f32>]) -> Result<CudaPending> {
        let mut parts = Vec::with_capacity(bufs.len());
        for b in bufs {
            let mut pinned = self.take_pinned(b.len())?;
            s.stream.memcpy_dtoh(*b, &mut pinned).map_err(driver)?;
            parts.push((pinned, b.len()));
        }
        let event = s.stream.record_event(None).map_err(driver)?;
        Ok(CudaPending { event, parts })
    }

    fn poll(&self, p: &CudaPending) -> Result<bool> {
        p.event.try_is_complete().map_err(driver)
    }

    fn finish(&self, p: CudaPending) -> Result<Vec<Vec<f32>>> {
        p.event.synchronize().map_err(driver)?;
        let mut out = Vec::with_capacity(p.parts.len());
        for (pinned, len) in p.parts {
            out.push(pinned.as_slice().map_err(driver)?[..len].to_vec());
            self.give_pinned(pinned);
        }
        Ok(out)
    }

    fn synchronize(&self, s: &CudaTenantStream) -> Result<()> {
        s.stream.synchronize().map_err(driver)
    }

    fn gemm(
        &self,
        s: &CudaTenantStream,
        g: &GemmSpec,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        ffi::sgemm(&s.blas, g, a, b, c).map_err(blas)
    }

    fn bias_act(
        &self,
        s: &CudaTenantStream,
        x: &mut CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        dims: [usize; 3],
        act: Act,
    ) -> Result<()> {
        let b = bias.unwrap_or(&self.dummy);
        ffi::bias_act(
            &self.kernels,
            &s.stream,
            x,
            b,
            bias.is_some(),
            dims.map(u),
            act as i32,
        )
        .map_err(driver)
    }

    fn add_act(
        &self,
        s: &CudaTenantStream,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        n: usize,
        act: Act,
    ) -> Result<()> {
        ffi::add_act(&self.kernels, &s.stream, x, y, u(n), act as i32).map_err(driver)
    }

    fn softmax_rows(
        &self,
        s: &CudaTenantStream,
        x: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        ffi::softmax_rows(&self.kernels, &s.stream, x, u(rows), u(cols)).map_err(driver)
    }

    fn layer_norm(
        &self,
        s: &CudaTenantStream,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        ffi::layer_norm(
            &self.kernels,
            &s.stream,
            x,
            y,
            weight,
            bias,
            u(rows),
            u(cols),
            eps,
        )
        .map_err(driver)
    }

    fn batch_norm(
        &self,
        s: &CudaTenantStream,
        x: &mut CudaSlice<f32>,
        p: &BnParams<'_, CudaSlice<f32>>,
        dims: [usize; 3],
        act: Act,
    ) -> Result<()> {
        let params = [p.mean, p.var, p.weight, p.bias];
        ffi::batch_norm(
            &self.kernels,
            &s.stream,
            x,
            params,
            dims.map(u),
            p.eps,
            act as i32,
        )
        .map_err(driver)
    }

    fn im2col(
        &self,
        s: &CudaTenantStream,
        x: &CudaSlice<f32>,
        cols: &mut CudaSlice<f32>,
        g: &ConvGeom,
    ) -> Result<()> {
        ffi::im2col(&self.kernels, &s.stream, x, cols, g).map_err(driver)
    }

    fn max_pool2x2(
        &self,
        s: &CudaTenantStream,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        dims: [usize; 3],
    ) -> Result<()> {
        ffi::max_pool2x2(&self.kernels, &s.stream, x, y, dims.map(u)).map_err(driver)
    }

    fn reduce_axis(
        &self,
        s: &CudaTenantStream,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        dims: [usize; 3],
        scale: f32,
    ) -> Result<()> {
        ffi::reduce_axis(&self.kernels, &s.stream, x, y, dims.map(u), scale).map_err(driver)
    }

    fn embedding(
        &self,
        s: &CudaTenantStream,
        ids: &CudaSlice<f32>,
        table: &CudaSlice<f32>,
        pos: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        tokens: usize,
        seq: usize,
        d: usize,
    ) -> Result<()> {
        ffi::embedding(
            &self.kernels,
            &s.stream,
            ids,
            table,
            pos,
            y,
            [tokens, seq, d].map(u),
        )
        .map_err(driver)
    }

    fn sparse_linear(
        &self,
        s: &CudaTenantStream,
        pairs: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        batch: usize,
        k: usize,
        n_out: usize,
    ) -> Result<()> {
        let sizes = [batch, k, n_out].map(u);
        ffi::sparse_linear(&self.kernels, &s.stream, pairs, weight, bias, y, sizes).map_err(driver)
    }

    fn matrix_factorization(
        &self,
        s: &CudaTenantStream,
        ids: &CudaSlice<f32>,
        t: &MfTables<'_, CudaSlice<f32>>,
        y: &mut CudaSlice<f32>,
        batch: usize,
        factors: usize,
    ) -> Result<()> {
        let tables = [
            t.user_factors,
            t.item_factors,
            t.user_bias,
            t.item_bias,
            t.global_bias,
        ];
        ffi::matrix_factorization(
            &self.kernels,
            &s.stream,
            ids,
            tables,
            y,
            u(batch),
            u(factors),
        )
        .map_err(driver)
    }

    fn transpose_0213(
        &self,
        s: &CudaTenantStream,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        dims: [usize; 4],
    ) -> Result<()> {
        ffi::transpose_0213(&self.kernels, &s.stream, x, y, dims.map(u)).map_err(driver)
    }

    fn act_backward(
        &self,
        s: &CudaTenantStream,
        z: &CudaSlice<f32>,
        g: &mut CudaSlice<f32>,
        n: usize,
        act: Act,
    ) -> Result<()> {
        ffi::act_backward(&self.kernels, &s.stream, z, g, u(n), act as i32).map_err(driver)
    }

    fn loss_grad(
        &self,
        s: &CudaTenantStream,
        loss: Loss,
        out: &CudaSlice<f32>,
        targets: &CudaSlice<f32>,
        grad: &mut CudaSlice<f32>,
        row_loss: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let code = kernels::loss_code(loss);
        ffi::loss_grad(
            &self.kernels,
            &s.stream,
            code,
            out,
            targets,
            grad,
            row_loss,
            u(rows),
            u(cols),
        )
        .map_err(driver)
    }
}
