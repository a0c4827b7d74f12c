//! [`Exec`]: the checked way to run [`Backend`] operations for one work item. Every allocation
//! is charged to the item's [`Ledger`] (and released when its [`Tracked`] buffer drops) and
//! every operation checks its buffers' lengths and its sizes first, so a mistake can only ever
//! become an error for the one tenant, never an out-of-bounds access on a shared device.

use std::ops::{Deref, DerefMut};

use cumulus_models::Loss;

use crate::backend::{Act, Backend, BnParams, ConvGeom, GemmSpec, MfTables};
use crate::error::{GpuError, Result};
use crate::executor::quota::{Charge, Ledger};

/// A buffer with the memory charge that pays for it.
pub struct Tracked<B: Backend> {
    buf: B::Buf,
    _charge: Charge,
}

impl<B: Backend> Tracked<B> {
    /// Wraps a buffer with its charge.
    pub fn new(buf: B::Buf, charge: Charge) -> Self {
        Self {
            buf,
            _charge: charge,
        }
    }
}

impl<B: Backend> Deref for Tracked<B> {
    type Target = B::Buf;
    fn deref(&self) -> &B::Buf {
        &self.buf
    }
}

impl<B: Backend> DerefMut for Tracked<B> {
    fn deref_mut(&mut self) -> &mut B::Buf {
        &mut self.buf
    }
}

/// An activation: a buffer and its shape (batch first).
pub struct DevTensor<B: Backend> {
    pub buf: Tracked<B>,
    pub shape: Vec<usize>,
}

/// The product of `dims`, refusing overflow.
pub(crate) fn prod(dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |n, &d| {
        n.checked_mul(d)
            .ok_or_else(|| GpuError::InvalidRequest(format!("sizes {dims:?} overflow")))
    })
}

fn internal(what: &str) -> GpuError {
    GpuError::Device(format!("internal size mismatch: {what}"))
}

/// cuBLAS takes 32-bit sizes.
fn blas_int(v: usize, what: &str) -> Result<()> {
    if v > i32::MAX as usize {
        return Err(GpuError::TooLarge {
            what: format!("matrix {what}"),
            size: v as u64,
            limit: i32::MAX as u64,
        });
    }
    Ok(())
}

/// One work item's view of a backend: its stream, its ledger and the buffer size bound.
pub struct Exec<'a, B: Backend> {
    pub backend: &'a B,
    pub stream: &'a B::Stream,
    ledger: Ledger,
    max_elements: usize,
}

impl<'a, B: Backend> Exec<'a, B> {
    pub fn new(backend: &'a B, stream: &'a B::Stream, ledger: Ledger, max_elements: usize) -> Self {
        Self {
            backend,
            stream,
            ledger,
            max_elements,
        }
    }

    fn charge(&self, len: usize) -> Result<Charge> {
        if len > self.max_elements {
            return Err(GpuError::TooLarge {
                what: "an intermediate buffer's element count".into(),
                size: len as u64,
                limit: self.max_elements as u64,
            });
        }
        self.ledger.charge(len as u64 * 4)
    }

    /// A zero-filled buffer of `len` elements, charged to the item.
    pub fn alloc(&self, len: usize) -> Result<Tracked<B>> {
        let charge = self.charge(len)?;
        Ok(Tracked::new(self.backend.alloc(self.stream, len)?, charge))
    }

    /// A device copy of `data`, charged to the item.
    pub fn upload(&self, data: &[f32]) -> Result<Tracked<B>> {
        let charge = self.charge(data.len())?;
        Ok(Tracked::new(
            self.backend.upload(self.stream, data)?,
            charge,
        ))
    }

    fn need(&self, buf: &B::Buf, len: usize, what: &str) -> Result<()> {
        if self.backend.buf_len(buf) < len {
            return Err(internal(&format!(
                "{what} holds {} elements, {len} needed",
                self.backend.buf_len(buf)
            )));
        }
        Ok(())
    }

