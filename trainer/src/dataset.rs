//! The job's dataset, ready to train on: read from its source, split into train and test, turned
//! into tensors, and the training split cut into one shuffled partition per worker.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cumulus_models::ModelConfig;
use cumulus_models::data::{Dataset, Features, digits, load_path};
use cumulus_models::loss::Loss;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::TrainerError;
use crate::job::DataSpec;

/// Token ids above this lose precision as f32 features.
const MAX_EXACT_ID: f32 = 16_777_216.0;

/// The source name of the embedded scikit-learn digits.
pub const BUILTIN_DIGITS: &str = "builtin:digits";

/// Train and test tensors of a job.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: String,
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
}

impl Prepared {
    pub fn train_len(&self) -> usize {
        self.train_y.dims().first().copied().unwrap_or(0)
    }

    pub fn test_len(&self) -> usize {
        self.test_y.dims().first().copied().unwrap_or(0)
    }

    /// The features reshaped to the per-example input shape of a dense model (`logreg`, `mlp`,
    /// `lenet`, `resnet`) when the element counts agree: digits' 64 pixels become the `[1, 8, 8]`
    /// image a convolution takes, an `[1, 28, 28]` MNIST image the 784 features of an MLP; a count
    /// that does not fit is refused with both shapes named. For a `transformer` the features are
    /// token ids, cast to `UINT32` (sequences may be shorter than `max_seq_len`, so no reshape);
    /// ratings and sparse rows are left as read.
    pub fn shaped_for(self, config: &ModelConfig) -> Result<Self, TrainerError> {
        if matches!(config, ModelConfig::Transformer(_)) {
            return self.into_token_ids();
        }
        if !matches!(
            config,
            ModelConfig::Logreg(_)
                | ModelConfig::Mlp(_)
                | ModelConfig::Lenet(_)
                | ModelConfig::Resnet(_)
        ) {
            return Ok(self);
        }
        let input = config.input_shape(1);
        let want = &input[1..];
        let reshape = |x: &Tensor| -> Result<Tensor, TrainerError> {
            let (n, have) = match x.dims().split_first() {
                Some((&n, have)) => (n, have),
                None => return Ok(x.clone()),
            };
            if have == want {
                return Ok(x.clone());
            }
            if have.iter().product::<usize>() != want.iter().product::<usize>() {
                return Err(TrainerError::Data(format!(
                    "{}: examples of shape {have:?} do not fit the {} input {want:?}",
                    self.name,
                    config.arch()
                )));
            }
            let mut shape = vec![n];
            shape.extend_from_slice(want);
            Ok(x.reshape(shape)?)
        };
        let train_x = reshape(&self.train_x)?;
        let test_x = reshape(&self.test_x)?;
        Ok(Self {
            train_x,
            test_x,
            ..self
        })
    }

    /// Dense features that are token ids (a CSV of integers, one token per column) cast to the
    /// `UINT32` a transformer takes; a value that is not a whole number in `0..2^24` (beyond which
    /// f32 skips integers) is refused, so a float feature never silently becomes an id.
    fn into_token_ids(self) -> Result<Self, TrainerError> {
        let ids = |x: &Tensor| -> Result<Tensor, TrainerError> {
            if x.dtype() != DType::F32 {
                return Ok(x.clone());
            }
            let values = x.flatten_all()?.to_vec1::<f32>()?;
            if let Some(bad) = values
                .iter()
                .find(|v| !(v.fract() == 0.0 && (0.0..MAX_EXACT_ID).contains(*v)))
            {
                return Err(TrainerError::Data(format!(
                    "{}: the feature {bad} is not a token id (a whole number in 0..2^24)",
                    self.name
                )));
            }
            Ok(x.to_dtype(DType::U32)?)
        };
        let train_x = ids(&self.train_x)?;
        let test_x = ids(&self.test_x)?;
        Ok(Self {
            train_x,
            test_x,
            ..self
        })
    }

