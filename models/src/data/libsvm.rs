//! Sparse LibSVM / SVMlight text: `label idx:val idx:val ...`, the format of RCV1, news20 and the
//! LIBSVM collection.
//!
//! - Indices are 1-based integers, strictly increasing within a line; they are stored 0-based
//!   (`idx - 1`). Index 0, a non-integer, a repeated or decreasing index, or one past
//!   [`LibSvmOptions::n_features`] is refused with file, line and reason.
//! - `# ...` starts a comment (to the end of the line); blank lines are skipped; a `qid:N` right
//!   after the label (SVMlight ranking) is checked and ignored.
//! - Labels: with [`BinaryLabels::Normalize`] (the default), when every label is -1 or +1 (or 0 or
//!   1), they become 0 and 1, the convention of this crate's losses; any other label set (several
//!   classes, regression targets) is kept as is. Multi-label lines (`1,3 ...`) are refused.
//! - The feature count is `n_features` when given, else the largest index seen.
//!
//! ```
//! use cumulus_models::data::libsvm::{self, LibSvmOptions};
//! use cumulus_models::data::Features;
//!
//! let text = "# two rows\n+1 1:0.5 3:2\n-1 qid:4 2:1 # trailing comment\n";
//! let ds = libsvm::read("train.svm", text.as_bytes(), &LibSvmOptions::default()).unwrap();
//! assert_eq!(ds.labels, vec![1.0, 0.0]);
//! assert_eq!(ds.features, Features::Sparse { rows: vec![vec![(0, 0.5), (2, 2.0)], vec![(1, 1.0)]], n_features: 3 });
//!
//! let err = libsvm::read("train.svm", "1 1:1\n0 2:1\n1 0:1\n".as_bytes(), &LibSvmOptions::default()).unwrap_err();
//! assert_eq!(err.to_string(), "train.svm:3: feature index 0 is invalid (LibSVM indices start at 1)");
//! ```

use std::io::{BufRead, Write};
use std::path::Path;

use super::source::{LineReader, ReadLimits, open_path, parse_number};
use super::{DataError, Dataset, Features};

/// What to do with binary labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryLabels {
    /// Labels that are all in {-1, +1} or all in {0, 1} become {0, 1}; others are kept.
    #[default]
    Normalize,
    /// Labels are kept exactly as written.
    Keep,
}

/// Options of the LibSVM reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LibSvmOptions {
    /// The feature count; an index above it is an error. `None`: the largest index seen.
    pub n_features: Option<usize>,
    pub labels: BinaryLabels,
    pub limits: ReadLimits,
}

/// Reads a LibSVM file (`.gz` transparently).
pub fn load(path: impl AsRef<Path>, opts: &LibSvmOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    read(&path.display().to_string(), open_path(path)?, opts)
}

/// Reads LibSVM text from `reader`; `name` is used in errors and as the dataset name.
pub fn read(name: &str, reader: impl BufRead, opts: &LibSvmOptions) -> Result<Dataset, DataError> {
    let limits = opts.limits;
    if let Some(n) = opts.n_features {
        limits.check_features(name, n)?;
    }
    let bound = opts.n_features.unwrap_or(limits.max_features);
    let mut lines = LineReader::new(name, reader, limits);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut n_values = 0usize;
    let mut max_index = 0usize;
    while let Some((line_no, line)) = lines.next_line()? {
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        let mut tokens = content.split_whitespace();
        let Some(label) = tokens.next() else {
            continue;
        };
        let err = |reason: String| DataError::parse(name, line_no, reason);
        if label.contains(',') {
            return Err(err(format!(
                "multi-label rows ({label:?}) are not supported"
            )));
        }
        let label = parse_number(label).map_err(|r| err(format!("label: {r}")))?;
        limits.check_rows(name, rows.len() + 1)?;
        let mut row: Vec<(u32, f32)> = Vec::new();
        let mut previous = 0usize;
        for (position, token) in tokens.enumerate() {
            let Some((index, value)) = token.split_once(':') else {
                return Err(err(format!("{token:?} is not an index:value pair")));
            };
            if index == "qid" {
                if position != 0 {
                    return Err(err("qid must come right after the label".into()));
                }
                value
                    .parse::<u64>()
                    .map_err(|_| err(format!("qid {value:?} is not an integer")))?;
                continue;
            }
            let index: usize = index
                .parse()
                .map_err(|_| err(format!("feature index {index:?} is not a positive integer")))?;
            if index == 0 {
                return Err(err(
                    "feature index 0 is invalid (LibSVM indices start at 1)".into(),
                ));
            }
            if index <= previous {
                return Err(err(format!(
                    "feature index {index} follows index {previous}; indices must be strictly increasing"
                )));
            }
            if index > bound {
                return Err(match opts.n_features {
                    Some(n) => err(format!(
                        "feature index {index} is out of bounds (n_features = {n})"
                    )),
                    None => DataError::too_large(
                        name,
                        format!(
                            "line {line_no}: feature index {index} is above {} (max_features)",
                            limits.max_features
                        ),
                    ),
                });
            }
            let value = parse_number(value).map_err(|r| err(format!("feature {index}: {r}")))?;
            let stored = u32::try_from(index - 1)
                .map_err(|_| err(format!("feature index {index} does not fit in 32 bits")))?;
            previous = index;
            row.push((stored, value));
        }
        n_values += row.len();
        limits.check_values(name, n_values)?;
        max_index = max_index.max(previous);
        rows.push(row);
        labels.push(label);
    }
    if rows.is_empty() {
        return Err(DataError::format(name, "no data rows"));
    }
    if opts.labels == BinaryLabels::Normalize {
        normalize_binary(&mut labels);
    }
    let n_features = opts.n_features.unwrap_or(max_index);
    Ok(Dataset {
        name: name.to_string(),
        features: Features::Sparse { rows, n_features },
        labels,
        example_shape: vec![n_features],
    })
}

