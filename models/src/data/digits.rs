//! scikit-learn's `digits`: 1,797 handwritten digits as 8x8 images of 0..16 counts, 10 classes,
//! embedded in the crate (`models/data/digits.csv.gz`, 57 KB, see `models/data/README.md`).
//!
//! [`load`] returns dense features of `example_shape = [64]` (the 8x8 image row by row, so an MLP
//! takes it as is; reshape to `[1, 8, 8]` for a convolution), each pixel **divided by 16** so that
//! features lie in [0, 1], and labels `0.0..=9.0`, the digit.
//!
//! ```
//! use cumulus_models::data::digits;
//!
//! let ds = digits::load().unwrap();
//! assert_eq!((ds.len(), ds.n_features(), ds.n_classes()), (1797, 64, Some(10)));
//! assert_eq!(ds.example_shape, vec![64]);
//! ```

use std::io::BufReader;

use super::csv::{self, CsvOptions, Header, LabelColumn};
use super::{DataError, Dataset};

/// The file as shipped in scikit-learn (`sklearn/datasets/data/digits.csv.gz`), byte for byte.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Rows of the dataset.
pub const N_ROWS: usize = 1797;
/// Pixels of one image (8x8).
pub const N_FEATURES: usize = 64;
/// Digits 0..=9.
pub const N_CLASSES: usize = 10;

/// Loads the embedded digits: 1,797 rows, 64 features in [0, 1], labels 0..=9.
pub fn load() -> Result<Dataset, DataError> {
    let name = "digits.csv.gz";
    let gz = flate2::read::GzDecoder::new(DIGITS_CSV_GZ);
    let opts = CsvOptions {
        header: Header::Absent,
        label: LabelColumn::Last,
        value_range: Some((0.0, 16.0)),
        scale: 1.0 / 16.0,
        example_shape: Some(vec![N_FEATURES]),
        ..CsvOptions::default()
    };
    let ds = csv::read(name, BufReader::new(gz), &opts)?;
    if ds.len() != N_ROWS || ds.n_features() != N_FEATURES {
        return Err(DataError::format(
            name,
            format!(
                "expected {N_ROWS} rows of {N_FEATURES} features, found {} of {}",
                ds.len(),
                ds.n_features()
            ),
        ));
    }
    Ok(ds)
}
