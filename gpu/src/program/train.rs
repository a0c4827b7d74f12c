//! One training step of a dense program (MLP, dense logistic regression): forward keeping each
//! layer's input and pre-activation, the loss and its gradient ([`Loss`], batch mean, as
//! `cumulus_models::loss`), and the backward pass to the gradient of every weight and bias.
//!
//! With `X` a layer's input, `Z = X W^T + b` and `Y = act(Z)`, and `G = dL/dY`:
//! `dL/dZ = G * act'(Z)`, `dW = (dL/dZ)^T X`, `db = sum over rows of dL/dZ`,
//! `dL/dX = (dL/dZ) W` (the next layer down's `G`).

use cumulus_models::Loss;

use crate::backend::{Act, Backend, GemmSpec};
use crate::error::{GpuError, Result};
use crate::program::Program;
use crate::program::exec::{Exec, Tracked, prod};
use crate::program::layers::{LayerOp, linear};
use crate::tensor::HostTensor;

/// The device buffers of a finished step: the mean loss (one element) and one gradient per
/// parameter, in [`Program::params`] order.
pub struct StepBuffers<B: Backend> {
    pub loss: Tracked<B>,
    pub grads: Vec<Tracked<B>>,
}

/// Checks targets against the program's output `[rows, cols]` for `loss`.
pub fn check_targets(
    layer: &str,
    loss: Loss,
    out: &[usize],
    targets: &HostTensor,
) -> Result<Vec<f32>> {
    let rows = out.first().copied().unwrap_or(0);
    let cols: usize = out.iter().skip(1).product();
    if targets.shape() != [rows] {
        return Err(GpuError::bad_input(
            layer,
            format!(
                "targets must have shape [{rows}] for output {out:?}, got {:?}",
                targets.shape()
            ),
        ));
    }
    let values = targets.to_f32_vec();
    match loss {
        Loss::CrossEntropy => {
            if let Some(bad) = values
                .iter()
                .find(|&&l| !(l >= 0.0 && l < cols as f32 && l.fract() == 0.0))
            {
                return Err(GpuError::bad_input(
                    layer,
                    format!("label {bad} is not a class index in [0, {cols})"),
                ));
            }
        }
        Loss::Mse | Loss::BinaryLogistic => {
            if cols != 1 {
                return Err(GpuError::bad_input(
                    layer,
                    format!("{loss:?} needs one output per example, got {out:?}"),
                ));
            }
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(GpuError::bad_input(
                    layer,
                    format!("target {bad} is not finite"),
                ));
            }
        }
    }
    Ok(values)
}

/// The dense layer's sizes, or an error for any other kind (see [`Program::check_trainable`]).
fn dense(op: &LayerOp) -> Result<(usize, usize, Act)> {
    match *op {
        LayerOp::Dense {
            fan_in,
            fan_out,
            act,
            ..
        } => Ok((fan_in, fan_out, act)),
        _ => Err(GpuError::Device(
            "internal: train step of a non-dense layer".into(),
        )),
    }
}

/// Runs one step on `x` with `targets`; `weights` as in [`Program::forward`].
pub fn train_step<B: Backend>(
    program: &Program,
    ex: &Exec<'_, B>,
    weights: &[&B::Buf],
    x: &HostTensor,
    targets: &HostTensor,
    loss: Loss,
) -> Result<StepBuffers<B>> {
    program.check_trainable()?;
    if weights.len() != program.params().count() {
        return Err(GpuError::Device(format!(
            "internal: {} weights for {} parameters",
            weights.len(),
            program.params().count()
        )));
    }
    let out_shape = program.check_input(x)?;
    let last = &program.layers().last().expect("a program has a layer").name;
    let labels = check_targets(last, loss, &out_shape, targets)?;
    let rows = x.shape()[0];

    // Forward, keeping what the backward pass reads.
    struct Saved<B: Backend> {
        input: Tracked<B>,
        pre: Option<Tracked<B>>,
    }
    let mut saved: Vec<Saved<B>> = Vec::new();
    let mut current = ex.upload(&x.to_f32_vec())?;
    let mut offset = 0;
    for layer in program.layers() {
        let (fan_in, fan_out, act) = dense(&layer.op)?;
        let (w, b) = (weights[offset], weights[offset + 1]);
        offset += layer.params.len();
        let z = linear(ex, &current, rows, w, b, fan_in, fan_out, Act::Identity)?;
        let (y, pre) = if act == Act::Identity {
            (z, None)
        } else {
            let mut y = ex.alloc(prod(&[rows, fan_out])?)?;
            ex.copy(&z, &mut y)?;
            ex.bias_act(&mut y, None, [rows, fan_out, 1], act)?;
            (y, Some(z))
        };
        saved.push(Saved {
            input: current,
            pre,
        });
        current = y;
    }

    // Loss and its gradient with respect to the output.
    let cols = out_shape[1];
    let target_buf = ex.upload(&labels)?;
    let mut grad = ex.alloc(prod(&[rows, cols])?)?;
    let mut row_loss = ex.alloc(rows)?;
    ex.loss_grad(
        loss,
        &current,
        &target_buf,
        &mut grad,
        &mut row_loss,
        rows,
        cols,
    )?;
    let mut loss_buf = ex.alloc(1)?;
    ex.reduce_axis(&row_loss, &mut loss_buf, [1, rows, 1], 1.0 / rows as f32)?;
    drop((current, target_buf, row_loss));

    // Backward, last layer first.
    let mut grads: Vec<Option<Tracked<B>>> = (0..weights.len()).map(|_| None).collect();
    let mut offset = weights.len();
    for (i, layer) in program.layers().iter().enumerate().rev() {
        let (fan_in, fan_out, act) = dense(&layer.op)?;
        offset -= layer.params.len();
        let s = saved.pop().expect("one saved entry per layer");
        if let Some(z) = &s.pre {
            ex.act_backward(z, &mut grad, rows * fan_out, act)?;
        }
        let mut dw = ex.alloc(prod(&[fan_out, fan_in])?)?;
        let spec = GemmSpec {
            trans_a: true,
            ..GemmSpec::new(fan_out, fan_in, rows)
        };
        ex.gemm(&spec, &grad, &s.input, &mut dw)?;
        let mut db = ex.alloc(fan_out)?;
        ex.reduce_axis(&grad, &mut db, [1, rows, fan_out], 1.0)?;
        if i > 0 {
            let mut below = ex.alloc(prod(&[rows, fan_in])?)?;
            ex.gemm(
                &GemmSpec::new(rows, fan_in, fan_out),
                &grad,
                weights[offset],
                &mut below,
            )?;
            grad = below;
        }
        grads[offset] = Some(dw);
        grads[offset + 1] = Some(db);
    }
    let grads = grads
        .into_iter()
        .map(|g| g.ok_or_else(|| GpuError::Device("internal: a gradient was not computed".into())))
        .collect::<Result<Vec<_>>>()?;
    Ok(StepBuffers {
        loss: loss_buf,
        grads,
    })
}
