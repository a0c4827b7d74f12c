//! Training losses, each the mean over the batch.
//!
//! * [`Loss::CrossEntropy`]: logits `[batch, classes]`, targets class indices `[batch]` (any
//!   numeric dtype; f32 labels from a [`Dataset`](crate::data::Dataset) work as they are);
//! * [`Loss::BinaryLogistic`]: logits `[batch]` or `[batch, 1]`, targets 0/1 `[batch]`; computed as
//!   `max(x, 0) - x*y + log(1 + exp(-|x|))`, stable for large logits (PyTorch's
//!   `binary_cross_entropy_with_logits`);
//! * [`Loss::Mse`]: predictions `[batch]` or `[batch, 1]`, targets `[batch]`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cumulus_models::loss::Loss;
//!
//! let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 2.0]], &Device::Cpu)?;
//! let y = Tensor::new(&[0.0f32, 1.0], &Device::Cpu)?;
//! let l = Loss::CrossEntropy.compute(&logits, &y)?.to_scalar::<f32>()?;
//! assert!((l - 0.126_928).abs() < 1e-5);
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A loss function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    CrossEntropy,
    BinaryLogistic,
    Mse,
}

impl Loss {
    /// Mean loss of `output` against `targets` (a scalar tensor that `backward` can start from).
    pub fn compute(self, output: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let batch = output.dims().first().copied().unwrap_or(0);
        if targets.dims() != [batch] {
            return Err(ModelError::Training(format!(
                "{self:?}: targets must have shape [{batch}] for output {:?}, got {:?}",
                output.dims(),
                targets.dims()
            )));
        }
        match self {
            Self::CrossEntropy => {
                if output.rank() != 2 {
                    return Err(ModelError::Training(format!(
                        "cross-entropy needs logits [batch, classes], got {:?}",
                        output.dims()
                    )));
                }
                let classes = output.dim(1)?;
                let labels = targets.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                if let Some(bad) = labels
                    .iter()
                    .find(|&&l| !(l >= 0.0 && l < classes as f64 && l.fract() == 0.0))
                {
                    return Err(ModelError::Training(format!(
                        "label {bad} is not a class index in [0, {classes})"
                    )));
                }
                let labels = targets.to_dtype(DType::U32)?;
                // log-softmax written with plain ops so it differentiates for every float dtype.
                let max = output.max_keepdim(D::Minus1)?.detach();
                let shifted = output.broadcast_sub(&max)?;
                let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
                let log_probs = shifted.broadcast_sub(&lse)?;
                let picked = log_probs.gather(&labels.unsqueeze(1)?, 1)?;
                Ok(picked.mean_all()?.neg()?)
            }
            Self::BinaryLogistic => {
                let x = single_column(self, output, batch)?;
                let y = targets.to_dtype(x.dtype())?;
                let loss = ((x.relu()? - (&x * &y)?)? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                Ok(loss.mean_all()?)
            }
            Self::Mse => {
                let x = single_column(self, output, batch)?;
                let y = targets.to_dtype(x.dtype())?;
                Ok((x - y)?.sqr()?.mean_all()?)
            }
        }
    }
}

/// `[batch]` view of an output that is `[batch]` or `[batch, 1]`.
fn single_column(loss: Loss, output: &Tensor, batch: usize) -> Result<Tensor> {
    match output.dims() {
        [_] => Ok(output.clone()),
        [_, 1] => Ok(output.reshape(batch)?),
        other => Err(ModelError::Training(format!(
            "{loss:?} needs one output per example ([batch] or [batch, 1]), got {other:?}"
        ))),
    }
}
