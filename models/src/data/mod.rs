//! Readers for real datasets: dense CSV, sparse LibSVM/SVMlight, ratings TSV (MovieLens) and
//! MNIST-like images, all loaded into one in-memory [`Dataset`].
//!
//! Every reader validates what it reads; a malformed file is refused with a [`DataError`] that names
//! the file, the line and the reason.

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
