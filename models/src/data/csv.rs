//! Dense CSV: one example per line, every column but the label is a numeric feature.
//!
//! The header is optional ([`Header::Auto`] takes the first line as a header when any of its fields
//! is not a number); the label column is chosen by 0-based index or by header name (default: the
//! last column); the delimiter is configurable; blank lines are skipped; `.gz` files are read
//! transparently. A wrong column count or a non-numeric feature is refused with file, line and
//! (1-based) column:
//!
//! ```
//! use cumulus_models::data::csv::{self, CsvOptions, LabelColumn};
//!
//! let opts = CsvOptions { label: LabelColumn::Name("y".into()), ..CsvOptions::default() };
//! let ds = csv::read("x.csv", "a,y,b\n1,0,2\n3,1,4\n".as_bytes(), &opts).unwrap();
//! assert_eq!(ds.labels, vec![0.0, 1.0]);
//! assert_eq!(ds.n_features(), 2);
//!
//! let err = csv::read("x.csv", "1,2,3\n4,abc,6\n".as_bytes(), &CsvOptions::default()).unwrap_err();
//! assert_eq!(err.to_string(), "x.csv:2: column 2: \"abc\" is not a number");
//! ```

use std::io::BufRead;
use std::path::Path;

use super::labels::{LabelEncoder, LabelEncoding};
use super::source::{LineReader, ReadLimits, open_path, parse_number, split_fields};
use super::{DataError, Dataset, Features};

/// Whether the first line is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Header {
    /// A header when any field of the first line is not a number.
    #[default]
    Auto,
    Present,
    Absent,
}

/// Which column holds the label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LabelColumn {
    #[default]
    Last,
    First,
    /// 0-based column index.
    Index(usize),
    /// Column name in the header (needs a header).
    Name(String),
}

impl LabelColumn {
    /// The 0-based index of the label among `n_columns`, looked up in `header` for a name.
    pub(crate) fn resolve(
        &self,
        file: &str,
        n_columns: usize,
        header: Option<&[String]>,
    ) -> Result<usize, DataError> {
        match self {
            LabelColumn::Last => Ok(n_columns.saturating_sub(1)),
            LabelColumn::First => Ok(0),
            LabelColumn::Index(i) if *i < n_columns => Ok(*i),
            LabelColumn::Index(i) => Err(DataError::format(
                file,
                format!("label column index {i} is out of range: the file has {n_columns} columns"),
            )),
            LabelColumn::Name(name) => {
                let header = header.ok_or_else(|| {
                    DataError::format(
                        file,
                        format!(
                            "label column {name:?} is chosen by name, but the file has no header"
                        ),
                    )
                })?;
                header.iter().position(|h| h == name).ok_or_else(|| {
                    DataError::format(
                        file,
                        format!("no column named {name:?} in the header {header:?}"),
                    )
                })
            }
        }
    }
}

/// Options of the dense CSV reader.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    pub delimiter: char,
    pub header: Header,
    pub label: LabelColumn,
    pub label_encoding: LabelEncoding,
    /// Inclusive range every raw feature value must lie in (checked before scaling).
    pub value_range: Option<(f32, f32)>,
    /// Every feature is multiplied by this (e.g. `1.0 / 255.0` for 8-bit pixels).
    pub scale: f32,
    /// Shape of one example; its product must equal the feature count. Default `[n_features]`.
    pub example_shape: Option<Vec<usize>>,
    pub limits: ReadLimits,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ',',
            header: Header::Auto,
            label: LabelColumn::Last,
            label_encoding: LabelEncoding::Auto,
            value_range: None,
            scale: 1.0,
            example_shape: None,
            limits: ReadLimits::default(),
        }
    }
}

/// Reads a dense CSV file (`.gz` transparently).
pub fn load(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    read(&path.display().to_string(), open_path(path)?, opts)
}

