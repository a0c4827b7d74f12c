//! Every CPU-backend operation against candle's result on the same data (the zoo's own blocks
//! where the zoo has one), within 1e-5 relative.

use candle_core::{D, DType, Device, Tensor, Var};
use cumulus_gpu::Priority;
use cumulus_gpu::backend::cpu::{CpuBackend, CpuStream};
use cumulus_gpu::backend::{Act, Backend, BnParams, ConvGeom, GemmSpec};
use cumulus_models::Loss;
use cumulus_models::blocks::{self, Activation, BatchNorm2d, Conv2d, LayerNorm};

use crate::common::{rel_err, wave};

const TOL: f32 = 1e-5;

fn cpu() -> (CpuBackend, CpuStream) {
    let b = CpuBackend::new();
    let s = b.new_stream(Priority::Normal).expect("cpu stream");
    (b, s)
}

fn t(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).expect("tensor")
}

fn flat(x: &Tensor) -> Vec<f32> {
    x.flatten_all()
        .and_then(|f| f.to_vec1::<f32>())
        .expect("f32 tensor")
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let e = rel_err(got, want);
    println!("cpu op {what}: relative error {e:.2e}");
    assert!(e <= TOL, "{what}: relative error {e} over {TOL}");
}

#[test]
fn gemm_matches_candle_matmul_for_every_transpose_and_batching() {
    let (b, s) = cpu();
    let (m, n, k) = (7, 5, 9);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = wave(m * k, 1);
        let bm = wave(k * n, 2);
        let c0 = wave(m * n, 3);
        let at = if ta {
            t(&a, &[k, m]).t().expect("t")
        } else {
            t(&a, &[m, k])
        };
        let bt = if tb {
            t(&bm, &[n, k]).t().expect("t")
        } else {
            t(&bm, &[k, n])
        };
        let want = ((at.matmul(&bt).expect("matmul") * 0.5).expect("scale")
            + (t(&c0, &[m, n]) * 2.0).expect("scale"))
        .expect("sum");
        let mut c = c0.clone();
        let g = GemmSpec {
            trans_a: ta,
            trans_b: tb,
            alpha: 0.5,
            beta: 2.0,
            ..GemmSpec::new(m, n, k)
        };
        b.gemm(&s, &g, &a, &bm, &mut c).expect("gemm");
        check(&format!("gemm ta={ta} tb={tb}"), &c, &flat(&want));
    }
    // A batch sharing one left matrix (a convolution's weights).
    let batch = 3;
    let a = wave(m * k, 4);
    let bm = wave(batch * k * n, 5);
    let mut c = vec![0.0; batch * m * n];
    let g = GemmSpec {
        batch,
        stride_a: 0,
        stride_b: k * n,
        stride_c: m * n,
        ..GemmSpec::new(m, n, k)
    };
    b.gemm(&s, &g, &a, &bm, &mut c).expect("gemm");
    let want = t(&a, &[m, k])
        .broadcast_matmul(&t(&bm, &[batch, k, n]))
        .expect("matmul");
    check("gemm batched, shared A", &c, &flat(&want));
}

#[test]
fn activations_and_bias_match_the_zoo() {
    let (b, s) = cpu();
    let (outer, dim, inner) = (3, 4, 5);
    let x = wave(outer * dim * inner, 6);
    let bias = wave(dim, 7);
    for (act, zoo) in [
        (Act::Relu, Activation::Relu),
        (Act::Tanh, Activation::Tanh),
        (Act::Gelu, Activation::Gelu),
        (Act::Sigmoid, Activation::Sigmoid),
    ] {
        let mut y = x.iter().map(|v| v * 3.0).collect::<Vec<_>>();
        b.bias_act(&s, &mut y, Some(&bias), [outer, dim, inner], act)
            .expect("bias_act");
        let xt = (t(&x, &[outer, dim, inner]) * 3.0).expect("scale");
        let want = zoo
            .forward(&xt.broadcast_add(&t(&bias, &[1, dim, 1])).expect("add"))
            .expect("act");
        check(&format!("bias_act {act:?}"), &y, &flat(&want));
    }
    let mut sum = x.clone();
    let y = wave(x.len(), 8);
    b.add_act(&s, &mut sum, &y, x.len(), Act::Relu)
        .expect("add_act");
    let want = (t(&x, &[x.len()]) + t(&y, &[x.len()]))
        .and_then(|v| v.relu())
        .expect("relu");
    check("add_act relu", &sum, &flat(&want));
}

