//! Tensor element types of the Open Inference Protocol, by their wire names.
//!
//! ```
//! use cumulus_inference::protocol::DataType;
//! let t: DataType = "FP16".parse().unwrap();
//! assert_eq!(t, DataType::Fp16);
//! assert_eq!(t.to_string(), "FP16");
//! assert_eq!(t.byte_size(), Some(2));
//! assert_eq!(DataType::Bytes.byte_size(), None);
//! assert!("fp16".parse::<DataType>().is_err()); // names are case-sensitive, as in the spec
//! ```

use std::fmt;
use std::str::FromStr;

use super::error::ProtocolError;

/// The element type of a tensor (the spec's "Tensor Data Types" table, plus Triton's BF16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`: one byte per element, 0 or 1.
    Bool,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `FP16`: IEEE half precision.
    Fp16,
    /// `BF16`: bfloat16.
    Bf16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: variable-length byte strings.
    Bytes,
}

impl DataType {
    /// Every data type, in the spec's order.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The wire name (`"FP32"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the binary (raw) form; `None` for `BYTES`, whose elements vary.
    pub fn byte_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Int8 | DataType::Uint8 => Some(1),
            DataType::Int16 | DataType::Uint16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Int32 | DataType::Uint32 | DataType::Fp32 => Some(4),
            DataType::Int64 | DataType::Uint64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// Whether this is one of the integer types.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Uint8
                | DataType::Uint16
                | DataType::Uint32
                | DataType::Uint64
        )
    }

    /// Whether this is one of the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                ProtocolError::BadRequest(format!(
                    "unknown datatype {:?}; expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64, BYTES",
                    truncate(s, 32)
                ))
            })
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// At most `max` characters of `s`, for echoing client input in error messages without
/// letting a megabyte-long field become a megabyte-long error.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for t in DataType::ALL {
            assert_eq!(t.as_str().parse::<DataType>().unwrap(), t);
        }
    }

    #[test]
    fn unknown_names_are_bad_requests() {
        let err = "FLOAT".parse::<DataType>().unwrap_err();
        assert!(matches!(err, ProtocolError::BadRequest(_)));
        assert!(err.to_string().contains("FLOAT"));
    }

    #[test]
    fn truncate_cuts_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
