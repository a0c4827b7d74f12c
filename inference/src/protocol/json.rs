//! The JSON pieces of the REST binding: parameters, the request and response objects, and
//! tensor `data` arrays, nested (row-major) or flat.
//!
//! `data` is flattened while it is parsed, into one column of booleans, numbers or strings;
//! it becomes typed only once the tensor's `datatype` is known (the field may come after
//! `data`). A JSON number becomes an integer element only if it is an integer in range (`1.0`
//! is not), and a float element if it is in range of the type (rounded to the nearest value).
//! Output floats that are NaN or infinite have no JSON form and are written as `null`; ask for
//! such outputs in binary.
//!
//! ```
//! use cumulus_inference::protocol::json::JsonColumn;
//! use cumulus_inference::protocol::{DataType, TensorData};
//! let c: JsonColumn = serde_json::from_str("[[1, 2], [3, 4]]").unwrap();
//! assert_eq!(c.len(), 4);
//! let d = c.into_tensor_data("x", DataType::Int16).unwrap();
//! assert_eq!(d, TensorData::I16(vec![1, 2, 3, 4]));
//! ```

use std::fmt;

use bytes::Bytes;
use half::{bf16, f16};
use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::datatype::DataType;
use super::error::ProtocolError;
use super::tensor::{ParameterValue, Parameters, TensorData};

impl Serialize for ParameterValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ParameterValue::Bool(b) => s.serialize_bool(*b),
            ParameterValue::Int64(i) => s.serialize_i64(*i),
            ParameterValue::Uint64(u) => s.serialize_u64(*u),
            ParameterValue::Double(f) => s.serialize_f64(*f),
            ParameterValue::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for ParameterValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ParameterValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter value: a string, a number or a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ParameterValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ParameterValue::Int64(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(ParameterValue::Uint64(v), ParameterValue::Int64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ParameterValue::Double(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ParameterValue::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(ParameterValue::String(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Parameters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Parameters(Deserialize::deserialize(d)?))
    }
}

/// A JSON number as parsed, before it is given a tensor element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JsonNumber {
    /// An integer that fits in `i64`.
    Int(i64),
    /// An integer too large for `i64`.
    Uint(u64),
    /// A number with a fraction or an exponent.
    Float(f64),
}

impl JsonNumber {
    fn as_f64(self) -> f64 {
        match self {
            JsonNumber::Int(i) => i as f64,
            JsonNumber::Uint(u) => u as f64,
            JsonNumber::Float(f) => f,
        }
    }
}

impl fmt::Display for JsonNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonNumber::Int(i) => write!(f, "{i}"),
            JsonNumber::Uint(u) => write!(f, "{u}"),
            JsonNumber::Float(x) => write!(f, "{x}"),
        }
    }
}

/// The flattened elements of a JSON `data` array: all of one JSON kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum JsonColumn {
    /// No elements.
    #[default]
    Empty,
    /// `true` / `false`.
    Bool(Vec<bool>),
    /// Numbers.
    Number(Vec<JsonNumber>),
    /// Strings (the `BYTES` type).
    String(Vec<String>),
}

impl JsonColumn {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            JsonColumn::Empty => 0,
            JsonColumn::Bool(v) => v.len(),
            JsonColumn::Number(v) => v.len(),
            JsonColumn::String(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> &'static str {
        match self {
            JsonColumn::Empty => "nothing",
            JsonColumn::Bool(_) => "booleans",
            JsonColumn::Number(_) => "numbers",
            JsonColumn::String(_) => "strings",
        }
    }

    fn mixed(&self, other: &str) -> String {
        format!(
            "tensor data mixes {} with {other} (element {})",
            self.kind(),
            self.len()
        )
    }

    fn push_bool(&mut self, b: bool) -> Result<(), String> {
        match self {
            JsonColumn::Empty => *self = JsonColumn::Bool(vec![b]),
            JsonColumn::Bool(v) => v.push(b),
            _ => return Err(self.mixed("booleans")),
        }
        Ok(())
    }