    pub fn copy(&self, src: &B::Buf, dst: &mut B::Buf) -> Result<()> {
        self.need(dst, self.backend.buf_len(src), "copy destination")?;
        self.backend.copy(self.stream, src, dst)
    }

    pub fn gemm(&self, g: &GemmSpec, a: &B::Buf, b: &B::Buf, c: &mut B::Buf) -> Result<()> {
        for (v, what) in [
            (g.m, "rows"),
            (g.n, "columns"),
            (g.k, "inner size"),
            (g.batch, "batch"),
            (g.stride_a, "stride"),
            (g.stride_b, "stride"),
            (g.stride_c, "stride"),
        ] {
            blas_int(v, what)?;
        }
        prod(&[g.m, g.k])?;
        prod(&[g.k, g.n])?;
        prod(&[g.m, g.n])?;
        prod(&[g.batch, g.stride_a.max(g.stride_b).max(g.stride_c).max(1)])?;
        let (ea, eb, ec) = g.extents();
        self.need(a, ea, "gemm A")?;
        self.need(b, eb, "gemm B")?;
        self.need(c, ec, "gemm C")?;
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        self.backend.gemm(self.stream, g, a, b, c)
    }

    pub fn bias_act(
        &self,
        x: &mut B::Buf,
        bias: Option<&B::Buf>,
        dims: [usize; 3],
        act: Act,
    ) -> Result<()> {
        let n = prod(&dims)?;
        self.need(x, n, "activation")?;
        if let Some(b) = bias {
            self.need(b, dims[1], "bias")?;
        }
        if n == 0 || (bias.is_none() && act == Act::Identity) {
            return Ok(());
        }
        self.backend.bias_act(self.stream, x, bias, dims, act)
    }

    pub fn add_act(&self, x: &mut B::Buf, y: &B::Buf, n: usize, act: Act) -> Result<()> {
        self.need(x, n, "sum")?;
        self.need(y, n, "addend")?;
        if n == 0 {
            return Ok(());
        }
        self.backend.add_act(self.stream, x, y, n, act)
    }

    pub fn softmax_rows(&self, x: &mut B::Buf, rows: usize, cols: usize) -> Result<()> {
        self.need(x, prod(&[rows, cols])?, "softmax input")?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        self.backend.softmax_rows(self.stream, x, rows, cols)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        x: &B::Buf,
        y: &mut B::Buf,
        weight: &B::Buf,
        bias: &B::Buf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        let n = prod(&[rows, cols])?;
        self.need(x, n, "layer norm input")?;
        self.need(y, n, "layer norm output")?;
        self.need(weight, cols, "layer norm weight")?;
        self.need(bias, cols, "layer norm bias")?;
        if n == 0 {
            return Ok(());
        }
        self.backend
            .layer_norm(self.stream, x, y, weight, bias, rows, cols, eps)
    }

    pub fn batch_norm(
        &self,
        x: &mut B::Buf,
        p: &BnParams<'_, B::Buf>,
        dims: [usize; 3],
        act: Act,
    ) -> Result<()> {
        let n = prod(&dims)?;
        self.need(x, n, "batch norm input")?;
        for (t, what) in [
            (p.mean, "running mean"),
            (p.var, "running var"),
            (p.weight, "weight"),
            (p.bias, "bias"),
        ] {
            self.need(t, dims[1], what)?;
        }
        if n == 0 {
            return Ok(());
        }
        self.backend.batch_norm(self.stream, x, p, dims, act)
    }

    pub fn im2col(&self, x: &B::Buf, cols: &mut B::Buf, g: &ConvGeom) -> Result<()> {
        self.need(x, prod(&[g.n, g.c, g.h, g.w])?, "convolution input")?;
        self.need(
            cols,
            prod(&[g.n, g.col_rows(), g.col_cols()])?,
            "column matrix",
        )?;
        if g.n == 0 || g.col_cols() == 0 {
            return Ok(());
        }
        self.backend.im2col(self.stream, x, cols, g)
    }

