//! Turning the label column of a text file into numeric labels.
//!
//! [`LabelEncoding::Auto`] keeps numbers as they are (class indices, 0/1 targets, regression
//! values); when any label is not a number, the labels are class names instead and are mapped to
//! `0..k` in **sorted** (byte-wise) order, so the mapping does not depend on row order.
//! [`LabelEncoding::Positive`] makes a binary target: 1 for the given value, 0 for any other.
//!
//! ```
//! use cumulus_models::data::{LabelEncoder, LabelEncoding};
//!
//! let mut enc = LabelEncoder::new(LabelEncoding::Auto);
//! for v in ["setosa", "virginica", "setosa", "versicolor"] {
//!     enc.push(v);
//! }
//! let (labels, classes) = enc.finish();
//! assert_eq!(labels, vec![0.0, 2.0, 0.0, 1.0]);
//! assert_eq!(classes.unwrap(), vec!["setosa", "versicolor", "virginica"]);
//! ```

use std::collections::HashMap;

use super::source::parse_number;

/// How the label column's text becomes a number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LabelEncoding {
    /// Numbers when every label is a number; otherwise sorted class names mapped to `0..k`.
    #[default]
    Auto,
    /// Binary target: 1.0 where the (trimmed) label equals this value, 0.0 elsewhere.
    Positive(String),
}

/// Collects label strings row by row; [`finish`](LabelEncoder::finish) encodes them.
#[derive(Debug)]
pub struct LabelEncoder {
    encoding: LabelEncoding,
    ids: HashMap<String, u32>,
    names: Vec<String>,
    rows: Vec<u32>,
}

impl LabelEncoder {
    pub fn new(encoding: LabelEncoding) -> Self {
        LabelEncoder {
            encoding,
            ids: HashMap::new(),
            names: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Records the label of the next row.
    pub fn push(&mut self, label: &str) {
        let label = label.trim();
        let id = match self.ids.get(label) {
            Some(&id) => id,
            None => {
                // Distinct labels never outnumber rows, and rows are bounded by ReadLimits.
                let id = self.names.len() as u32;
                self.ids.insert(label.to_string(), id);
                self.names.push(label.to_string());
                id
            }
        };
        self.rows.push(id);
    }

    /// Number of labels pushed.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no label was pushed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The labels, and the class names when they were mapped from names (`Auto` with text labels).
    pub fn finish(self) -> (Vec<f32>, Option<Vec<String>>) {
        match &self.encoding {
            LabelEncoding::Positive(positive) => {
                let value: Vec<f32> = self
                    .names
                    .iter()
                    .map(|n| if n == positive.trim() { 1.0 } else { 0.0 })
                    .collect();
                (self.rows.iter().map(|&i| value[i as usize]).collect(), None)
            }
            LabelEncoding::Auto => {
                let numbers: Result<Vec<f32>, _> =
                    self.names.iter().map(|n| parse_number(n)).collect();
                if let Ok(numbers) = numbers {
                    return (
                        self.rows.iter().map(|&i| numbers[i as usize]).collect(),
                        None,
                    );
                }
                let mut sorted: Vec<(usize, &String)> = self.names.iter().enumerate().collect();
                sorted.sort_by(|a, b| a.1.cmp(b.1));
                let mut class_of = vec![0.0f32; self.names.len()];
                for (class, (id, _)) in sorted.iter().enumerate() {
                    class_of[*id] = class as f32;
                }
                let classes = sorted.into_iter().map(|(_, n)| n.clone()).collect();
                let labels = self.rows.iter().map(|&i| class_of[i as usize]).collect();
                (labels, Some(classes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_labels_stay_numbers() {
        let mut enc = LabelEncoder::new(LabelEncoding::Auto);
        for v in ["3", " 1.5", "3"] {
            enc.push(v);
        }
        assert_eq!(enc.finish(), (vec![3.0, 1.5, 3.0], None));
    }

    #[test]
    fn positive_value_gives_binary_labels() {
        let mut enc = LabelEncoder::new(LabelEncoding::Positive(">50K".into()));
        for v in ["<=50K", ">50K", " >50K", ">50K."] {
            enc.push(v);
        }
        assert_eq!(enc.finish().0, vec![0.0, 1.0, 1.0, 0.0]);
    }
}
