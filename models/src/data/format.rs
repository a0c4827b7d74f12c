//! [`DataFormat`] and [`load_path`]: load any supported file with default options, guessing the
//! format from the file name when it is not given (what `cumulus data inspect FILE` does).
//!
//! | format name | reader | guessed from (after dropping `.gz`) |
//! |---|---|---|
//! | `csv` | [`csv`](super::csv), label last | `*.csv` |
//! | `libsvm` | [`libsvm`](super::libsvm) | `*.svm`, `*.libsvm`, `*.svmlight`, `*.txt` |
//! | `hashed-csv` | [`hashed`](super::hashed), label last | never (needs `--format`) |
//! | `ratings` | [`ratings`](super::ratings) | `*.inter`, `u.data` |
//! | `idx` | [`idx`](super::idx), labels file next to it | `*idx3-ubyte` |
//! | `mnist-csv` | [`mnist_csv`](super::mnist_csv), label last | `*.csv` with `mnist` in the name |
//!
//! ```
//! use std::path::Path;
//! use cumulus_models::data::DataFormat;
//!
//! assert_eq!("libsvm".parse::<DataFormat>().unwrap(), DataFormat::LibSvm);
//! assert_eq!(DataFormat::guess(Path::new("rcv1_train.svm.gz")), Some(DataFormat::LibSvm));
//! assert_eq!(DataFormat::guess(Path::new("ml-100k/u.data")), Some(DataFormat::Ratings));
//! assert!(DataFormat::NAMES.contains(&"hashed-csv"));
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::source::strip_gz;
use super::{DataError, Dataset, csv, hashed, idx, libsvm, mnist_csv, ratings};

/// A supported file format. Plain enum, so a CLI can wrap it in a `clap::ValueEnum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataFormat {
    Csv,
    LibSvm,
    HashedCsv,
    Ratings,
    Idx,
    MnistCsv,
}

impl DataFormat {
    /// Every format, in the order of [`DataFormat::NAMES`].
    pub const ALL: [DataFormat; 6] = [
        DataFormat::Csv,
        DataFormat::LibSvm,
        DataFormat::HashedCsv,
        DataFormat::Ratings,
        DataFormat::Idx,
        DataFormat::MnistCsv,
    ];

    /// The names [`FromStr`] accepts (and [`fmt::Display`] prints).
    pub const NAMES: [&'static str; 6] =
        ["csv", "libsvm", "hashed-csv", "ratings", "idx", "mnist-csv"];

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Csv => "csv",
            DataFormat::LibSvm => "libsvm",
            DataFormat::HashedCsv => "hashed-csv",
            DataFormat::Ratings => "ratings",
            DataFormat::Idx => "idx",
            DataFormat::MnistCsv => "mnist-csv",
        }
    }

    /// The format a file name suggests, if any (see the module table).
    pub fn guess(path: &Path) -> Option<DataFormat> {
        let file = path.file_name()?.to_str()?.to_ascii_lowercase();
        let file = strip_gz(&file);
        let ext = file.rsplit_once('.').map(|(_, e)| e);
        if file.contains("idx3-ubyte") {
            Some(DataFormat::Idx)
        } else if file == "u.data" || ext == Some("inter") {
            Some(DataFormat::Ratings)
        } else if matches!(ext, Some("svm" | "libsvm" | "svmlight" | "txt")) {
            Some(DataFormat::LibSvm)
        } else if ext == Some("csv") && file.contains("mnist") {
            Some(DataFormat::MnistCsv)
        } else if ext == Some("csv") {
            Some(DataFormat::Csv)
        } else {
            None
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataFormat {
    type Err = DataError;

    /// A name of [`DataFormat::NAMES`], case-insensitive; `svmlight` is accepted for `libsvm`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s == "svmlight" {
            return Ok(DataFormat::LibSvm);
        }
        DataFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "unknown data format {s:?}; expected one of: {}",
                    DataFormat::NAMES.join(", ")
                ))
            })
    }
}

/// Loads `path` with the default options of `format`, or of the format guessed from its name.
/// For `idx`, `path` is the images file and the labels file is found next to it
/// ([`idx::labels_path_for`]).
pub fn load_path(path: impl AsRef<Path>, format: Option<DataFormat>) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let format = match format.or_else(|| DataFormat::guess(path)) {
        Some(f) => f,
        None => {
            return Err(DataError::InvalidArgument(format!(
                "cannot guess the format of {}; give one of: {}",
                path.display(),
                DataFormat::NAMES.join(", ")
            )));
        }
    };
    match format {
        DataFormat::Csv => csv::load(path, &csv::CsvOptions::default()),
        DataFormat::LibSvm => libsvm::load(path, &libsvm::LibSvmOptions::default()),
        DataFormat::HashedCsv => Ok(hashed::load(path, &hashed::HashedCsvOptions::default())?.0),
        DataFormat::Ratings => {
            Ok(ratings::load(path, &ratings::RatingsOptions::default())?.dataset)
        }
        DataFormat::MnistCsv => mnist_csv::load(path, &mnist_csv::MnistCsvOptions::default()),
        DataFormat::Idx => {
            let labels = idx::labels_path_for(path).ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "{}: an IDX images file must be named *-images-idx3-ubyte[.gz] so that its labels file can be found",
                    path.display()
                ))
            })?;
            idx::load(path, labels, &idx::IdxOptions::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for (f, name) in DataFormat::ALL.iter().zip(DataFormat::NAMES) {
            assert_eq!(f.to_string(), name);
            assert_eq!(name.to_uppercase().parse::<DataFormat>().unwrap(), *f);
        }
        let e = "parquet".parse::<DataFormat>().unwrap_err().to_string();
        assert!(e.contains("\"parquet\"") && e.contains("hashed-csv"), "{e}");
    }

    #[test]
    fn formats_are_guessed_from_names() {
        let g = |p: &str| DataFormat::guess(Path::new(p));
        assert_eq!(g("a/train.libsvm"), Some(DataFormat::LibSvm));
        assert_eq!(g("news20.txt.gz"), Some(DataFormat::LibSvm));
        assert_eq!(g("ml-100k.inter"), Some(DataFormat::Ratings));
        assert_eq!(g("train-images-idx3-ubyte.gz"), Some(DataFormat::Idx));
        assert_eq!(g("x.CSV.gz"), Some(DataFormat::Csv));
        assert_eq!(g("mnist_5k.csv.gz"), Some(DataFormat::MnistCsv));
        assert_eq!(g("adult.parquet"), None);
        let e = load_path("adult.parquet", None).unwrap_err().to_string();
        assert!(
            e.contains("cannot guess the format of adult.parquet"),
            "{e}"
        );
    }
}
