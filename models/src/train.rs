//! A small in-process training loop: shuffled minibatches over in-memory `(x, y)` tensors, a
//! [`Loss`] and an optimizer; plus [`evaluate`] for held-out accuracy or RMSE. The distributed
//! trainer runs the same forward/backward/step per worker; this loop is for examples, tests and
//! single-process baselines.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cumulus_models::loss::Loss;
//! use cumulus_models::optim::OptimizerConfig;
//! use cumulus_models::train::{FitOptions, Metric, evaluate, fit};
//! use cumulus_models::{Model, ModelConfig};
//!
//! let cfg: ModelConfig = serde_json::from_str(r#"{"arch":"logreg","n_features":1,"n_outputs":1}"#).unwrap();
//! let model = Model::new(&cfg, &Device::Cpu)?;
//! let x = Tensor::new(&[[-2.0f32], [-1.0], [1.0], [2.0]], &Device::Cpu)?;
//! let y = Tensor::new(&[0.0f32, 0.0, 1.0, 1.0], &Device::Cpu)?;
//! let mut opt = OptimizerConfig::Sgd { lr: 0.5, momentum: 0.0, nesterov: false, weight_decay: 0.0 }
//!     .build(model.vars())?;
//! let opts = FitOptions { epochs: 20, batch_size: 2, seed: 1 };
//! let losses = fit(&model, &x, &y, Loss::BinaryLogistic, opt.as_mut(), &opts)?;
//! assert!(losses[19] < losses[0]);
//! assert_eq!(evaluate(&model, &x, &y, Metric::Accuracy, 4)?, 1.0);
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

use candle_core::{D, DType, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{ModelError, Result};
use crate::loss::Loss;
use crate::model::Model;
use crate::optim::Optimize;

/// How [`fit`] iterates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// Seeds the per-epoch shuffles: the same seed visits the examples in the same order.
    pub seed: u64,
}

/// What [`evaluate`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Fraction of examples whose arg-max logit (or, for one output, `logit > 0`) equals the label.
    Accuracy,
    /// Root mean squared error of a single-output model.
    Rmse,
}

fn check_xy(x: &Tensor, y: &Tensor, batch_size: usize) -> Result<usize> {
    let n = x.dims().first().copied().unwrap_or(0);
    if y.dims() != [n] {
        return Err(ModelError::Training(format!(
            "labels must have shape [{n}] to match {} examples, got {:?}",
            n,
            y.dims()
        )));
    }
    if n == 0 {
        return Err(ModelError::Training("no examples".into()));
    }
    if batch_size == 0 {
        return Err(ModelError::Training("batch_size must be at least 1".into()));
    }
    Ok(n)
}

/// Train `model` on `(x, y)`; returns the mean training loss of each epoch.
pub fn fit(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    loss: Loss,
    optimizer: &mut dyn Optimize,
    options: &FitOptions,
) -> Result<Vec<f64>> {
    let n = check_xy(x, y, options.batch_size)?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut history = Vec::with_capacity(options.epochs);
    for _ in 0..options.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for chunk in order.chunks(options.batch_size) {
            let idx = Tensor::from_slice(chunk, chunk.len(), x.device())?;
            let xb = x.index_select(&idx, 0)?;
            let yb = y.index_select(&idx, 0)?;
            let out = model.forward_t(&xb, true)?;
            let l = loss.compute(&out, &yb)?;
            optimizer.step(&l.backward()?)?;
            total += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
        }
        history.push(total / n as f64);
    }
    Ok(history)
}

/// Measure `metric` of `model` (inference mode) on `(x, y)`, `batch_size` examples at a time.
pub fn evaluate(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    metric: Metric,
    batch_size: usize,
) -> Result<f64> {
    let n = check_xy(x, y, batch_size)?;
    let mut sum = 0.0;
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        let out = model.forward_t(&x.narrow(0, start, len)?, false)?;
        let yb = y.narrow(0, start, len)?.to_dtype(DType::F64)?;
        let out = out.to_dtype(DType::F64)?;
        sum += match (metric, out.dims()) {
            (Metric::Accuracy, [_, c]) if *c > 1 => {
                let pred = out.argmax(D::Minus1)?.to_dtype(DType::F64)?;
                pred.eq(&yb)?
                    .to_dtype(DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?
            }
            (Metric::Accuracy, [_] | [_, 1]) => {
                let pred = out.flatten_all()?.gt(0.0)?.to_dtype(DType::F64)?;
                pred.eq(&yb)?
                    .to_dtype(DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?
            }
            (Metric::Rmse, [_] | [_, 1]) => (out.flatten_all()? - yb)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?,
            (_, dims) => {
                return Err(ModelError::Training(format!(
                    "{metric:?} cannot be measured on outputs {dims:?}"
                )));
            }
        };
        start += len;
    }
    Ok(match metric {
        Metric::Accuracy => sum / n as f64,
        Metric::Rmse => (sum / n as f64).sqrt(),
    })
}
