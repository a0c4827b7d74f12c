//! [`Dataset::validate`]: the invariants every reader guarantees, checked for a dataset built by
//! hand (its fields are public), so that row selection and tensor conversion never index out of
//! bounds.
//!
//! ```
//! use cumulus_models::data::{Dataset, Features};
//!
//! let bad = Dataset {
//!     name: "hand-made".into(),
//!     features: Features::Sparse { rows: vec![vec![(3, 1.0), (1, 1.0)]], n_features: 4 },
//!     labels: vec![1.0],
//!     example_shape: vec![4],
//! };
//! let e = bad.validate().unwrap_err().to_string();
//! assert!(e.contains("row 0: feature indices must be strictly increasing and below 4"), "{e}");
//! ```

use super::{DataError, Dataset, Features};

impl Dataset {
    /// Checks that the feature storage holds exactly one row per label, that sparse indices are
    /// strictly increasing and below `n_features`, that rating ids are below `n_users`/`n_items`,
    /// and that `example_shape` has `n_features` elements (dense and sparse).
    pub fn validate(&self) -> Result<(), DataError> {
        self.check_lengths()?;
        let invalid = |what: String| {
            Err(DataError::InvalidArgument(format!(
                "{:?}: {what}",
                self.name
            )))
        };
        match &self.features {
            Features::Dense { n_features, .. } | Features::Sparse { n_features, .. } => {
                let shape: usize = self.example_shape.iter().product();
                if shape != *n_features {
                    return invalid(format!(
                        "example shape {:?} does not hold {n_features} features",
                        self.example_shape
                    ));
                }
            }
            Features::Ratings { .. } => {}
        }
        match &self.features {
            Features::Dense { .. } => Ok(()),
            Features::Sparse { rows, n_features } => {
                for (r, row) in rows.iter().enumerate() {
                    let increasing = row.windows(2).all(|w| w[0].0 < w[1].0);
                    let in_range = row.last().is_none_or(|&(i, _)| (i as usize) < *n_features);
                    if !increasing || !in_range {
                        return invalid(format!(
                            "row {r}: feature indices must be strictly increasing and below {n_features}"
                        ));
                    }
                }
                Ok(())
            }
            Features::Ratings {
                users,
                items,
                n_users,
                n_items,
            } => {
                if let Some(u) = users.iter().find(|&&u| u as usize >= *n_users) {
                    return invalid(format!("user id {u} is not below n_users = {n_users}"));
                }
                if let Some(i) = items.iter().find(|&&i| i as usize >= *n_items) {
                    return invalid(format!("item id {i} is not below n_items = {n_items}"));
                }
                Ok(())
            }
        }
    }

    /// The O(1) part of [`validate`](Dataset::validate): one row of features per label.
    pub(crate) fn check_lengths(&self) -> Result<(), DataError> {
        let n = self.len();
        let ok = match &self.features {
            Features::Dense { values, n_features } => {
                Some(values.len()) == n.checked_mul(*n_features)
            }
            Features::Sparse { rows, .. } => rows.len() == n,
            Features::Ratings { users, items, .. } => users.len() == n && items.len() == n,
        };
        if ok {
            Ok(())
        } else {
            Err(DataError::InvalidArgument(format!(
                "{:?}: the features do not hold exactly one row for each of its {n} labels",
                self.name
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_datasets_are_refused_instead_of_panicking() {
        let dense = Dataset {
            name: "d".into(),
            features: Features::Dense {
                values: vec![1.0; 5],
                n_features: 2,
            },
            labels: vec![0.0, 1.0],
            example_shape: vec![2],
        };
        assert!(dense.validate().is_err());
        assert!(dense.subset(&[1]).is_err());
        let ratings = Dataset {
            name: "r".into(),
            features: Features::Ratings {
                users: vec![2],
                items: vec![0],
                n_users: 2,
                n_items: 1,
            },
            labels: vec![5.0],
            example_shape: vec![2],
        };
        assert!(
            ratings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("user id 2")
        );
    }
}