    fn push_number(&mut self, n: JsonNumber) -> Result<(), String> {
        match self {
            JsonColumn::Empty => *self = JsonColumn::Number(vec![n]),
            JsonColumn::Number(v) => v.push(n),
            _ => return Err(self.mixed("numbers")),
        }
        Ok(())
    }

    fn push_string(&mut self, s: String) -> Result<(), String> {
        match self {
            JsonColumn::Empty => *self = JsonColumn::String(vec![s]),
            JsonColumn::String(v) => v.push(s),
            _ => return Err(self.mixed("strings")),
        }
        Ok(())
    }

    /// The elements as `datatype`, for the tensor `name`; refuses a JSON kind that does not fit
    /// the type and numbers out of its range, naming the element.
    pub fn into_tensor_data(
        self,
        name: &str,
        datatype: DataType,
    ) -> Result<TensorData, ProtocolError> {
        let wrong_kind = |kind: &str| {
            ProtocolError::bad(format!(
                "tensor '{name}' is {datatype} but its data holds {kind}"
            ))
        };
        let nums = match self {
            JsonColumn::Empty => return Ok(TensorData::with_capacity(datatype, 0)),
            JsonColumn::Bool(v) if datatype == DataType::Bool => return Ok(TensorData::Bool(v)),
            JsonColumn::String(v) if datatype == DataType::Bytes => {
                return Ok(TensorData::Bytes(v.into_iter().map(Bytes::from).collect()));
            }
            JsonColumn::Number(v) if datatype.is_integer() || datatype.is_float() => v,
            other => return Err(wrong_kind(other.kind())),
        };
        Ok(match datatype {
            DataType::Int8 => TensorData::I8(ints(name, datatype, &nums)?),
            DataType::Int16 => TensorData::I16(ints(name, datatype, &nums)?),
            DataType::Int32 => TensorData::I32(ints(name, datatype, &nums)?),
            DataType::Int64 => TensorData::I64(ints(name, datatype, &nums)?),
            DataType::Uint8 => TensorData::U8(ints(name, datatype, &nums)?),
            DataType::Uint16 => TensorData::U16(ints(name, datatype, &nums)?),
            DataType::Uint32 => TensorData::U32(ints(name, datatype, &nums)?),
            DataType::Uint64 => TensorData::U64(ints(name, datatype, &nums)?),
            DataType::Fp16 => TensorData::F16(floats(name, datatype, &nums, f16::from_f64, |x| {
                x.is_infinite()
            })?),
            DataType::Bf16 => {
                TensorData::Bf16(floats(name, datatype, &nums, bf16::from_f64, |x| {
                    x.is_infinite()
                })?)
            }
            DataType::Fp32 => TensorData::F32(floats(
                name,
                datatype,
                &nums,
                |x| x as f32,
                |x| x.is_infinite(),
            )?),
            DataType::Fp64 => TensorData::F64(nums.iter().map(|n| n.as_f64()).collect()),
            DataType::Bool | DataType::Bytes => {
                unreachable!("the kind match above sent numbers only to numeric types")
            }
        })
    }
}

fn ints<T: TryFrom<i64> + TryFrom<u64>>(
    name: &str,
    datatype: DataType,
    nums: &[JsonNumber],
) -> Result<Vec<T>, ProtocolError> {
    nums.iter()
        .enumerate()
        .map(|(i, &n)| {
            let v = match n {
                JsonNumber::Int(v) => T::try_from(v).ok(),
                JsonNumber::Uint(v) => T::try_from(v).ok(),
                JsonNumber::Float(_) => {
                    return Err(ProtocolError::bad(format!(
                        "tensor '{name}' element {i}: {n} is not an integer, as {datatype} needs"
                    )));
                }
            };
            v.ok_or_else(|| {
                ProtocolError::bad(format!(
                    "tensor '{name}' element {i}: {n} is out of range for {datatype}"
                ))
            })
        })
        .collect()
}

