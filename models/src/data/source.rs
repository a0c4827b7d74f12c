//! Reading text files line by line, with transparent `.gz`, bounded sizes and 1-based line numbers.
//!
//! Every text reader in [`data`](super) goes through [`LineReader`], so they share the same limits
//! and the same error messages:
//!
//! ```
//! use cumulus_models::data::{LineReader, ReadLimits};
//!
//! let text = "a,b\n\n1,2\r\n";
//! let mut lines = LineReader::new("t.csv", text.as_bytes(), ReadLimits::default());
//! assert_eq!(lines.next_line().unwrap(), Some((1, "a,b")));
//! assert_eq!(lines.next_line().unwrap(), Some((2, "")));
//! assert_eq!(lines.next_line().unwrap(), Some((3, "1,2")));
//! assert_eq!(lines.next_line().unwrap(), None);
//! ```

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::DataError;

/// Upper bounds on what a reader accepts, so a huge or hostile file is refused with a clear error
/// instead of exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most data rows (examples) a file may hold.
    pub max_rows: usize,
    /// Most features per example (columns of a dense file, the largest index of a sparse one,
    /// hash buckets, pixels of one image).
    pub max_features: usize,
    /// Most values held in memory in all (dense cells, or sparse non-zeros).
    pub max_values: usize,
    /// Longest line, in bytes, of a text file.
    pub max_line_bytes: usize,
}

impl Default for ReadLimits {
    /// 10 million rows, 2^24 features (indices stay exact in f32), 2^28 values (1 GiB of f32),
    /// 16 MiB lines.
    fn default() -> Self {
        ReadLimits {
            max_rows: 10_000_000,
            max_features: 1 << 24,
            max_values: 1 << 28,
            max_line_bytes: 16 << 20,
        }
    }
}

impl ReadLimits {
    /// Refuses a row count above `max_rows`.
    pub(crate) fn check_rows(&self, file: &str, rows: usize) -> Result<(), DataError> {
        if rows > self.max_rows {
            return Err(DataError::too_large(
                file,
                format!("more than {} rows (max_rows)", self.max_rows),
            ));
        }
        Ok(())
    }

