//! [`DatasetSummary`]: what `cumulus data inspect FILE` prints.
//!
//! Labels are summarized as class counts when every label is a non-negative integer and there are
//! at most [`MAX_CLASSES`] distinct ones (ratings excepted: they are always regression targets),
//! and as min / mean / max otherwise.
//!
//! ```
//! use cumulus_models::data::{digits, LabelSummary};
//!
//! let s = digits::load().unwrap().summary();
//! assert_eq!((s.rows, s.n_features), (1797, 64));
//! let LabelSummary::Classes(counts) = &s.labels else { panic!() };
//! assert_eq!(counts[0], (0, 178));
//! println!("{s}");
//! ```

use std::collections::BTreeMap;
use std::fmt;

use super::{Dataset, Features};

/// Most distinct integer labels still summarized as classes.
pub const MAX_CLASSES: usize = 1000;

/// The label distribution of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSummary {
    /// `(class, count)` for every class present, by class.
    Classes(Vec<(u32, usize)>),
    /// Real-valued labels (or too many classes).
    Regression { min: f32, mean: f64, max: f32 },
    /// No rows.
    Empty,
}

/// Rows, features, sparsity and labels of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    pub name: String,
    /// `"dense"`, `"sparse"` or `"ratings"`.
    pub kind: &'static str,
    pub rows: usize,
    /// Features per example (for ratings: 2, the user and the item).
    pub n_features: usize,
    pub example_shape: Vec<usize>,
    /// Sparse: stored values / (rows x features). Ratings: ratings / (users x items).
    pub density: Option<f64>,
    /// Ratings only: `(users, items)`.
    pub users_items: Option<(usize, usize)>,
    pub labels: LabelSummary,
}

impl Dataset {
    /// Summarizes rows, features, density and labels.
    pub fn summary(&self) -> DatasetSummary {
        let rows = self.len();
        let ratio = |num: usize, den: usize| (den > 0).then(|| num as f64 / den as f64);
        let (kind, density, users_items) = match &self.features {
            Features::Dense { .. } => ("dense", None, None),
            Features::Sparse {
                rows: r,
                n_features,
            } => {
                let nnz: usize = r.iter().map(Vec::len).sum();
                ("sparse", ratio(nnz, rows.saturating_mul(*n_features)), None)
            }
            Features::Ratings {
                n_users, n_items, ..
            } => (
                "ratings",
                ratio(rows, n_users.saturating_mul(*n_items)),
                Some((*n_users, *n_items)),
            ),
        };
        let labels = if users_items.is_some() {
            regression(&self.labels)
        } else {
            classes(&self.labels).unwrap_or_else(|| regression(&self.labels))
        };
        DatasetSummary {
            name: self.name.clone(),
            kind,
            rows,
            n_features: self.n_features(),
            example_shape: self.example_shape.clone(),
            density,
            users_items,
            labels,
        }
    }
}

fn classes(labels: &[f32]) -> Option<LabelSummary> {
    let mut counts = BTreeMap::new();
    for &l in labels {
        if l < 0.0 || l.fract() != 0.0 || l > u32::MAX as f32 {
            return None;
        }
        *counts.entry(l as u32).or_insert(0usize) += 1;
        if counts.len() > MAX_CLASSES {
            return None;
        }
    }
    Some(LabelSummary::Classes(counts.into_iter().collect()))
}

fn regression(labels: &[f32]) -> LabelSummary {
    if labels.is_empty() {
        return LabelSummary::Empty;
    }
    let min = labels.iter().copied().fold(f32::INFINITY, f32::min);
    let max = labels.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = labels.iter().map(|&l| f64::from(l)).sum::<f64>() / labels.len() as f64;
    LabelSummary::Regression { min, mean, max }
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset:  {}", self.name)?;
        writeln!(f, "rows:     {}", self.rows)?;
        write!(f, "features: {}", self.kind)?;
        match self.users_items {
            Some((users, items)) => write!(f, ", {users} users x {items} items")?,
            None => write!(
                f,
                ", {} per example, example shape {:?}",
                self.n_features, self.example_shape
            )?,
        }
        if let Some(d) = self.density {
            write!(f, ", density {d:.6}")?;
        }
        writeln!(f)?;
        match &self.labels {
            LabelSummary::Classes(counts) => {
                write!(f, "labels:   {} classes:", counts.len())?;
                for (i, (class, count)) in counts.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{class}: {count}")?;
                }
                Ok(())
            }
            LabelSummary::Regression { min, mean, max } => {
                write!(f, "labels:   min {min}, mean {mean:.4}, max {max}")
            }
            LabelSummary::Empty => write!(f, "labels:   none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_are_regression_with_density() {
        let ds = Dataset {
            name: "u.data".into(),
            features: Features::Ratings {
                users: vec![0, 1],
                items: vec![0, 0],
                n_users: 2,
                n_items: 2,
            },
            labels: vec![1.0, 4.0],
            example_shape: vec![2],
        };
        let s = ds.summary();
        assert_eq!(s.density, Some(0.5));
        assert_eq!(
            s.labels,
            LabelSummary::Regression {
                min: 1.0,
                mean: 2.5,
                max: 4.0
            }
        );
        assert_eq!(
            s.to_string(),
            "dataset:  u.data\nrows:     2\nfeatures: ratings, 2 users x 2 items, density 0.500000\n\
             labels:   min 1, mean 2.5000, max 4"
        );
    }

    #[test]
    fn sparse_binary_counts_classes() {
        let ds = Dataset {
            name: "s".into(),
            features: Features::Sparse {
                rows: vec![vec![(0, 1.0)], vec![]],
                n_features: 4,
            },
            labels: vec![1.0, 0.0],
            example_shape: vec![4],
        };
        let s = ds.summary();
        assert_eq!(s.density, Some(0.125));
        assert_eq!(s.labels, LabelSummary::Classes(vec![(0, 1), (1, 1)]));
        assert!(s.to_string().ends_with("labels:   2 classes: 0: 1, 1: 1"));
    }
}
