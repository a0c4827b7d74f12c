//! Tabular CSV with categorical columns, turned into sparse features by the hashing trick
//! (Criteo-style), for sparse logistic regression on data such as UCI Adult.
//!
//! The file must have a header. Its columns are the label (chosen by name or index, encoded by a
//! [`LabelEncoding`], e.g. `Positive(">50K")`), numeric columns and categorical columns:
//!
//! - numeric column number `j` (in header order) is feature `j`, its value standardized to zero
//!   mean and unit variance over the file when [`HashedCsvOptions::standardize`] is set (the
//!   default; the statistics are in [`HashedSchema`] so that serving can apply the same);
//! - categorical column `c` with value `v` is feature `n_numeric + fnv1a(c + "=" + v) % n_buckets`
//!   with value 1.0. FNV-1a (64-bit) is stable across runs and platforms, unlike std's hasher.
//!   Colliding features of one row are summed. A missing value (Adult writes `?`) is just one more
//!   category of its column.
//!
//! Which columns are numeric: [`HashedCsvOptions::numeric_columns`], or, when `None`, those whose
//! value in the first data row is a number. A non-number later in a numeric column is an error
//! (file, line, column) suggesting to list the numeric columns explicitly.
//!
//! ```
//! use cumulus_models::data::hashed::{self, HashedCsvOptions};
//! use cumulus_models::data::{LabelColumn, LabelEncoding};
//!
//! let text = "age,workclass,income\n25,Private,<=50K\n47,State-gov,>50K\n";
//! let opts = HashedCsvOptions {
//!     label: LabelColumn::Name("income".into()),
//!     label_encoding: LabelEncoding::Positive(">50K".into()),
//!     n_buckets: 1024,
//!     ..HashedCsvOptions::default()
//! };
//! let (ds, schema) = hashed::read("adult.csv", text.as_bytes(), &opts).unwrap();
//! assert_eq!(ds.labels, vec![0.0, 1.0]);
//! assert_eq!(ds.n_features(), 1 + 1024);
//! assert_eq!(schema.numeric, vec!["age".to_string()]);
//! assert_eq!(schema.feature_of("workclass", "Private"), 1 + hashed::fnv1a(b"workclass=Private") as usize % 1024);
//! ```

use std::io::BufRead;
use std::path::Path;

use super::csv::LabelColumn;
use super::labels::{LabelEncoder, LabelEncoding};
use super::source::{LineReader, ReadLimits, open_path, parse_number, split_fields};
use super::{DataError, Dataset, Features};

/// Options of the hashed tabular CSV reader.
#[derive(Debug, Clone, PartialEq)]
pub struct HashedCsvOptions {
    pub delimiter: char,
    pub label: LabelColumn,
    pub label_encoding: LabelEncoding,
    /// Hash buckets for the categorical values (features after the numeric columns).
    pub n_buckets: usize,
    /// Names of the numeric columns; `None`: the columns numeric in the first data row.
    pub numeric_columns: Option<Vec<String>>,
    /// Standardize numeric columns (zero mean, unit variance over the file).
    pub standardize: bool,
    pub limits: ReadLimits,
}

impl Default for HashedCsvOptions {
    /// Comma-separated, label in the last column, 2^18 buckets, numeric columns detected,
    /// standardized.
    fn default() -> Self {
        HashedCsvOptions {
            delimiter: ',',
            label: LabelColumn::Last,
            label_encoding: LabelEncoding::Auto,
            n_buckets: 1 << 18,
            numeric_columns: None,
            standardize: true,
            limits: ReadLimits::default(),
        }
    }
}

/// How the columns became features: what serving needs to encode a new row the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct HashedSchema {
    pub label: String,
    /// Numeric columns; column `j` is feature `j`.
    pub numeric: Vec<String>,
    /// Mean and standard deviation of each numeric column (`(0, 1)` when not standardized; a
    /// constant column has deviation 1).
    pub numeric_stats: Vec<(f32, f32)>,
    /// Categorical (hashed) columns.
    pub categorical: Vec<String>,
    pub n_buckets: usize,
}