#[test]
fn softmax_and_layer_norm_match_the_zoo() {
    let (b, s) = cpu();
    let (rows, cols) = (6, 11);
    let x: Vec<f32> = wave(rows * cols, 9).iter().map(|v| v * 4.0).collect();
    let mut y = x.clone();
    b.softmax_rows(&s, &mut y, rows, cols).expect("softmax");
    let want = blocks::softmax_last_dim(&t(&x, &[rows, cols])).expect("softmax");
    check("softmax_rows", &y, &flat(&want));

    let w = wave(cols, 10);
    let bias = wave(cols, 11);
    let mut out = vec![0.0; rows * cols];
    b.layer_norm(&s, &x, &mut out, &w, &bias, rows, cols, 1e-5)
        .expect("layer_norm");
    let ln = LayerNorm {
        weight: t(&w, &[cols]),
        bias: t(&bias, &[cols]),
        eps: 1e-5,
    };
    let want = ln.forward(&t(&x, &[rows, cols])).expect("layer norm");
    check("layer_norm", &out, &flat(&want));
}

#[test]
fn convolution_batch_norm_and_pooling_match_the_zoo() {
    let (b, s) = cpu();
    let (n, c, h, w, co) = (2, 3, 9, 7, 4);
    let x = wave(n * c * h * w, 12);
    for (k, pad, stride) in [(3, 1, 1), (5, 2, 1), (3, 1, 2), (1, 0, 2), (5, 0, 1)] {
        let weight = wave(co * c * k * k, 13);
        let bias = wave(co, 14);
        let g = ConvGeom::new([n, c, h, w], k, pad, stride).expect("fits");
        let mut cols = vec![0.0; n * g.col_rows() * g.col_cols()];
        b.im2col(&s, &x, &mut cols, &g).expect("im2col");
        let mut y = vec![0.0; n * co * g.col_cols()];
        let spec = GemmSpec {
            batch: n,
            stride_a: 0,
            stride_b: g.col_rows() * g.col_cols(),
            stride_c: co * g.col_cols(),
            ..GemmSpec::new(co, g.col_cols(), g.col_rows())
        };
        b.gemm(&s, &spec, &weight, &cols, &mut y).expect("gemm");
        b.bias_act(
            &s,
            &mut y,
            Some(&bias),
            [n, co, g.col_cols()],
            Act::Identity,
        )
        .expect("bias");
        let conv = Conv2d {
            weight: t(&weight, &[co, c, k, k]),
            bias: Some(t(&bias, &[co])),
            padding: pad,
            stride,
        };
        let want = conv.forward(&t(&x, &[n, c, h, w])).expect("conv");
        assert_eq!(want.dims(), &[n, co, g.oh, g.ow]);
        check(
            &format!("conv k={k} pad={pad} stride={stride}"),
            &y,
            &flat(&want),
        );
    }

    let mean = wave(c, 15);
    let var: Vec<f32> = wave(c, 16).iter().map(|v| v.abs() + 0.5).collect();
    let gamma = wave(c, 17);
    let beta = wave(c, 18);
    let mut y = x.clone();
    let p = BnParams {
        mean: &mean,
        var: &var,
        weight: &gamma,
        bias: &beta,
        eps: 1e-5,
    };
    b.batch_norm(&s, &mut y, &p, [n, c, h * w], Act::Relu)
        .expect("batch norm");
    let bn = BatchNorm2d {
        weight: t(&gamma, &[c]),
        bias: t(&beta, &[c]),
        running_mean: Var::from_tensor(&t(&mean, &[c])).expect("var"),
        running_var: Var::from_tensor(&t(&var, &[c])).expect("var"),
        eps: 1e-5,
        momentum: 0.1,
    };
    let want = bn
        .forward_t(&t(&x, &[n, c, h, w]), false)
        .and_then(|v| v.relu())
        .expect("bn");
    check("batch_norm eval + relu", &y, &flat(&want));

    let mut pooled = vec![0.0; n * c * (h / 2) * (w / 2)];
    b.max_pool2x2(&s, &x, &mut pooled, [n * c, h, w])
        .expect("pool");
    let want = blocks::max_pool2x2(&t(&x, &[n, c, h, w])).expect("pool");
    check("max_pool2x2 (odd sizes)", &pooled, &flat(&want));
}