    /// Refuses a feature count above `max_features`.
    pub(crate) fn check_features(&self, file: &str, features: usize) -> Result<(), DataError> {
        if features > self.max_features {
            return Err(DataError::too_large(
                file,
                format!(
                    "{features} features, more than {} (max_features)",
                    self.max_features
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a stored value count above `max_values`.
    pub(crate) fn check_values(&self, file: &str, values: usize) -> Result<(), DataError> {
        if values > self.max_values {
            return Err(DataError::too_large(
                file,
                format!("more than {} values (max_values)", self.max_values),
            ));
        }
        Ok(())
    }
}

/// Opens `path` for reading, decompressing it on the fly when its name ends in `.gz`.
pub fn open_path(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
    Ok(maybe_gunzip(&name, file))
}

/// Wraps `reader` in a gzip decoder when `name` ends in `.gz`.
pub(crate) fn maybe_gunzip<R: Read + 'static>(name: &str, reader: R) -> Box<dyn BufRead> {
    if name.ends_with(".gz") {
        // MultiGzDecoder: concatenated gzip members (as `cat a.gz b.gz` makes) are one stream.
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Box::new(BufReader::new(reader))
    }
}

/// The file name without a trailing `.gz`, for format guessing.
pub(crate) fn strip_gz(name: &str) -> &str {
    name.strip_suffix(".gz").unwrap_or(name)
}

/// Reads a text stream one line at a time, counting lines from 1 and bounding line length.
pub struct LineReader<R> {
    name: String,
    reader: R,
    buf: Vec<u8>,
    line_no: usize,
    limits: ReadLimits,
}

impl<R: BufRead> LineReader<R> {
    /// A reader of `reader`, whose errors name the file `name`.
    pub fn new(name: impl Into<String>, reader: R, limits: ReadLimits) -> Self {
        LineReader {
            name: name.into(),
            reader,
            buf: Vec::new(),
            line_no: 0,
            limits,
        }
    }

    /// The file name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next line as `(1-based line number, text without "\n" or "\r\n")`, or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<(usize, &str)>, DataError> {
        self.buf.clear();
        let max = self.limits.max_line_bytes;
        // Read at most one byte past the limit, so an endless line cannot exhaust memory.
        let n = (&mut self.reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| DataError::io(&self.name, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if n > max {
            return Err(DataError::too_large(
                &self.name,
                format!(
                    "line {} is longer than {max} bytes (max_line_bytes)",
                    self.line_no
                ),
            ));
        }
        match std::str::from_utf8(&self.buf) {
            Ok(text) => Ok(Some((self.line_no, text))),
            Err(e) => Err(DataError::parse(
                &self.name,
                self.line_no,
                format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1),
            )),
        }
    }
}

/// Splits one line into fields at `delimiter`, honouring RFC 4180 double quotes (`"a,b"`, `""`
/// for a quote inside a quoted field). Fields are trimmed of surrounding spaces. The error is the
/// reason only; the caller adds file and line.
pub fn split_fields(line: &str, delimiter: char) -> Result<Vec<Cow<'_, str>>, String> {
    if !line.contains('"') {
        return Ok(line
            .split(delimiter)
            .map(|f| Cow::Borrowed(f.trim()))
            .collect());
    }
    let mut fields = Vec::new();
    let mut chars = line.char_indices().peekable();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some((_, c)) = chars.next() {
        if quoted {
            if c == '"' {
                if matches!(chars.peek(), Some((_, '"'))) {
                    chars.next();
                    current.push('"');
                } else {
                    quoted = false;
                }
            } else {
                current.push(c);
            }
        } else if c == delimiter {
            fields.push(finish_field(&mut current, was_quoted));
            was_quoted = false;
        } else if was_quoted && c.is_whitespace() {
            // Spaces between a closing quote and the delimiter are padding, not data.
        } else if c == '"' && current.trim().is_empty() && !was_quoted {
            current.clear();
            quoted = true;
            was_quoted = true;
        } else {
            current.push(c);
        }
    }
    if quoted {
        return Err(format!(
            "field {} has an unterminated quote",
            fields.len() + 1
        ));
    }
    fields.push(finish_field(&mut current, was_quoted));
    Ok(fields)
}

fn finish_field(current: &mut String, was_quoted: bool) -> Cow<'static, str> {
    let field = std::mem::take(current);
    if was_quoted {
        Cow::Owned(field)
    } else {
        Cow::Owned(field.trim().to_string())
    }
}

/// Parses a finite number; the error is the reason only (`"abc" is not a number`).
pub fn parse_number(field: &str) -> Result<f32, String> {
    match field.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{field:?} is not a finite number")),
        Err(_) if field.is_empty() => Err("empty value".to_string()),
        Err(_) => Err(format!("{field:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_delimiters_and_escaped_quotes() {
        let f = split_fields(r#"1, "a,b" ,"say ""hi""",x"#, ',').unwrap();
        assert_eq!(f, vec!["1", "a,b", "say \"hi\"", "x"]);
        assert!(
            split_fields("\"open,1", ',')
                .unwrap_err()
                .contains("unterminated")
        );
    }

    #[test]
    fn numbers_must_be_finite() {
        assert_eq!(parse_number("-1.5e1"), Ok(-15.0));
        assert_eq!(parse_number("abc").unwrap_err(), "\"abc\" is not a number");
        assert!(parse_number("NaN").unwrap_err().contains("finite"));
        assert_eq!(parse_number("").unwrap_err(), "empty value");
    }

    #[test]
    fn overlong_lines_and_bad_utf8_are_refused() {
        let limits = ReadLimits {
            max_line_bytes: 4,
            ..ReadLimits::default()
        };
        let mut r = LineReader::new("long.txt", "abcd\nabcdefgh\n".as_bytes(), limits);
        assert_eq!(r.next_line().unwrap(), Some((1, "abcd")));
        let e = r.next_line().unwrap_err().to_string();
        assert!(
            e.contains("long.txt") && e.contains("line 2 is longer"),
            "{e}"
        );

        let bytes: &[u8] = b"ok\n\xff\xfe\n";
        let mut r = LineReader::new("bin.txt", bytes, ReadLimits::default());
        r.next_line().unwrap();
        let e = r.next_line().unwrap_err().to_string();
        assert!(e.starts_with("bin.txt:2: not valid UTF-8"), "{e}");
    }
}