fn floats<T>(
    name: &str,
    datatype: DataType,
    nums: &[JsonNumber],
    convert: impl Fn(f64) -> T,
    is_infinite: impl Fn(&T) -> bool,
) -> Result<Vec<T>, ProtocolError> {
    nums.iter()
        .enumerate()
        .map(|(i, &n)| {
            let v = convert(n.as_f64());
            if is_infinite(&v) {
                return Err(ProtocolError::bad(format!(
                    "tensor '{name}' element {i}: {n} is out of range for {datatype}"
                )));
            }
            Ok(v)
        })
        .collect()
}

/// Flattens nested arrays into one [`JsonColumn`]; serde_json's recursion limit bounds the
/// nesting depth, so a deeply nested body is an error, not a stack overflow.
struct Flatten<'a>(&'a mut JsonColumn);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data: numbers, strings or booleans, in arrays nested to any depth")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push_bool(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push_number(JsonNumber::Int(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let n = i64::try_from(v).map_or(JsonNumber::Uint(v), JsonNumber::Int);
        self.0.push_number(n).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push_number(JsonNumber::Float(v)).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_string(v.to_owned()).map_err(E::custom)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.0.push_string(v).map_err(E::custom)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for JsonColumn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut column = JsonColumn::Empty;
        Flatten(&mut column).deserialize(d)?;
        Ok(column)
    }
}

/// Serializes tensor elements as one flat JSON array. `BYTES` elements must be UTF-8 (check
/// with [`bytes_are_utf8`] first for a clear error).
pub struct JsonData<'a>(pub &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Bool(v) => s.collect_seq(v),
            TensorData::I8(v) => s.collect_seq(v),
            TensorData::I16(v) => s.collect_seq(v),
            TensorData::I32(v) => s.collect_seq(v),
            TensorData::I64(v) => s.collect_seq(v),
            TensorData::U8(v) => s.collect_seq(v),
            TensorData::U16(v) => s.collect_seq(v),
            TensorData::U32(v) => s.collect_seq(v),
            TensorData::U64(v) => s.collect_seq(v),
            TensorData::F16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::Bf16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::F32(v) => s.collect_seq(v),
            TensorData::F64(v) => s.collect_seq(v),
            TensorData::Bytes(v) => s.collect_seq(v.iter().map(|b| Utf8(b))),
        }
    }
}

struct Utf8<'a>(&'a [u8]);

impl Serialize for Utf8<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

/// The index of the first `BYTES` element of `data` that is not UTF-8 (and so has no JSON
/// string form), or `None` when all are (or `data` is not `BYTES`).
pub fn bytes_are_utf8(data: &TensorData) -> Option<usize> {
    match data {
        TensorData::Bytes(v) => v.iter().position(|b| std::str::from_utf8(b).is_err()),
        _ => None,
    }
}

/// A tensor as it appears in JSON: a request input or a response output.
#[derive(Debug, Deserialize)]
pub(crate) struct WireTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: DataType,
    #[serde(default)]
    pub parameters: Parameters,
    #[serde(default)]
    pub data: Option<JsonColumn>,
}

/// A requested output as it appears in JSON.
#[derive(Debug, Deserialize)]
pub(crate) struct WireRequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Parameters,
}

/// The inference request object. Unknown fields are ignored (e.g. `model_name`, which some
/// clients send though the URL already says it).
#[derive(Debug, Deserialize)]
pub(crate) struct WireRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
    pub inputs: Vec<WireTensor>,
    #[serde(default)]
    pub outputs: Vec<WireRequestedOutput>,
}

/// The inference response object, as a client reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireResponse {
    pub model_name: String,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
    pub outputs: Vec<WireTensor>,
}

/// A tensor to write: `data` is left out when the tensor travels as binary.
#[derive(Serialize)]
pub(crate) struct WireTensorOut<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    pub shape: &'a [u64],
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonData<'a>>,
}

