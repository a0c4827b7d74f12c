//! Selecting rows: [`Dataset::subset`] (a batch by row indices) and [`Dataset::train_test_split`].
//!
//! The split shuffles with a tiny built-in generator (SplitMix64 + Fisher-Yates), so a seed gives
//! the same split on every platform and with every version of `rand`:
//!
//! ```
//! use cumulus_models::data::digits;
//!
//! let ds = digits::load().unwrap();
//! let (train, test) = ds.train_test_split(0.25, 7).unwrap();
//! assert_eq!((train.len(), test.len()), (1348, 449));
//! assert_eq!(ds.train_test_split(0.25, 7).unwrap().1, test);
//! let batch = train.subset(&[0, 5, 9]).unwrap();
//! assert_eq!(batch.len(), 3);
//! ```

use super::{DataError, Dataset, Features};

impl Dataset {
    /// The rows at `indices`, in that order (repeats allowed). An index `>= len()` is an error.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        self.check_lengths()?;
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::InvalidArgument(format!(
                "row index {bad} is out of range for {:?} with {n} rows",
                self.name
            )));
        }
        let features = match &self.features {
            Features::Dense { values, n_features } => {
                let nf = *n_features;
                let mut out = Vec::with_capacity(indices.len() * nf);
                for &i in indices {
                    out.extend_from_slice(&values[i * nf..(i + 1) * nf]);
                }
                Features::Dense {
                    values: out,
                    n_features: nf,
                }
            }
            Features::Sparse { rows, n_features } => Features::Sparse {
                rows: indices.iter().map(|&i| rows[i].clone()).collect(),
                n_features: *n_features,
            },
            Features::Ratings {
                users,
                items,
                n_users,
                n_items,
            } => Features::Ratings {
                users: indices.iter().map(|&i| users[i]).collect(),
                items: indices.iter().map(|&i| items[i]).collect(),
                n_users: *n_users,
                n_items: *n_items,
            },
        };
        Ok(Dataset {
            name: self.name.clone(),
            features,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            example_shape: self.example_shape.clone(),
        })
    }

    /// Shuffles the rows with `seed` and splits them into `(train, test)`, the test part holding
    /// `round(len * test_fraction)` rows, at least one and at most `len - 1`. The same seed always
    /// gives the same split; the two parts are disjoint and together hold every row once.
    pub fn train_test_split(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset), DataError> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(DataError::InvalidArgument(format!(
                "test fraction must lie strictly between 0 and 1, got {test_fraction}"
            )));
        }
        let n = self.len();
        if n < 2 {
            return Err(DataError::InvalidArgument(format!(
                "cannot split {:?}: it has {n} rows, need at least 2",
                self.name
            )));
        }
        let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
        let order = shuffled_indices(n, seed);
        let (test, train) = order.split_at(n_test);
        Ok((self.subset(train)?, self.subset(test)?))
    }
}

/// `0..n` in a random order determined by `seed` alone.
pub(crate) fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        // Multiply-shift maps the 64-bit draw onto 0..=i with negligible bias for any realistic n.
        let j = ((rng.next() as u128 * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator with a stable definition.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_fixed_by_the_seed() {
        let a = shuffled_indices(100, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled_indices(100, 1));
        assert_ne!(a, shuffled_indices(100, 2));
        // Pinned so a change of the generator (and so of every published split) is noticed.
        assert_eq!(shuffled_indices(6, 42), vec![2, 5, 3, 1, 0, 4]);
    }
}
