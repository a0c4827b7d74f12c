//! Ratings files (MovieLens): `(user, item, rating)` triples for matrix factorization.
//!
//! Two layouts, told apart by the first line:
//! - MovieLens `u.data`: tab-separated `user item rating timestamp`, no header;
//! - RecBole atomic files (`.inter`): a tab-separated header of `name:type` fields, e.g.
//!   `user_id:token  item_id:token  rating:float  timestamp:float`; the columns are found by name
//!   (`user_id`, `item_id`, `rating`; others are ignored).
//!
//! Raw user and item ids are remapped to dense ids `0..n` in order of first appearance; the
//! mapping back to raw ids is kept in [`Ratings::user_ids`] / [`Ratings::item_ids`]. Labels are the
//! ratings.
//!
//! ```
//! use cumulus_models::data::ratings::{self, RatingsOptions};
//! use cumulus_models::data::Features;
//!
//! let text = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t878887116\n";
//! let r = ratings::read("u.data", text.as_bytes(), &RatingsOptions::default()).unwrap();
//! assert_eq!(r.dataset.labels, vec![3.0, 3.0, 1.0]);
//! let Features::Ratings { users, items, n_users, n_items } = &r.dataset.features else { panic!() };
//! assert_eq!((users.as_slice(), items.as_slice(), *n_users, *n_items), (&[0, 1, 0][..], &[0, 1, 1][..], 2, 2));
//! assert_eq!(r.user_ids, vec!["196", "186"]);
//! ```

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use super::source::{LineReader, ReadLimits, open_path, parse_number};
use super::{DataError, Dataset, Features};

/// Options of the ratings reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RatingsOptions {
    /// Bounds rows; `max_features` bounds the number of distinct users and of distinct items.
    pub limits: ReadLimits,
}

/// A ratings dataset and the raw ids behind its dense ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratings {
    pub dataset: Dataset,
    /// `user_ids[dense id]` is the raw user id as written in the file.
    pub user_ids: Vec<String>,
    /// `item_ids[dense id]` is the raw item id as written in the file.
    pub item_ids: Vec<String>,
}

/// Reads a ratings file (`.gz` transparently).
pub fn load(path: impl AsRef<Path>, opts: &RatingsOptions) -> Result<Ratings, DataError> {
    let path = path.as_ref();
    read(&path.display().to_string(), open_path(path)?, opts)
}

/// Dense ids in order of first appearance.
#[derive(Default)]
struct IdMap {
    dense: HashMap<String, u32>,
    raw: Vec<String>,
}

impl IdMap {
    fn id(&mut self, raw: &str) -> u32 {
        if let Some(&id) = self.dense.get(raw) {
            return id;
        }
        // Distinct ids never outnumber rows, which ReadLimits bounds far below u32::MAX.
        let id = self.raw.len() as u32;
        self.dense.insert(raw.to_string(), id);
        self.raw.push(raw.to_string());
        id
    }
}