    /// The training split cut into `workers` partitions after a seeded shuffle; partition `k`
    /// holds every `workers`-th example from offset `k`.
    pub fn partitions(
        &self,
        workers: u32,
        seed: u64,
    ) -> Result<Vec<(Tensor, Tensor)>, TrainerError> {
        let n = self.train_len();
        let w = workers as usize;
        if w == 0 || n < w {
            return Err(TrainerError::Data(format!(
                "{}: {n} training examples cannot feed {workers} workers",
                self.name
            )));
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        (0..w)
            .map(|k| {
                let rows: Vec<u32> = order.iter().skip(k).step_by(w).copied().collect();
                let idx = Tensor::from_vec(rows.clone(), rows.len(), &Device::Cpu)?;
                Ok((
                    self.train_x.index_select(&idx, 0)?,
                    self.train_y.index_select(&idx, 0)?,
                ))
            })
            .collect()
    }
}

/// Where a `data.source` points.
pub fn source_path(source: &str) -> Result<PathBuf, TrainerError> {
    if let Some(rest) = source.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if source.contains("://") || source.starts_with("builtin:") {
        return Err(TrainerError::Data(format!(
            "data.source {source:?}: use {BUILTIN_DIGITS}, a local path or a file:// URL"
        )));
    }
    Ok(PathBuf::from(source))
}

fn tensors(ds: &Dataset) -> Result<(Tensor, Tensor), TrainerError> {
    let pair = match ds.features {
        Features::Sparse { .. } => ds.sparse_tensors(&Device::Cpu),
        _ => ds.dense_tensors(&Device::Cpu),
    };
    pair.map_err(|e| TrainerError::Data(e.to_string()))
}

/// The width of a model's output per example: 1 for `[batch]` or `[batch, 1]`.
fn output_width(model: &ModelConfig) -> usize {
    match model.outputs().first().map(|o| o.shape.as_slice()) {
        Some([_, w]) => usize::try_from(*w).unwrap_or(1),
        _ => 1,
    }
}

/// Checks that `loss` fits the model's output width, so a job that cannot train is refused
/// when it is read, not after its workers fail.
pub fn check_loss_fits(loss: Loss, model: &ModelConfig) -> Result<(), String> {
    let width = output_width(model);
    match loss {
        Loss::CrossEntropy if width < 2 => Err(format!(
            "cross_entropy needs at least 2 outputs (class logits), the model has {width}"
        )),
        Loss::BinaryLogistic | Loss::Mse if width != 1 => Err(format!(
            "{} needs one output per example, the model has {width} (n_outputs = 1)",
            match loss {
                Loss::Mse => "mse",
                _ => "binary_logistic",
            }
        )),
        _ => Ok(()),
    }
}

/// Checks every label of `data` (in file order, before any split) against the loss and the
/// model: a class index below the output width for cross-entropy, 0 or 1 for the logistic
/// loss, a finite number for MSE. The error names the file and the example.
pub fn check_labels(data: &Dataset, loss: Loss, model: &ModelConfig) -> Result<(), TrainerError> {
    let width = output_width(model);
    let bad = |i: usize, label: f32, why: String| {
        TrainerError::Data(format!(
            "{}: example {} (counting from 1, in file order) has label {label}: {why}",
            data.name,
            i + 1
        ))
    };
    for (i, &l) in data.labels.iter().enumerate() {
        match loss {
            Loss::CrossEntropy if !(l >= 0.0 && l.fract() == 0.0 && (l as usize) < width) => {
                return Err(bad(
                    i,
                    l,
                    format!("not a class index in [0, {width}) (the model's n_outputs)"),
                ));
            }
            Loss::BinaryLogistic if l != 0.0 && l != 1.0 => {
                return Err(bad(i, l, "binary_logistic needs 0 or 1".into()));
            }
            Loss::Mse if !l.is_finite() => {
                return Err(bad(i, l, "not a finite number".into()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads and splits the dataset of `spec`; `seed` fixes the split. With `check`, every label
/// is checked against the loss and the model first.
pub fn prepare(
    spec: &DataSpec,
    seed: u64,
    check: Option<(Loss, &ModelConfig)>,
) -> Result<Prepared, TrainerError> {
    let data = if spec.source == BUILTIN_DIGITS {
        digits::load()
    } else {
        load_path(source_path(&spec.source)?, spec.format)
    }
    .map_err(|e| TrainerError::Data(e.to_string()))?;
    if let Some((loss, model)) = check {
        check_labels(&data, loss, model)?;
    }
    let (train, test) = data
        .train_test_split(spec.test_fraction, seed)
        .map_err(|e| TrainerError::Data(e.to_string()))?;
    let (train_x, train_y) = tensors(&train)?;
    let (test_x, test_y) = tensors(&test)?;
    Ok(Prepared {
        name: data.name,
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits_spec() -> DataSpec {
        DataSpec {
            source: BUILTIN_DIGITS.into(),
            format: None,
            test_fraction: 0.25,
        }
    }

    #[test]
    fn digits_split_and_partition_cover_every_example_once() {
        let p = prepare(&digits_spec(), 3, None).unwrap();
        assert_eq!(p.train_len() + p.test_len(), 1797);
        let parts = p.partitions(3, 9).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|(x, _)| x.dims()[0]).collect();
        assert_eq!(sizes.iter().sum::<usize>(), p.train_len());
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // Every training label appears as often across the partitions as in the split.
        let mut all: Vec<f32> = parts
            .iter()
            .flat_map(|(_, y)| y.to_vec1::<f32>().unwrap())
            .collect();
        let mut expected = p.train_y.to_vec1::<f32>().unwrap();
        all.sort_by(f32::total_cmp);
        expected.sort_by(f32::total_cmp);
        assert_eq!(all, expected);
    }

    #[test]
    fn flat_digits_become_images_for_a_convolution_and_misfits_are_refused() {
        let p = prepare(&digits_spec(), 0, None).unwrap();
        let n = p.train_len();
        let resnet: ModelConfig = serde_json::from_str(
            r#"{"arch":"resnet","depth":18,"n_classes":10,"in_channels":1,"image_size":8}"#,
        )
        .unwrap();
        let images = p.clone().shaped_for(&resnet).unwrap();
        assert_eq!(images.train_x.dims(), &[n, 1, 8, 8]);
        assert_eq!(images.test_x.dims(), &[p.test_len(), 1, 8, 8]);
        // Row-major: pixel (row 1, column 0) is feature 8.
        let flat = p.train_x.get(0).unwrap().to_vec1::<f32>().unwrap();
        let img = images
            .train_x
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(1)
            .unwrap();
        assert_eq!(img.to_vec1::<f32>().unwrap()[0], flat[8]);
        // Back to flat for an MLP.
        let mlp = ModelConfig::default_for("mlp").unwrap();
        assert_eq!(images.shaped_for(&mlp).unwrap().train_x.dims(), &[n, 64]);
        let lenet = ModelConfig::default_for("lenet").unwrap();
        let err = p.clone().shaped_for(&lenet).unwrap_err().to_string();
        assert!(err.contains("[64]") && err.contains("[1, 28, 28]"), "{err}");
        // Scaled pixels are not token ids; the raw counts 0..16 of the committed file are.
        let tf = ModelConfig::default_for("transformer").unwrap();
        let err = p.shaped_for(&tf).unwrap_err().to_string();
        assert!(err.contains("not a token id"), "{err}");
        let raw = DataSpec {
            source: concat!(env!("CARGO_MANIFEST_DIR"), "/../models/data/digits.csv.gz").into(),
            format: None,
            test_fraction: 0.25,
        };
        let tokens = prepare(&raw, 0, None).unwrap().shaped_for(&tf).unwrap();
        assert_eq!(tokens.train_x.dtype(), DType::U32);
        assert_eq!(tokens.train_x.dims(), &[n, 64]);
        let max = tokens.train_x.flatten_all().unwrap().max(0).unwrap();
        assert_eq!(max.to_scalar::<u32>().unwrap(), 16);
    }

    #[test]
    fn unsupported_sources_and_too_many_workers_are_refused() {
        let spec = DataSpec {
            source: "s3://bucket/x.csv".into(),
            ..digits_spec()
        };
        assert!(
            prepare(&spec, 0, None)
                .unwrap_err()
                .to_string()
                .contains("file:// URL")
        );
        let spec = DataSpec {
            source: "/no/such/file.csv".into(),
            ..digits_spec()
        };
        assert!(
            prepare(&spec, 0, None)
                .unwrap_err()
                .to_string()
                .contains("file.csv")
        );
        let p = prepare(&digits_spec(), 0, None).unwrap();
        assert!(p.partitions(5000, 0).is_err());
    }

    #[test]
    fn labels_that_do_not_fit_the_model_are_refused_naming_the_example() {
        let data = digits::load().unwrap();
        let mlp = |n_outputs: usize| {
            let mut cfg = ModelConfig::default_for("mlp").unwrap();
            if let ModelConfig::Mlp(c) = &mut cfg {
                c.n_outputs = n_outputs;
            }
            cfg
        };
        check_labels(&data, Loss::CrossEntropy, &mlp(10)).unwrap();
        // Digits has labels up to 9: they do not fit 5 outputs, whatever the split.
        let err = check_labels(&data, Loss::CrossEntropy, &mlp(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("example") && err.contains("[0, 5)"), "{err}");
        let err = check_labels(&data, Loss::BinaryLogistic, &mlp(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 or 1"), "{err}");
        assert!(check_loss_fits(Loss::BinaryLogistic, &mlp(10)).is_err());
        assert!(check_loss_fits(Loss::CrossEntropy, &mlp(1)).is_err());
        assert!(check_loss_fits(Loss::Mse, &mlp(1)).is_ok());
    }
}