/// The inference response object, as the server writes it.
#[derive(Serialize)]
pub(crate) struct WireResponseOut<'a> {
    pub model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: &'a Parameters,
    pub outputs: Vec<WireTensorOut<'a>>,
}

/// A requested output to write.
#[derive(Serialize)]
pub(crate) struct WireRequestedOutputOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: &'a Parameters,
}

/// The inference request object, as a client writes it.
#[derive(Serialize)]
pub(crate) struct WireRequestOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: &'a Parameters,
    pub inputs: Vec<WireTensorOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<WireRequestedOutputOut<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(json: &str) -> Result<JsonColumn, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn nested_and_flat_give_the_same_column() {
        assert_eq!(
            column("[[1,2],[3,4]]").unwrap(),
            column("[1,2,3,4]").unwrap()
        );
        assert_eq!(
            column("[[[true]],[false]]").unwrap(),
            JsonColumn::Bool(vec![true, false])
        );
        assert_eq!(column("[]").unwrap(), JsonColumn::Empty);
        assert_eq!(
            column("7").unwrap(),
            JsonColumn::Number(vec![JsonNumber::Int(7)])
        );
    }

    #[test]
    fn mixed_kinds_nulls_and_objects_are_refused() {
        let e = column(r#"[1, "a"]"#).unwrap_err().to_string();
        assert!(e.contains("mixes numbers with strings"), "{e}");
        assert!(column("[1, null]").is_err());
        assert!(column(r#"[{"a": 1}]"#).is_err());
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(column(&deep).is_err());
    }

    #[test]
    fn numbers_are_range_checked_per_type() {
        let c = column("[1, 300]").unwrap();
        let e = c
            .clone()
            .into_tensor_data("x", DataType::Uint8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("element 1: 300 is out of range for UINT8"),
            "{e}"
        );
        assert_eq!(
            c.clone().into_tensor_data("x", DataType::Int16).unwrap(),
            TensorData::I16(vec![1, 300])
        );
        let e = column("[1.5]")
            .unwrap()
            .into_tensor_data("x", DataType::Int32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an integer"), "{e}");
        let e = column("[1e10]")
            .unwrap()
            .into_tensor_data("x", DataType::Fp16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range for FP16"), "{e}");
        assert_eq!(
            column("[18446744073709551615]")
                .unwrap()
                .into_tensor_data("x", DataType::Uint64)
                .unwrap(),
            TensorData::U64(vec![u64::MAX])
        );
        let e = column("[true]")
            .unwrap()
            .into_tensor_data("x", DataType::Fp32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is FP32 but its data holds booleans"), "{e}");
    }

    #[test]
    fn parameters_take_scalars_only() {
        let p: Parameters = serde_json::from_str(
            r#"{"a": 1, "b": "s", "c": true, "d": 0.5, "e": 18446744073709551615}"#,
        )
        .unwrap();
        assert_eq!(p.get("a"), Some(&ParameterValue::Int64(1)));
        assert_eq!(p.get("e"), Some(&ParameterValue::Uint64(u64::MAX)));
        assert_eq!(p.get("d"), Some(&ParameterValue::Double(0.5)));
        assert!(serde_json::from_str::<Parameters>(r#"{"a": [1]}"#).is_err());
        assert!(serde_json::from_str::<Parameters>(r#"{"a": null}"#).is_err());
    }

    #[test]
    fn output_data_is_flat_and_non_finite_floats_are_null() {
        let d = TensorData::F32(vec![1.5, f32::NAN]);
        assert_eq!(serde_json::to_string(&JsonData(&d)).unwrap(), "[1.5,null]");
        let h = TensorData::F16(vec![f16::from_f32(0.5)]);
        assert_eq!(serde_json::to_string(&JsonData(&h)).unwrap(), "[0.5]");
        let b = TensorData::Bytes(vec![Bytes::from_static(b"ok"), Bytes::from_static(b"\xff")]);
        assert_eq!(bytes_are_utf8(&b), Some(1));
        assert!(serde_json::to_string(&JsonData(&b)).is_err());
    }
}
