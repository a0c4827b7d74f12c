//! [`DataError`]: the one error type of the dataset readers.
//!
//! A parse error names the file, the 1-based line and, where one is at fault, the 1-based column,
//! so a user can open the file at the right place:
//!
//! ```
//! use cumulus_models::data::DataError;
//!
//! let e = DataError::parse("x.csv", 5, "\"abc\" is not a number").in_column(3);
//! assert_eq!(e.to_string(), "x.csv:5: column 3: \"abc\" is not a number");
//! ```

/// Everything that can go wrong while reading, converting or splitting a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read (including a corrupt `.gz` stream).
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A line of a text file is malformed.
    #[error("{file}:{line}: {}{reason}", column_prefix(*.column))]
    Parse {
        file: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column (field) number, when one field is at fault.
        column: Option<usize>,
        reason: String,
    },
    /// A binary file (IDX) or a whole file is malformed: bad magic number, truncated, no rows, ...
    #[error("{file}: {reason}")]
    Format { file: String, reason: String },
    /// The file is larger than the configured [`ReadLimits`](super::ReadLimits) allow.
    #[error("{file}: too large: {reason}")]
    TooLarge { file: String, reason: String },
    /// An argument to a reader or to a [`Dataset`](super::Dataset) method is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation does not apply to this kind of features (e.g. dense tensors of sparse rows).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Building a tensor failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

fn column_prefix(column: Option<usize>) -> String {
    column.map(|c| format!("column {c}: ")).unwrap_or_default()
}

impl DataError {
    /// A parse error at `file:line` (1-based) with no particular column.
    pub fn parse(file: impl Into<String>, line: usize, reason: impl Into<String>) -> Self {
        DataError::Parse {
            file: file.into(),
            line,
            column: None,
            reason: reason.into(),
        }
    }

    /// The same parse error, pinned to a 1-based column; other variants are returned unchanged.
    pub fn in_column(self, col: usize) -> Self {
        match self {
            DataError::Parse {
                file, line, reason, ..
            } => DataError::Parse {
                file,
                line,
                column: Some(col),
                reason,
            },
            other => other,
        }
    }

    pub(crate) fn format(file: &str, reason: impl Into<String>) -> Self {
        DataError::Format {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn too_large(file: &str, reason: impl Into<String>) -> Self {
        DataError::TooLarge {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(file: &str, source: std::io::Error) -> Self {
        DataError::Io {
            file: file.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads_and_convert_to_boxed_errors() {
        // clap's FromStr value parser and anyhow need Send + Sync + 'static errors.
        fn assert_bounds<T: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<DataError>();
    }

    #[test]
    fn messages_name_file_line_column_and_reason() {
        let e = DataError::parse("train.svm", 3, "feature index 0 is invalid");
        assert_eq!(e.to_string(), "train.svm:3: feature index 0 is invalid");
        let e = DataError::format("t10k-images-idx3-ubyte", "truncated").in_column(2);
        assert_eq!(e.to_string(), "t10k-images-idx3-ubyte: truncated");
    }
}