#[test]
fn reductions_gathers_and_transposes_match_candle() {
    let (b, s) = cpu();
    let (o, d, i) = (3, 5, 4);
    let x = wave(o * d * i, 19);
    let mut y = vec![0.0; o * i];
    b.reduce_axis(&s, &x, &mut y, [o, d, i], 0.25)
        .expect("reduce");
    let want = (t(&x, &[o, d, i]).sum(1).expect("sum") * 0.25).expect("scale");
    check("reduce_axis", &y, &flat(&want));

    let (vocab, dm, batch, seq) = (13, 6, 2, 4);
    let table = wave(vocab * dm, 20);
    let pos = wave(seq * dm, 21);
    let ids: Vec<u32> = (0..batch * seq).map(|j| (j * 5 % vocab) as u32).collect();
    let ids_f: Vec<f32> = ids.iter().map(|&v| v as f32).collect();
    let mut out = vec![0.0; batch * seq * dm];
    b.embedding(&s, &ids_f, &table, &pos, &mut out, batch * seq, seq, dm)
        .expect("embedding");
    let idt = Tensor::from_slice(&ids, (batch, seq), &Device::Cpu).expect("ids");
    let want = blocks::gather_rows(&t(&table, &[vocab, dm]), &idt)
        .and_then(|r| r.broadcast_add(&t(&pos, &[seq, dm])))
        .expect("gather");
    check("embedding", &out, &flat(&want));

    let dims = [2, 3, 4, 5];
    let x = wave(120, 22);
    let mut y = vec![0.0; 120];
    b.transpose_0213(&s, &x, &mut y, dims).expect("transpose");
    let want = t(&x, &dims)
        .transpose(1, 2)
        .and_then(|v| v.contiguous())
        .expect("transpose");
    check("transpose_0213", &y, &flat(&want));
}

#[test]
fn activation_gradients_match_candle_autograd() {
    let (b, s) = cpu();
    let z: Vec<f32> = wave(40, 23).iter().map(|v| v * 3.0).collect();
    let upstream = wave(40, 24);
    for (act, zoo) in [
        (Act::Relu, Activation::Relu),
        (Act::Tanh, Activation::Tanh),
        (Act::Gelu, Activation::Gelu),
        (Act::Sigmoid, Activation::Sigmoid),
    ] {
        let mut g = upstream.clone();
        b.act_backward(&s, &z, &mut g, z.len(), act)
            .expect("backward");
        let var = Var::from_tensor(&t(&z, &[z.len()])).expect("var");
        let loss = zoo
            .forward(var.as_tensor())
            .and_then(|y| y.mul(&t(&upstream, &[z.len()])))
            .and_then(|y| y.sum_all())
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let want = grads.get(var.as_tensor()).expect("gradient");
        check(&format!("act_backward {act:?}"), &g, &flat(want));
    }
}

#[test]
fn losses_and_their_gradients_match_the_zoo() {
    let (b, s) = cpu();
    let rows = 6;
    for (loss, cols) in [
        (Loss::CrossEntropy, 4),
        (Loss::Mse, 1),
        (Loss::BinaryLogistic, 1),
    ] {
        let out: Vec<f32> = wave(rows * cols, 25).iter().map(|v| v * 5.0).collect();
        let targets: Vec<f32> = match loss {
            Loss::CrossEntropy => (0..rows).map(|r| (r % cols) as f32).collect(),
            Loss::Mse => wave(rows, 26),
            Loss::BinaryLogistic => (0..rows).map(|r| (r % 2) as f32).collect(),
        };
        let mut grad = vec![0.0; rows * cols];
        let mut row_loss = vec![0.0; rows];
        b.loss_grad(
            &s,
            loss,
            &out,
            &targets,
            &mut grad,
            &mut row_loss,
            rows,
            cols,
        )
        .expect("loss");
        let mean: f32 = row_loss.iter().sum::<f32>() / rows as f32;
        let var = Var::from_tensor(&t(&out, &[rows, cols])).expect("var");
        let l = loss
            .compute(var.as_tensor(), &t(&targets, &[rows]))
            .expect("zoo loss");
        let want_loss = l
            .to_dtype(DType::F32)
            .and_then(|v| v.to_scalar::<f32>())
            .expect("scalar");
        let grads = l.backward().expect("backward");
        let want = grads.get(var.as_tensor()).expect("gradient");
        check(&format!("{loss:?} value"), &[mean], &[want_loss]);
        check(&format!("{loss:?} gradient"), &grad, &flat(want));
    }
    // The row softmax the cross-entropy gradient is built on sums to 1.
    let x = t(&wave(8, 27), &[2, 4]);
    let sm = blocks::softmax_last_dim(&x)
        .and_then(|v| v.sum(D::Minus1))
        .expect("sum");
    check("softmax rows sum", &flat(&sm), &[1.0, 1.0]);
}

#[test]
fn the_device_suite_runs_on_the_cpu() {
    // The suite `cuda.rs` compares against CUDA must itself run: checked here, in CI.
    let out = crate::suite::op_suite(&CpuBackend::new()).expect("suite runs");
    assert!(out.len() > 50, "{} checks", out.len());
    for (name, v) in &out {
        assert!(!v.is_empty() && v.iter().all(|x| x.is_finite()), "{name}");
    }
}
