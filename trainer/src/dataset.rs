//! The job's dataset, ready to train on: read from its source, split into train and test, turned
//! into tensors, and the training split cut into one shuffled partition per worker.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use cumulus_models::data::{Dataset, Features, digits, load_path};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::TrainerError;
use crate::job::DataSpec;

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
fn source_path(source: &str) -> Result<PathBuf, TrainerError> {
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

/// Reads and splits the dataset of `spec`; `seed` fixes the split.
pub fn prepare(spec: &DataSpec, seed: u64) -> Result<Prepared, TrainerError> {
    let data = if spec.source == BUILTIN_DIGITS {
        digits::load()
    } else {
        load_path(source_path(&spec.source)?, spec.format)
    }
    .map_err(|e| TrainerError::Data(e.to_string()))?;
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
        let p = prepare(&digits_spec(), 3).unwrap();
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
    fn unsupported_sources_and_too_many_workers_are_refused() {
        let spec = DataSpec {
            source: "s3://bucket/x.csv".into(),
            ..digits_spec()
        };
        assert!(
            prepare(&spec, 0)
                .unwrap_err()
                .to_string()
                .contains("file:// URL")
        );
        let spec = DataSpec {
            source: "/no/such/file.csv".into(),
            ..digits_spec()
        };
        assert!(
            prepare(&spec, 0)
                .unwrap_err()
                .to_string()
                .contains("file.csv")
        );
        let p = prepare(&digits_spec(), 0).unwrap();
        assert!(p.partitions(5000, 0).is_err());
    }
}
