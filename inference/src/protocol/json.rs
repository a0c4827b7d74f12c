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
        let mut out = TensorData::with_capacity(datatype, self.len());
        let pushed = match self {
            JsonColumn::Empty => Ok(()),
            JsonColumn::Bool(v) => v.into_iter().try_for_each(|b| push_bool(name, &mut out, b)),
            JsonColumn::Number(v) => v
                .into_iter()
                .try_for_each(|n| push_number(name, &mut out, n)),
            JsonColumn::String(v) => v
                .into_iter()
                .try_for_each(|s| push_string(name, &mut out, s)),
        };
        pushed.map_err(ProtocolError::BadRequest)?;
        Ok(out)
    }
}

fn wrong_kind(name: &str, data: &TensorData, kind: &str) -> String {
    format!(
        "tensor '{name}' is {} but its data holds {kind}",
        data.datatype()
    )
}

/// Appends one JSON boolean to `data` (of the tensor `name`), if it is `BOOL`.
fn push_bool(name: &str, data: &mut TensorData, b: bool) -> Result<(), String> {
    match data {
        TensorData::Bool(v) => {
            v.push(b);
            Ok(())
        }
        other => Err(wrong_kind(name, other, "booleans")),
    }
}

/// Appends one JSON string to `data`, if it is `BYTES`.
fn push_string(name: &str, data: &mut TensorData, s: String) -> Result<(), String> {
    match data {
        TensorData::Bytes(v) => {
            v.push(Bytes::from(s));
            Ok(())
        }
        other => Err(wrong_kind(name, other, "strings")),
    }
}

/// Appends one JSON number to `data`: an integer type takes integers in its range (`1.0` is
/// not one), a float type any number that stays finite in it.
fn push_number(name: &str, data: &mut TensorData, n: JsonNumber) -> Result<(), String> {
    let (i, datatype) = (data.len(), data.datatype());
    let out_of_range =
        || format!("tensor '{name}' element {i}: {n} is out of range for {datatype}");
    macro_rules! int {
        ($v:expr) => {{
            let x = match n {
                JsonNumber::Int(x) => x.try_into().ok(),
                JsonNumber::Uint(x) => x.try_into().ok(),
                JsonNumber::Float(_) => {
                    return Err(format!(
                        "tensor '{name}' element {i}: {n} is not an integer, as {datatype} needs"
                    ));
                }
            };
            $v.push(x.ok_or_else(out_of_range)?);
            Ok(())
        }};
    }
    macro_rules! float {
        ($v:expr, $convert:expr) => {{
            let x = $convert(n.as_f64());
            if x.is_infinite() {
                return Err(out_of_range());
            }
            $v.push(x);
            Ok(())
        }};
    }
    match data {
        TensorData::I8(v) => int!(v),
        TensorData::I16(v) => int!(v),
        TensorData::I32(v) => int!(v),
        TensorData::I64(v) => int!(v),
        TensorData::U8(v) => int!(v),
        TensorData::U16(v) => int!(v),
        TensorData::U32(v) => int!(v),
        TensorData::U64(v) => int!(v),
        TensorData::F16(v) => float!(v, f16::from_f64),
        TensorData::Bf16(v) => float!(v, bf16::from_f64),
        TensorData::F32(v) => float!(v, |x: f64| x as f32),
        TensorData::F64(v) => float!(v, |x: f64| x),
        other @ (TensorData::Bool(_) | TensorData::Bytes(_)) => {
            Err(wrong_kind(name, other, "numbers"))
        }
    }
}

/// Parses `data` straight into `TensorData` of a known datatype (the usual case: clients write
/// `datatype` before `data`), flattening nested arrays as [`Flatten`] does.
pub(super) struct Typed<'a> {
    pub name: &'a str,
    pub data: &'a mut TensorData,
}

impl<'de> DeserializeSeed<'de> for Typed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Typed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data: numbers, strings or booleans, in arrays nested to any depth")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        push_bool(self.name, self.data, v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        push_number(self.name, self.data, JsonNumber::Int(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let n = i64::try_from(v).map_or(JsonNumber::Uint(v), JsonNumber::Int);
        push_number(self.name, self.data, n).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        push_number(self.name, self.data, JsonNumber::Float(v)).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        push_string(self.name, self.data, v.to_owned()).map_err(E::custom)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        push_string(self.name, self.data, v).map_err(E::custom)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (name, data) = (self.name, self.data);
        while seq
            .next_element_seed(Typed {
                name,
                data: &mut *data,
            })?
            .is_some()
        {}
        Ok(())
    }
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
