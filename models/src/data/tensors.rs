//! Turning a [`Dataset`] into candle tensors.
//!
//! - [`Dataset::dense_tensors`]: dense features as F32 `[n, ..example_shape]`; ratings as U32
//!   `[n, 2]` (user id, item id); labels always F32 `[n]`. Sparse rows are refused (use
//!   [`Dataset::sparse_tensors`]).
//! - [`Dataset::sparse_tensors`]: sparse rows as F32 `[n, k, 2]` of `(feature index, value)` pairs,
//!   `k` the largest non-zero count of a row (at least 1), shorter rows padded with `(0, 0.0)`:
//!   a padded pair adds `0.0 * w[0]` to a dot product, i.e. nothing.
//!
//! ```
//! use candle_core::Device;
//! use cumulus_models::data::{Dataset, Features};
//!
//! let ds = Dataset {
//!     name: "t".into(),
//!     features: Features::Sparse { rows: vec![vec![(2, 1.5)], vec![(0, 1.0), (3, 2.0)]], n_features: 4 },
//!     labels: vec![0.0, 1.0],
//!     example_shape: vec![4],
//! };
//! let (x, y) = ds.sparse_tensors(&Device::Cpu).unwrap();
//! assert_eq!(x.dims(), &[2, 2, 2]);
//! assert_eq!(x.to_vec3::<f32>().unwrap()[0], vec![vec![2.0, 1.5], vec![0.0, 0.0]]);
//! assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 1.0]);
//! ```

use candle_core::{Device, Tensor};

use super::{DataError, Dataset, Features};

/// Largest feature index that an f32 holds exactly (2^24).
const MAX_EXACT_F32_INDEX: usize = 1 << 24;

impl Dataset {
    /// `(x, labels)`: x is F32 `[n, ..example_shape]` for dense features and U32 `[n, 2]` of
    /// `(user, item)` for ratings; labels are F32 `[n]`. Sparse features are refused.
    pub fn dense_tensors(&self, device: &Device) -> Result<(Tensor, Tensor), DataError> {
        let n = self.len();
        let x = match &self.features {
            Features::Dense { values, n_features } => {
                let per_example: usize = self.example_shape.iter().product();
                if per_example != *n_features || values.len() != n * n_features {
                    return Err(DataError::InvalidArgument(format!(
                        "{:?}: example shape {:?} and {} values do not fit {n} rows of {n_features} features",
                        self.name,
                        self.example_shape,
                        values.len()
                    )));
                }
                let mut shape = Vec::with_capacity(self.example_shape.len() + 1);
                shape.push(n);
                shape.extend_from_slice(&self.example_shape);
                Tensor::from_slice(values, shape, device)?
            }
            Features::Ratings { users, items, .. } => {
                if users.len() != n || items.len() != n {
                    return Err(DataError::InvalidArgument(format!(
                        "{:?}: {} users and {} items for {n} labels",
                        self.name,
                        users.len(),
                        items.len()
                    )));
                }
                let pairs: Vec<u32> = users
                    .iter()
                    .zip(items)
                    .flat_map(|(&u, &i)| [u, i])
                    .collect();
                Tensor::from_vec(pairs, (n, 2), device)?
            }
            Features::Sparse { .. } => {
                return Err(DataError::Unsupported(format!(
                    "{:?} has sparse features; use sparse_tensors for (index, value) pairs",
                    self.name
                )));
            }
        };
        Ok((x, self.label_tensor(device)?))
    }

    /// `(x, labels)` for sparse features: x is F32 `[n, k, 2]` of `(index, value)` pairs padded
    /// with `(0, 0.0)`, `k = max(1, largest non-zero count of a row)`; labels are F32 `[n]`.
    pub fn sparse_tensors(&self, device: &Device) -> Result<(Tensor, Tensor), DataError> {
        let Features::Sparse { rows, n_features } = &self.features else {
            return Err(DataError::Unsupported(format!(
                "{:?} does not have sparse features; use dense_tensors",
                self.name
            )));
        };
        if *n_features > MAX_EXACT_F32_INDEX {
            return Err(DataError::Unsupported(format!(
                "{:?} has {n_features} features; indices above 2^24 are not exact in f32",
                self.name
            )));
        }
        if rows.len() != self.len() {
            return Err(DataError::InvalidArgument(format!(
                "{:?}: {} rows for {} labels",
                self.name,
                rows.len(),
                self.len()
            )));
        }
        let k = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut pairs = vec![0.0f32; rows.len() * k * 2];
        for (row, out) in rows.iter().zip(pairs.chunks_exact_mut(k * 2)) {
            for (&(index, value), pair) in row.iter().zip(out.chunks_exact_mut(2)) {
                pair[0] = index as f32;
                pair[1] = value;
            }
        }
        let x = Tensor::from_vec(pairs, (rows.len(), k, 2), device)?;
        Ok((x, self.label_tensor(device)?))
    }

    fn label_tensor(&self, device: &Device) -> Result<Tensor, DataError> {
        Ok(Tensor::from_slice(&self.labels, self.len(), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratings() -> Dataset {
        Dataset {
            name: "r".into(),
            features: Features::Ratings {
                users: vec![0, 1, 1],
                items: vec![2, 0, 1],
                n_users: 2,
                n_items: 3,
            },
            labels: vec![5.0, 3.0, 4.0],
            example_shape: vec![2],
        }
    }

    #[test]
    fn ratings_become_u32_pairs() {
        let (x, y) = ratings().dense_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dtype(), candle_core::DType::U32);
        assert_eq!(
            x.to_vec2::<u32>().unwrap(),
            vec![vec![0, 2], vec![1, 0], vec![1, 1]]
        );
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![5.0, 3.0, 4.0]);
    }

    #[test]
    fn wrong_kind_is_refused_with_a_pointer_to_the_right_call() {
        let e = ratings()
            .sparse_tensors(&Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("use dense_tensors"), "{e}");
        let sparse = Dataset {
            name: "s".into(),
            features: Features::Sparse {
                rows: vec![vec![]],
                n_features: 3,
            },
            labels: vec![1.0],
            example_shape: vec![3],
        };
        let e = sparse.dense_tensors(&Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("use sparse_tensors"), "{e}");
        let (x, _) = sparse.sparse_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 1, 2]);
    }
}
