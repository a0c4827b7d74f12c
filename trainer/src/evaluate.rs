//! Test-split metrics of a job: accuracy (classification), RMSE (regression, ratings) and ROC AUC
//! (binary classification). Accuracy and RMSE come from the model zoo's evaluation loop; AUC is
//! computed here from the scores with the rank-sum (Mann–Whitney U) formula, ties averaged.

use candle_core::{DType, Tensor};
use cumulus_models::Model;
use cumulus_models::blocks::BATCH_NORM_MOMENTUM;
use cumulus_models::loss::Loss;
use cumulus_models::train::{Metric, evaluate};
use serde::Serialize;

use crate::TrainerError;

/// Examples evaluated per forward pass.
const EVAL_BATCH: usize = 1024;

/// Which metric a job reports, from its loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobMetric {
    Accuracy,
    Rmse,
    Auc,
}

impl JobMetric {
    pub fn for_loss(loss: Loss) -> Self {
        match loss {
            Loss::CrossEntropy => Self::Accuracy,
            Loss::BinaryLogistic => Self::Auc,
            Loss::Mse => Self::Rmse,
        }
    }

    /// The key in metrics.json: `test_accuracy`, `test_rmse`, `test_auc`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Accuracy => "test_accuracy",
            Self::Rmse => "test_rmse",
            Self::Auc => "test_auc",
        }
    }

    /// Whether `value` meets `target` (RMSE falls, the others rise).
    pub fn reached(self, value: f64, target: f64) -> bool {
        match self {
            Self::Rmse => value <= target,
            Self::Accuracy | Self::Auc => value >= target,
        }
    }
}

/// `metric` of `model` on `(x, y)`.
pub fn measure(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    metric: JobMetric,
) -> Result<f64, TrainerError> {
    Ok(match metric {
        JobMetric::Accuracy => evaluate(model, x, y, Metric::Accuracy, EVAL_BATCH)?,
        JobMetric::Rmse => evaluate(model, x, y, Metric::Rmse, EVAL_BATCH)?,
        JobMetric::Auc => {
            let n = x.dims().first().copied().unwrap_or(0);
            let mut scores = Vec::with_capacity(n);
            let mut start = 0;
            while start < n {
                let len = EVAL_BATCH.min(n - start);
                let out = model.forward_t(&x.narrow(0, start, len)?, false)?;
                scores.extend(out.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
                start += len;
            }
            let labels = y.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            roc_auc(&scores, &labels).ok_or_else(|| {
                TrainerError::Data("AUC needs both classes in the test split".into())
            })?
        }
    })
}

/// Training examples whose statistics become BatchNorm's running statistics before a measure.
pub const BATCH_NORM_CALIBRATION_EXAMPLES: usize = 256;

/// Re-estimates every BatchNorm running mean and variance of `model` from the first
/// [`BATCH_NORM_CALIBRATION_EXAMPLES`] rows of `train_x` (one batch in training mode), as
/// PyTorch's `torch.optim.swa_utils.update_bn` does for averaged weights. Returns whether the
/// model has any.
///
/// Running statistics are buffers, not parameters: they never travel through the parameter store,
/// so the weights pulled from it come with the coordinator's initial statistics (mean 0,
/// variance 1), which a ResNet was never trained with: measured or saved with those, its
/// activations are normalized with the wrong scale.
/// In training mode every BatchNorm normalizes with its batch's own statistics, so one forward
/// pass from zeroed buffers leaves `momentum * statistic` in each, whatever the layer's depth.
pub fn recalibrate_batch_norm(model: &Model, train_x: &Tensor) -> Result<bool, TrainerError> {
    let stats: Vec<_> = model
        .named_vars(false)
        .into_iter()
        .filter(|(name, _)| name.ends_with(".running_mean") || name.ends_with(".running_var"))
        .collect();
    let n = train_x
        .dims()
        .first()
        .copied()
        .unwrap_or(0)
        .min(BATCH_NORM_CALIBRATION_EXAMPLES);
    // The unbiased variance of a single example is undefined.
    if stats.is_empty() || n < 2 {
        return Ok(false);
    }
    for (_, var) in &stats {
        var.set(&var.as_tensor().zeros_like()?)?;
    }
    model.forward_t(&train_x.narrow(0, 0, n)?, true)?;
    for (_, var) in &stats {
        var.set(&(var.as_tensor() / BATCH_NORM_MOMENTUM)?)?;
    }
    Ok(true)
}

/// ROC AUC of `scores` against 0/1 `labels`; `None` when a class is missing or lengths differ.
pub fn roc_auc(scores: &[f64], labels: &[f64]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over runs of equal scores.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l > 0.5)
        .map(|(r, _)| r)
        .sum();
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values by the pairwise definition (share of positive/negative pairs ranked right,
    /// ties counting one half), as `sklearn.metrics.roc_auc_score` defines it:
    /// - scores [0.1, 0.4, 0.35, 0.8], labels [0, 0, 1, 1]: pairs won 1 + 2 of 4 = 0.75;
    /// - scores [0.5, 0.5, 0.2, 0.9, 0.1], labels [0, 1, 0, 1, 1]: (0.5 + 1) + 2 + 0 of 6 = 7/12.
    #[test]
    fn auc_matches_scikit_learn() {
        let a = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((a - 0.75).abs() < 1e-12);
        let b = roc_auc(&[0.5, 0.5, 0.2, 0.9, 0.1], &[0.0, 1.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((b - 7.0 / 12.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.1, 0.2], &[1.0, 1.0]), None);
        assert_eq!(roc_auc(&[0.1], &[1.0, 0.0]), None);
    }

    #[test]
    fn batch_norm_statistics_are_those_of_the_calibration_batch() {
        use candle_core::Device;
        use cumulus_models::ModelConfig;

        let cfg: ModelConfig = serde_json::from_str(
            r#"{"arch":"resnet","depth":18,"n_classes":3,"in_channels":1,"image_size":8}"#,
        )
        .unwrap();
        let model = Model::with_seed(&cfg, &Device::Cpu, 0).unwrap();
        // Inputs far from the initial statistics (mean 0, variance 1) of the BatchNorms.
        let x = (Tensor::randn(0f32, 1.0, (16, 1, 8, 8), &Device::Cpu).unwrap() + 2.0).unwrap();
        assert!(recalibrate_batch_norm(&model, &x).unwrap());
        // With the batch's own statistics, eval mode computes on that batch what training mode
        // does (up to the unbiased variance); with the initial ones it would be far off.
        let eval = model.forward_range(0, 0, &x, false).unwrap();
        let train = model.forward_range(0, 0, &x, true).unwrap();
        let diff = (eval - train)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 0.05, "eval and train mode differ by {diff}");
        // A model without BatchNorm is left alone.
        let mlp = Model::with_seed(&ModelConfig::default_for("mlp").unwrap(), &Device::Cpu, 0);
        let flat = Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(!recalibrate_batch_norm(&mlp.unwrap(), &flat).unwrap());
    }

    #[test]
    fn targets_point_the_right_way() {
        assert!(JobMetric::Rmse.reached(0.9, 0.95));
        assert!(!JobMetric::Rmse.reached(1.0, 0.95));
        assert!(JobMetric::Accuracy.reached(0.96, 0.95));
        assert!(!JobMetric::Auc.reached(0.8, 0.88));
    }
}