/// Reads ratings text from `reader`; `name` is used in errors and as the dataset name.
pub fn read(name: &str, reader: impl BufRead, opts: &RatingsOptions) -> Result<Ratings, DataError> {
    let limits = opts.limits;
    let mut lines = LineReader::new(name, reader, limits);
    // (user, item, rating) column indices and the column count, fixed by the first line.
    let mut layout: Option<([usize; 3], usize)> = None;
    let (mut users, mut items) = (IdMap::default(), IdMap::default());
    let (mut user_col, mut item_col, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    while let Some((line_no, line)) = lines.next_line()? {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let ([u, i, r], n_columns) = match layout {
            Some(layout) => layout,
            None => {
                let found = if fields[0].contains(':') {
                    (
                        inter_columns(&fields).map_err(|r| DataError::parse(name, line_no, r))?,
                        true,
                    )
                } else if fields.len() >= 3 {
                    (([0, 1, 2], fields.len()), false)
                } else {
                    return Err(DataError::parse(
                        name,
                        line_no,
                        format!(
                            "expected tab-separated `user item rating [timestamp]` or a RecBole header, found {} column(s)",
                            fields.len()
                        ),
                    ));
                };
                layout = Some(found.0);
                if found.1 {
                    continue;
                }
                found.0
            }
        };
        if fields.len() != n_columns {
            return Err(DataError::parse(
                name,
                line_no,
                format!(
                    "expected {n_columns} tab-separated columns, found {}",
                    fields.len()
                ),
            ));
        }
        for (col, what) in [(u, "user id"), (i, "item id")] {
            if fields[col].is_empty() {
                return Err(
                    DataError::parse(name, line_no, format!("empty {what}")).in_column(col + 1)
                );
            }
        }
        let rating = parse_number(fields[r]).map_err(|e| {
            DataError::parse(name, line_no, format!("rating: {e}")).in_column(r + 1)
        })?;
        limits.check_rows(name, labels.len() + 1)?;
        user_col.push(users.id(fields[u]));
        item_col.push(items.id(fields[i]));
        let distinct = users.raw.len().max(items.raw.len());
        if distinct > limits.max_features {
            return Err(DataError::TooLarge {
                file: name.to_string(),
                reason: format!(
                    "more than {} distinct users or items (max_features)",
                    limits.max_features
                ),
            });
        }
        labels.push(rating);
    }
    if labels.is_empty() {
        return Err(DataError::format(name, "no ratings"));
    }
    let dataset = Dataset {
        name: name.to_string(),
        features: Features::Ratings {
            users: user_col,
            items: item_col,
            n_users: users.raw.len(),
            n_items: items.raw.len(),
        },
        labels,
        example_shape: vec![2],
    };
    Ok(Ratings {
        dataset,
        user_ids: users.raw,
        item_ids: items.raw,
    })
}

/// Finds `user_id`, `item_id` and `rating` in a RecBole header of `name:type` fields.
fn inter_columns(header: &[&str]) -> Result<([usize; 3], usize), String> {
    let find = |wanted: &str| {
        header
            .iter()
            .position(|h| h.split_once(':').map_or(*h, |(n, _)| n) == wanted)
            .ok_or_else(|| format!("RecBole header has no {wanted:?} column: {header:?}"))
    };
    Ok((
        [find("user_id")?, find("item_id")?, find("rating")?],
        header.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recbole_inter_columns_are_found_by_name() {
        let text = "item_id:token\tuser_id:token\trating:float\ttimestamp:float\n\
                    242\t196\t3\t881250949\n302\t186\t4.5\t891717742\n";
        let r = read("ml.inter", text.as_bytes(), &RatingsOptions::default()).unwrap();
        assert_eq!(r.user_ids, vec!["196", "186"]);
        assert_eq!(r.item_ids, vec!["242", "302"]);
        assert_eq!(r.dataset.labels, vec![3.0, 4.5]);
    }

    #[test]
    fn malformed_rows_are_refused() {
        let opts = RatingsOptions::default();
        let e = read("u.data", "1\t2\t3\t4\n1\t2\tx\t4\n".as_bytes(), &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "u.data:2: column 3: rating: \"x\" is not a number"
        );
        let e = read("u.data", "1\t2\t3\t4\n1\t2\t3\n".as_bytes(), &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "u.data:2: expected 4 tab-separated columns, found 3"
        );
        let e = read("u.data", "1 2 3 4\n".as_bytes(), &opts).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("u.data:1: expected tab-separated"),
            "{e}"
        );
        let e = read("x.inter", "user_id:token\trating:float\n".as_bytes(), &opts).unwrap_err();
        assert!(e.to_string().contains("no \"item_id\" column"), "{e}");
        let e = read(
            "x.inter",
            "user_id:token\titem_id:token\trating:float\n".as_bytes(),
            &opts,
        );
        assert_eq!(e.unwrap_err().to_string(), "x.inter: no ratings");
    }
}