impl HashedSchema {
    /// The feature index of categorical `column = value`.
    pub fn feature_of(&self, column: &str, value: &str) -> usize {
        self.numeric.len() + bucket(column, value, self.n_buckets)
    }
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn bucket(column: &str, value: &str, n_buckets: usize) -> usize {
    let key = [column.as_bytes(), b"=", value.as_bytes()].concat();
    // n_buckets <= max_features fits in u64, and the remainder is below n_buckets.
    (fnv1a(&key) % n_buckets as u64) as usize
}

/// Reads a tabular CSV file (`.gz` transparently) into hashed sparse features.
pub fn load(
    path: impl AsRef<Path>,
    opts: &HashedCsvOptions,
) -> Result<(Dataset, HashedSchema), DataError> {
    let path = path.as_ref();
    read(&path.display().to_string(), open_path(path)?, opts)
}

/// Reads tabular CSV text from `reader`; `name` is used in errors and as the dataset name.
pub fn read(
    name: &str,
    reader: impl BufRead,
    opts: &HashedCsvOptions,
) -> Result<(Dataset, HashedSchema), DataError> {
    if opts.n_buckets == 0 {
        return Err(DataError::InvalidArgument(
            "n_buckets must be at least 1".into(),
        ));
    }
    let limits = opts.limits;
    let mut lines = LineReader::new(name, reader, limits);
    let mut header: Option<Vec<String>> = None;
    let mut label_col = 0;
    // Per column: Some(feature index) for numeric, None for categorical; decided at the first row.
    let mut numeric_index: Vec<Option<u32>> = Vec::new();
    let mut rows: Vec<Vec<(u32, f32)>> = Vec::new();
    let mut labels = LabelEncoder::new(opts.label_encoding.clone());
    let mut n_numeric = 0;
    let mut n_values = 0usize;
    while let Some((line_no, line)) = lines.next_line()? {
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            split_fields(line, opts.delimiter).map_err(|r| DataError::parse(name, line_no, r))?;
        let Some(columns) = &header else {
            let columns: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            label_col = opts.label.resolve(name, columns.len(), Some(&columns))?;
            if let Some(wanted) = &opts.numeric_columns
                && let Some(missing) = wanted.iter().find(|w| !columns.contains(w))
            {
                return Err(DataError::format(
                    name,
                    format!("numeric column {missing:?} is not in the header {columns:?}"),
                ));
            }
            header = Some(columns);
            continue;
        };
        if fields.len() != columns.len() {
            return Err(DataError::parse(
                name,
                line_no,
                format!("expected {} columns, found {}", columns.len(), fields.len()),
            ));
        }
        if numeric_index.is_empty() {
            for (col, (column, field)) in columns.iter().zip(&fields).enumerate() {
                let numeric = col != label_col
                    && match &opts.numeric_columns {
                        Some(wanted) => wanted.contains(column),
                        None => parse_number(field).is_ok(),
                    };
                numeric_index.push(numeric.then(|| {
                    n_numeric += 1;
                    n_numeric as u32 - 1
                }));
            }
            limits.check_features(name, n_numeric + opts.n_buckets)?;
        }
        limits.check_rows(name, rows.len() + 1)?;
        let mut row = Vec::with_capacity(fields.len());
        for (col, field) in fields.iter().enumerate() {
            if col == label_col {
                labels.push(field);
            } else if let Some(index) = numeric_index[col] {
                let value = parse_number(field).map_err(|r| {
                    DataError::parse(
                        name,
                        line_no,
                        format!(
                            "{r} in numeric column {:?} (list the numeric columns explicitly if it is categorical)",
                            columns[col]
                        ),
                    )
                    .in_column(col + 1)
                })?;
                row.push((index, value));
            } else {
                let feature = n_numeric + bucket(&columns[col], field, opts.n_buckets);
                // Bounded by check_features (max_features <= u32 range is not assumed: check).
                let feature = u32::try_from(feature).map_err(|_| {
                    DataError::too_large(name, format!("feature index {feature} exceeds 32 bits"))
                })?;
                row.push((feature, 1.0));
            }
        }
        row.sort_unstable_by_key(|&(i, _)| i);
        row.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        n_values += row.len();
        limits.check_values(name, n_values)?;
        rows.push(row);
    }
    let Some(columns) = header else {
        return Err(DataError::format(name, "empty file: expected a header row"));
    };
    if rows.is_empty() {
        return Err(DataError::format(name, "no data rows"));
    }
    let numeric_stats = if opts.standardize {
        standardize(&mut rows, n_numeric)
    } else {
        vec![(0.0, 1.0); n_numeric]
    };
    let pick = |numeric: bool| -> Vec<String> {
        columns
            .iter()
            .enumerate()
            .filter(|&(col, _)| col != label_col && numeric_index[col].is_some() == numeric)
            .map(|(_, c)| c.clone())
            .collect()
    };
    let schema = HashedSchema {
        label: columns[label_col].clone(),
        numeric: pick(true),
        numeric_stats,
        categorical: pick(false),
        n_buckets: opts.n_buckets,
    };
    let n_features = n_numeric + opts.n_buckets;
    let dataset = Dataset {
        name: name.to_string(),
        features: Features::Sparse { rows, n_features },
        labels: labels.finish().0,
        example_shape: vec![n_features],
    };
    Ok((dataset, schema))
}

/// Standardizes features `0..n_numeric` (present in every row) in place; returns (mean, std).
fn standardize(rows: &mut [Vec<(u32, f32)>], n_numeric: usize) -> Vec<(f32, f32)> {
    let n = rows.len() as f64;
    let mut sum = vec![0.0f64; n_numeric];
    let mut sum_sq = vec![0.0f64; n_numeric];
    for row in rows.iter() {
        for &(i, v) in row.iter().take_while(|&&(i, _)| (i as usize) < n_numeric) {
            sum[i as usize] += f64::from(v);
            sum_sq[i as usize] += f64::from(v) * f64::from(v);
        }
    }
    let stats: Vec<(f32, f32)> = sum
        .iter()
        .zip(&sum_sq)
        .map(|(s, sq)| {
            let mean = s / n;
            let std = (sq / n - mean * mean).max(0.0).sqrt();
            (mean as f32, if std > 1e-12 { std as f32 } else { 1.0 })
        })
        .collect();
    for row in rows.iter_mut() {
        for (i, v) in row
            .iter_mut()
            .take_while(|(i, _)| (*i as usize) < n_numeric)
        {
            let (mean, std) = stats[*i as usize];
            *v = (*v - mean) / std;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): FNV-1a 64 of "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn numeric_columns_standardized_and_categoricals_hashed() {
        let text = "x,color,y\n1,red,1\n3,blue,0\n";
        let opts = HashedCsvOptions {
            n_buckets: 8,
            ..HashedCsvOptions::default()
        };
        let (ds, schema) = read("t.csv", text.as_bytes(), &opts).unwrap();
        assert_eq!(schema.numeric_stats, vec![(2.0, 1.0)]);
        let Features::Sparse { rows, n_features } = &ds.features else {
            unreachable!()
        };
        assert_eq!(*n_features, 9);
        let red = schema.feature_of("color", "red") as u32;
        assert_eq!(rows[0], vec![(0, -1.0), (red, 1.0)]);
        assert_eq!(rows[1][0], (0, 1.0));
        assert_eq!(ds.labels, vec![1.0, 0.0]);
    }

    #[test]
    fn text_in_a_numeric_column_and_bad_rows_are_refused() {
        let opts = HashedCsvOptions {
            n_buckets: 8,
            ..HashedCsvOptions::default()
        };
        let e = read("t.csv", "a,b,y\n1,x,0\n?,x,1\n".as_bytes(), &opts).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.csv:3: column 1: \"?\" is not a number in numeric column \"a\""),
            "{e}"
        );
        let e = read("t.csv", "a,b,y\n1,x,0\n1,x\n".as_bytes(), &opts).unwrap_err();
        assert_eq!(e.to_string(), "t.csv:3: expected 3 columns, found 2");
        let listed = HashedCsvOptions {
            numeric_columns: Some(vec!["nope".into()]),
            ..opts.clone()
        };
        assert!(read("t.csv", "a,y\n1,0\n".as_bytes(), &listed).is_err());
        let ok = HashedCsvOptions {
            numeric_columns: Some(vec![]),
            ..opts
        };
        let (ds, schema) = read("t.csv", "a,y\n1,0\n?,1\n".as_bytes(), &ok).unwrap();
        assert_eq!((ds.len(), schema.categorical.len()), (2, 1));
    }
}