/// Reads dense CSV text from `reader`; `name` is used in errors and as the dataset name.
pub fn read(name: &str, reader: impl BufRead, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let mut lines = LineReader::new(name, reader, opts.limits);
    let mut n_columns = 0;
    let mut label_col = 0;
    let mut first = true;
    let mut values = Vec::new();
    let mut labels = LabelEncoder::new(opts.label_encoding.clone());
    while let Some((line_no, line)) = lines.next_line()? {
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            split_fields(line, opts.delimiter).map_err(|r| DataError::parse(name, line_no, r))?;
        if first {
            first = false;
            n_columns = fields.len();
            if n_columns < 2 {
                return Err(DataError::parse(
                    name,
                    line_no,
                    format!(
                        "found {n_columns} column, need a label and at least one feature (is the delimiter {:?} right?)",
                        opts.delimiter
                    ),
                ));
            }
            // A text label ("setosa") must not make the first data row look like a header, so
            // Auto looks at the feature columns only; a label chosen by name implies a header.
            let is_header = match (&opts.header, &opts.label) {
                (Header::Present, _) | (Header::Auto, LabelColumn::Name(_)) => true,
                (Header::Absent, _) => false,
                (Header::Auto, label) => {
                    let label_col = label.resolve(name, n_columns, None)?;
                    fields
                        .iter()
                        .enumerate()
                        .any(|(i, f)| i != label_col && parse_number(f).is_err())
                }
            };
            let header: Option<Vec<String>> =
                is_header.then(|| fields.iter().map(|f| f.to_string()).collect());
            label_col = opts.label.resolve(name, n_columns, header.as_deref())?;
            opts.limits.check_features(name, n_columns - 1)?;
            if is_header {
                continue;
            }
        }
        if fields.len() != n_columns {
            return Err(DataError::parse(
                name,
                line_no,
                format!("expected {n_columns} columns, found {}", fields.len()),
            ));
        }
        opts.limits.check_rows(name, labels.len() + 1)?;
        opts.limits
            .check_values(name, values.len() + n_columns - 1)?;
        for (col, field) in fields.iter().enumerate() {
            if col == label_col {
                labels.push(field);
                continue;
            }
            let v = parse_number(field)
                .map_err(|r| DataError::parse(name, line_no, r).in_column(col + 1))?;
            if let Some((lo, hi)) = opts.value_range
                && !(lo..=hi).contains(&v)
            {
                return Err(DataError::parse(
                    name,
                    line_no,
                    format!("{v} is outside the valid range {lo}..={hi}"),
                )
                .in_column(col + 1));
            }
            values.push(v * opts.scale);
        }
    }
    if labels.is_empty() {
        return Err(DataError::format(name, "no data rows"));
    }
    let n_features = n_columns - 1;
    let example_shape = match &opts.example_shape {
        Some(shape) if shape.iter().product::<usize>() == n_features => shape.clone(),
        Some(shape) => {
            return Err(DataError::format(
                name,
                format!("{n_features} features do not fit the example shape {shape:?}"),
            ));
        }
        None => vec![n_features],
    };
    Ok(Dataset {
        name: name.to_string(),
        features: Features::Dense { values, n_features },
        labels: labels.finish().0,
        example_shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str, opts: &CsvOptions) -> Result<Dataset, DataError> {
        read("x.csv", text.as_bytes(), opts)
    }

    #[test]
    fn header_is_detected_and_label_defaults_to_last() {
        let ds = read_str("a,b,label\n1,2,0\n\n3,4,1\n", &CsvOptions::default()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(
            ds.features,
            Features::Dense {
                values: vec![1.0, 2.0, 3.0, 4.0],
                n_features: 2
            }
        );
        assert_eq!(ds.labels, vec![0.0, 1.0]);
        assert_eq!(ds.example_shape, vec![2]);
    }

    #[test]
    fn label_by_index_with_other_delimiter_and_no_header() {
        let opts = CsvOptions {
            delimiter: ';',
            label: LabelColumn::Index(0),
            header: Header::Absent,
            ..CsvOptions::default()
        };
        let ds = read_str("7;0.5;1.5\n8;2.5;3.5\n", &opts).unwrap();
        assert_eq!(ds.labels, vec![7.0, 8.0]);
        assert_eq!(ds.n_features(), 2);
    }

    #[test]
    fn malformed_rows_name_file_line_and_column() {
        let opts = CsvOptions::default();
        let e = read_str("1,2,3\n4,5\n", &opts).unwrap_err().to_string();
        assert_eq!(e, "x.csv:2: expected 3 columns, found 2");
        let e = read_str(
            "h1,h2,h3\n1,2,3\n1,2,3\n1,2,3\n1,2,abc\n",
            &CsvOptions {
                label: LabelColumn::First,
                ..opts.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "x.csv:5: column 3: \"abc\" is not a number");
        let e = read_str("a,b\n", &opts).unwrap_err().to_string();
        assert_eq!(e, "x.csv: no data rows");
        let e = read_str(
            "1,2\n",
            &CsvOptions {
                label: LabelColumn::Name("y".into()),
                header: Header::Absent,
                ..opts.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no header"), "{e}");
    }

    #[test]
    fn range_scale_and_limits() {
        let opts = CsvOptions {
            value_range: Some((0.0, 16.0)),
            scale: 1.0 / 16.0,
            ..CsvOptions::default()
        };
        let ds = read_str("16,8,1\n", &opts).unwrap();
        assert_eq!(
            ds.features,
            Features::Dense {
                values: vec![1.0, 0.5],
                n_features: 2
            }
        );
        let e = read_str("1,2,1\n17,0,1\n", &opts).unwrap_err().to_string();
        assert_eq!(e, "x.csv:2: column 1: 17 is outside the valid range 0..=16");

        let limits = ReadLimits {
            max_rows: 1,
            ..ReadLimits::default()
        };
        let e = read_str(
            "1,2\n3,4\n",
            &CsvOptions {
                limits,
                ..CsvOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "x.csv: too large: more than 1 rows (max_rows)");
    }
}
