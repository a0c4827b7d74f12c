//! A device-generic suite of every backend operation on fixed inputs, sized to reach the CUDA
//! kernels' grid-stride loops (more elements than one launch grid, more rows than one grid
//! dimension, rows longer than a block). It runs on the CPU always (so the suite itself is
//! checked in CI) and on CUDA in `cuda.rs`, which compares the two.

use cumulus_gpu::backend::{Act, Backend, BnParams, ConvGeom, GemmSpec, MfTables};
use cumulus_gpu::{Priority, Result};
use cumulus_models::Loss;

use crate::common::wave;

/// `(check name, output)` of every operation.
pub fn op_suite<B: Backend>(b: &B) -> Result<Vec<(String, Vec<f32>)>> {
    let s = b.new_stream(Priority::Normal)?;
    let mut out: Vec<(String, Vec<f32>)> = Vec::new();
    let mut keep = |name: String, buf: &B::Buf| -> Result<()> {
        let v = b.finish(b.download(&s, &[buf])?)?;
        out.push((name, v.into_iter().next().unwrap_or_default()));
        Ok(())
    };

    for (m, n, k) in [(37, 29, 53), (256, 256, 256), (1, 10, 784)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = b.upload(&s, &wave(m * k, 1))?;
            let bm = b.upload(&s, &wave(k * n, 2))?;
            let mut c = b.upload(&s, &wave(m * n, 3))?;
            let g = GemmSpec {
                trans_a: ta,
                trans_b: tb,
                alpha: 0.75,
                beta: 0.5,
                ..GemmSpec::new(m, n, k)
            };
            b.gemm(&s, &g, &a, &bm, &mut c)?;
            keep(format!("gemm {m}x{n}x{k} ta={ta} tb={tb}"), &c)?;
        }
    }
    {
        let (m, n, k, batch) = (16, 100, 27, 5);
        let a = b.upload(&s, &wave(m * k, 4))?;
        let bm = b.upload(&s, &wave(batch * k * n, 5))?;
        let mut c = b.alloc(&s, batch * m * n)?;
        let g = GemmSpec {
            batch,
            stride_a: 0,
            stride_b: k * n,
            stride_c: m * n,
            ..GemmSpec::new(m, n, k)
        };
        b.gemm(&s, &g, &a, &bm, &mut c)?;
        keep("gemm batched shared A".into(), &c)?;
        let g = GemmSpec {
            trans_b: true,
            alpha: 0.25,
            batch,
            stride_a: m * k,
            stride_b: n * k,
            stride_c: m * n,
            ..GemmSpec::new(m, n, k)
        };
        let a = b.upload(&s, &wave(batch * m * k, 6))?;
        let bm = b.upload(&s, &wave(batch * n * k, 7))?;
        b.gemm(&s, &g, &a, &bm, &mut c)?;
        keep("gemm batched B^T (attention scores)".into(), &c)?;
    }

    let dims = [7, 33, 129];
    let n_dims: usize = dims.iter().product();
    let bias = b.upload(&s, &wave(dims[1], 8))?;
    for act in [Act::Identity, Act::Relu, Act::Tanh, Act::Gelu, Act::Sigmoid] {
        let mut x = b.upload(
            &s,
            &wave(n_dims, 9).iter().map(|v| v * 4.0).collect::<Vec<_>>(),
        )?;
        b.bias_act(&s, &mut x, Some(&bias), dims, act)?;
        keep(format!("bias_act {act:?}"), &x)?;
        let mut x = b.upload(&s, &wave(n_dims, 10))?;
        b.bias_act(&s, &mut x, None, dims, act)?;
        keep(format!("act {act:?} without bias"), &x)?;
    }
    {
        // Past one launch grid (8192 blocks of 256 threads): the grid-stride loop runs twice.
        let n = 3 << 20;
        let mut x = b.upload(&s, &wave(n, 11))?;
        let y = b.upload(&s, &wave(n, 12))?;
        b.add_act(&s, &mut x, &y, n, Act::Relu)?;
        keep("add_act relu, 3M elements".into(), &x)?;
    }
    for (rows, cols) in [(70_000, 8), (4, 1000), (3, 1)] {
        let data: Vec<f32> = wave(rows * cols, 13).iter().map(|v| v * 6.0).collect();
        let mut x = b.upload(&s, &data)?;
        b.softmax_rows(&s, &mut x, rows, cols)?;
        keep(format!("softmax_rows {rows}x{cols}"), &x)?;
        let x = b.upload(&s, &data)?;
        let w = b.upload(&s, &wave(cols, 14))?;
        let bb = b.upload(&s, &wave(cols, 15))?;
        let mut y = b.alloc(&s, rows * cols)?;
        b.layer_norm(&s, &x, &mut y, &w, &bb, rows, cols, 1e-5)?;
        keep(format!("layer_norm {rows}x{cols}"), &y)?;
    }
    {
        let (n, c, hw) = (3, 64, 49);
        let mean = b.upload(&s, &wave(c, 16))?;
        let var = b.upload(
            &s,
            &wave(c, 17)
                .iter()
                .map(|v| v.abs() + 0.3)
                .collect::<Vec<_>>(),
        )?;
        let w = b.upload(&s, &wave(c, 18))?;
        let bb = b.upload(&s, &wave(c, 19))?;
        let p = BnParams {
            mean: &mean,
            var: &var,
            weight: &w,
            bias: &bb,
            eps: 1e-5,
        };
        for act in [Act::Identity, Act::Relu] {
            let mut x = b.upload(&s, &wave(n * c * hw, 20))?;
            b.batch_norm(&s, &mut x, &p, [n, c, hw], act)?;
            keep(format!("batch_norm {act:?}"), &x)?;
        }
    }
    for (input, k, pad, stride) in [
        ([2, 3, 32, 32], 3, 1, 1),
        ([2, 6, 14, 14], 5, 0, 1),
        ([1, 64, 16, 16], 3, 1, 2),
        ([2, 64, 16, 16], 1, 0, 2),
        ([2, 1, 28, 28], 5, 2, 1),
    ] {
        let g = ConvGeom::new(input, k, pad, stride).expect("the geometry fits");
        let x = b.upload(&s, &wave(input.iter().product(), 21))?;
        let mut cols = b.alloc(&s, g.n * g.col_rows() * g.col_cols())?;
        b.im2col(&s, &x, &mut cols, &g)?;
        keep(
            format!("im2col {input:?} k={k} pad={pad} stride={stride}"),
            &cols,
        )?;
    }
    for [nc, h, w] in [[6, 28, 28], [5, 9, 7]] {
        let x = b.upload(&s, &wave(nc * h * w, 22))?;
        let mut y = b.alloc(&s, nc * (h / 2) * (w / 2))?;
        b.max_pool2x2(&s, &x, &mut y, [nc, h, w])?;
        keep(format!("max_pool2x2 {nc}x{h}x{w}"), &y)?;
    }
    for (dims, scale) in [
        ([64, 16, 1], 1.0 / 16.0),
        ([1, 300, 77], 1.0),
        ([4, 8, 16], 0.125),
    ] {
        let x = b.upload(&s, &wave(dims.iter().product(), 23))?;
        let mut y = b.alloc(&s, dims[0] * dims[2])?;
        b.reduce_axis(&s, &x, &mut y, dims, scale)?;
        keep(format!("reduce_axis {dims:?}"), &y)?;
    }
    {
        let (vocab, d, batch, seq) = (500, 32, 3, 17);
        let ids: Vec<f32> = (0..batch * seq)
            .map(|i| ((i * 37) % vocab) as f32)
            .collect();
        let ids = b.upload(&s, &ids)?;
        let table = b.upload(&s, &wave(vocab * d, 24))?;
        let pos = b.upload(&s, &wave(seq * d, 25))?;
        let mut y = b.alloc(&s, batch * seq * d)?;
        b.embedding(&s, &ids, &table, &pos, &mut y, batch * seq, seq, d)?;
        keep("embedding".into(), &y)?;
    }
    {
        let (features, n_out, batch, k) = (1000, 3, 5, 39);
        let pairs: Vec<f32> = (0..batch * k)
            .flat_map(|i| [((i * 7919) % features) as f32, ((i as f32) * 0.37).sin()])
            .collect();
        let pairs = b.upload(&s, &pairs)?;
        let w = b.upload(&s, &wave(features * n_out, 26))?;
        let bias = b.upload(&s, &wave(n_out, 27))?;
        let mut y = b.alloc(&s, batch * n_out)?;
        b.sparse_linear(&s, &pairs, &w, &bias, &mut y, batch, k, n_out)?;
        keep("sparse_linear".into(), &y)?;
    }
    {
        let (users, items, factors, batch) = (40, 60, 8, 9);
        let ids: Vec<f32> = (0..batch)
            .flat_map(|i| [((i * 7) % users) as f32, ((i * 11) % items) as f32])
            .collect();
        let ids = b.upload(&s, &ids)?;
        let uf = b.upload(&s, &wave(users * factors, 28))?;
        let itf = b.upload(&s, &wave(items * factors, 29))?;
        let ub = b.upload(&s, &wave(users, 30))?;
        let ib = b.upload(&s, &wave(items, 31))?;
        let gb = b.upload(&s, &[0.3])?;
        let t = MfTables {
            user_factors: &uf,
            item_factors: &itf,
            user_bias: &ub,
            item_bias: &ib,
            global_bias: &gb,
        };
        let mut y = b.alloc(&s, batch)?;
        b.matrix_factorization(&s, &ids, &t, &mut y, batch, factors)?;
        keep("matrix_factorization".into(), &y)?;
    }
    {
        let dims = [2, 17, 4, 8];
        let x = b.upload(&s, &wave(dims.iter().product(), 32))?;
        let mut y = b.alloc(&s, dims.iter().product())?;
        b.transpose_0213(&s, &x, &mut y, dims)?;
        keep("transpose_0213".into(), &y)?;
    }
    for act in [Act::Relu, Act::Tanh, Act::Gelu, Act::Sigmoid] {
        let n = 5000;
        let z = b.upload(&s, &wave(n, 33).iter().map(|v| v * 3.0).collect::<Vec<_>>())?;
        let mut g = b.upload(&s, &wave(n, 34))?;
        b.act_backward(&s, &z, &mut g, n, act)?;
        keep(format!("act_backward {act:?}"), &g)?;
    }
    for (loss, cols) in [
        (Loss::CrossEntropy, 10),
        (Loss::Mse, 1),
        (Loss::BinaryLogistic, 1),
    ] {
        let rows = 300;
        let out = b.upload(
            &s,
            &wave(rows * cols, 35)
                .iter()
                .map(|v| v * 5.0)
                .collect::<Vec<_>>(),
        )?;
        let targets: Vec<f32> = match loss {
            Loss::CrossEntropy => (0..rows).map(|r| (r % cols) as f32).collect(),
            Loss::Mse => wave(rows, 36),
            Loss::BinaryLogistic => (0..rows).map(|r| (r % 2) as f32).collect(),
        };
        let targets = b.upload(&s, &targets)?;
        let mut grad = b.alloc(&s, rows * cols)?;
        let mut row_loss = b.alloc(&s, rows)?;
        b.loss_grad(
            &s,
            loss,
            &out,
            &targets,
            &mut grad,
            &mut row_loss,
            rows,
            cols,
        )?;
        keep(format!("{loss:?} gradient"), &grad)?;
        keep(format!("{loss:?} row losses"), &row_loss)?;
    }
    Ok(out)
}