    pub fn max_pool2x2(&self, x: &B::Buf, y: &mut B::Buf, dims: [usize; 3]) -> Result<()> {
        let [nc, h, w] = dims;
        self.need(x, prod(&dims)?, "pool input")?;
        self.need(y, prod(&[nc, h / 2, w / 2])?, "pool output")?;
        if nc == 0 || h < 2 || w < 2 {
            return Ok(());
        }
        self.backend.max_pool2x2(self.stream, x, y, dims)
    }

    pub fn reduce_axis(
        &self,
        x: &B::Buf,
        y: &mut B::Buf,
        dims: [usize; 3],
        scale: f32,
    ) -> Result<()> {
        self.need(x, prod(&dims)?, "reduction input")?;
        self.need(y, prod(&[dims[0], dims[2]])?, "reduction output")?;
        if dims[0] == 0 || dims[2] == 0 {
            return Ok(());
        }
        self.backend.reduce_axis(self.stream, x, y, dims, scale)
    }

    /// `ids` must already be checked to lie in `0..rows of table` (see the programs' input
    /// checks); here only the buffer sizes are.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding(
        &self,
        ids: &B::Buf,
        table: &B::Buf,
        pos: &B::Buf,
        y: &mut B::Buf,
        tokens: usize,
        seq: usize,
        d: usize,
    ) -> Result<()> {
        self.need(ids, tokens, "token ids")?;
        self.need(pos, prod(&[seq, d])?, "position table")?;
        self.need(y, prod(&[tokens, d])?, "embedding output")?;
        if tokens == 0 || seq == 0 {
            return Ok(());
        }
        self.backend
            .embedding(self.stream, ids, table, pos, y, tokens, seq, d)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sparse_linear(
        &self,
        pairs: &B::Buf,
        weight: &B::Buf,
        bias: &B::Buf,
        y: &mut B::Buf,
        batch: usize,
        k: usize,
        n_out: usize,
    ) -> Result<()> {
        self.need(pairs, prod(&[batch, k, 2])?, "pairs")?;
        self.need(bias, n_out, "bias")?;
        self.need(y, prod(&[batch, n_out])?, "output")?;
        if batch == 0 || n_out == 0 {
            return Ok(());
        }
        self.backend
            .sparse_linear(self.stream, pairs, weight, bias, y, batch, k, n_out)
    }

    pub fn matrix_factorization(
        &self,
        ids: &B::Buf,
        t: &MfTables<'_, B::Buf>,
        y: &mut B::Buf,
        batch: usize,
        factors: usize,
    ) -> Result<()> {
        self.need(ids, prod(&[batch, 2])?, "ids")?;
        self.need(t.global_bias, 1, "global bias")?;
        self.need(y, batch, "output")?;
        if batch == 0 {
            return Ok(());
        }
        self.backend
            .matrix_factorization(self.stream, ids, t, y, batch, factors)
    }

    pub fn transpose_0213(&self, x: &B::Buf, y: &mut B::Buf, dims: [usize; 4]) -> Result<()> {
        let n = prod(&dims)?;
        self.need(x, n, "transpose input")?;
        self.need(y, n, "transpose output")?;
        if n == 0 {
            return Ok(());
        }
        self.backend.transpose_0213(self.stream, x, y, dims)
    }

    pub fn act_backward(&self, z: &B::Buf, g: &mut B::Buf, n: usize, act: Act) -> Result<()> {
        self.need(z, n, "pre-activation")?;
        self.need(g, n, "gradient")?;
        if n == 0 || act == Act::Identity {
            return Ok(());
        }
        self.backend.act_backward(self.stream, z, g, n, act)
    }

    /// `targets` must already be checked (class indices in range for cross-entropy).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_grad(
        &self,
        loss: Loss,
        out: &B::Buf,
        targets: &B::Buf,
        grad: &mut B::Buf,
        row_loss: &mut B::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let n = prod(&[rows, cols])?;
        self.need(out, n, "output")?;
        self.need(grad, n, "output gradient")?;
        self.need(targets, rows, "targets")?;
        self.need(row_loss, rows, "row losses")?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        self.backend
            .loss_grad(self.stream, loss, out, targets, grad, row_loss, rows, cols)
    }
}