/// {-1, +1} -> {0, 1}; {0, 1} stays; any other set is left alone.
fn normalize_binary(labels: &mut [f32]) {
    if labels.iter().all(|&l| l == -1.0 || l == 1.0) {
        for l in labels {
            *l = if *l > 0.0 { 1.0 } else { 0.0 };
        }
    }
}

/// Writes sparse `dataset` as LibSVM text (1-based indices, labels and values in Rust's shortest
/// round-trip notation), so that [`read`] with [`BinaryLabels::Keep`] gives it back.
pub fn write(dataset: &Dataset, mut out: impl Write) -> Result<(), DataError> {
    let Features::Sparse { rows, .. } = &dataset.features else {
        return Err(DataError::Unsupported(format!(
            "{:?} is not sparse; only sparse datasets are written as LibSVM",
            dataset.name
        )));
    };
    let io = |e| DataError::io(&dataset.name, e);
    for (row, label) in rows.iter().zip(&dataset.labels) {
        write!(out, "{label}").map_err(io)?;
        for (index, value) in row {
            write!(out, " {}:{value}", u64::from(*index) + 1).map_err(io)?;
        }
        writeln!(out).map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> Result<Dataset, DataError> {
        read("train.svm", text.as_bytes(), &LibSvmOptions::default())
    }

    #[test]
    fn bad_indices_are_refused_with_line_and_reason() {
        let cases = [
            (
                "1 2:1 2:3\n",
                "train.svm:1: feature index 2 follows index 2; indices must be strictly increasing",
            ),
            (
                "1 3:1 2:3\n",
                "train.svm:1: feature index 2 follows index 3; indices must be strictly increasing",
            ),
            (
                "1 1:1\n1 x:1\n",
                "train.svm:2: feature index \"x\" is not a positive integer",
            ),
            (
                "1 -1:1\n",
                "train.svm:1: feature index \"-1\" is not a positive integer",
            ),
            (
                "1 1.5:1\n",
                "train.svm:1: feature index \"1.5\" is not a positive integer",
            ),
            (
                "1 1:abc\n",
                "train.svm:1: feature 1: \"abc\" is not a number",
            ),
            ("1 1\n", "train.svm:1: \"1\" is not an index:value pair"),
            ("x 1:1\n", "train.svm:1: label: \"x\" is not a number"),
            (
                "1,2 1:1\n",
                "train.svm:1: multi-label rows (\"1,2\") are not supported",
            ),
            (
                "1 1:1 qid:3\n",
                "train.svm:1: qid must come right after the label",
            ),
            ("# only a comment\n\n", "train.svm: no data rows"),
        ];
        for (text, want) in cases {
            assert_eq!(read_str(text).unwrap_err().to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn bounds_come_from_options_or_limits() {
        let opts = LibSvmOptions {
            n_features: Some(4),
            ..LibSvmOptions::default()
        };
        let e = read("t.svm", "1 5:1\n".as_bytes(), &opts)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.svm:1: feature index 5 is out of bounds (n_features = 4)"
        );
        let ds = read("t.svm", "1 2:1\n".as_bytes(), &opts).unwrap();
        assert_eq!(ds.n_features(), 4);

        let limits = ReadLimits {
            max_features: 10,
            ..ReadLimits::default()
        };
        let opts = LibSvmOptions {
            limits,
            ..LibSvmOptions::default()
        };
        let e = read("t.svm", "1 11:1\n".as_bytes(), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.svm: too large: line 1: feature index 11"),
            "{e}"
        );
    }

    #[test]
    fn labels_are_normalized_only_when_binary() {
        assert_eq!(read_str("-1 1:1\n+1 1:1\n").unwrap().labels, vec![0.0, 1.0]);
        assert_eq!(read_str("0 1:1\n1 1:1\n").unwrap().labels, vec![0.0, 1.0]);
        assert_eq!(read_str("1 1:1\n1 1:1\n").unwrap().labels, vec![1.0, 1.0]);
        assert_eq!(read_str("3 1:1\n-1 1:1\n").unwrap().labels, vec![3.0, -1.0]);
        let keep = LibSvmOptions {
            labels: BinaryLabels::Keep,
            ..LibSvmOptions::default()
        };
        let ds = read("t.svm", "-1 1:1\n".as_bytes(), &keep).unwrap();
        assert_eq!(ds.labels, vec![-1.0]);
    }

    #[test]
    fn empty_rows_and_write_read() {
        let ds = read_str("1\n0 2:0.25\n").unwrap();
        let mut text = Vec::new();
        write(&ds, &mut text).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "1\n0 2:0.25\n");
    }
}
