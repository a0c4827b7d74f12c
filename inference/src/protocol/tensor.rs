//! Typed tensors and the key/value parameters that ride along with requests, inputs and outputs.
//!
//! A [`Tensor`]'s element type is the variant of its [`TensorData`], so the two can never
//! disagree; [`Tensor::new`] checks that the shape and the element count agree.
//!
//! ```
//! use cumulus_inference::protocol::{DataType, Tensor, TensorData};
//! let t = Tensor::new("x", vec![2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
//! assert_eq!(t.datatype(), DataType::Fp32);
//! assert!(Tensor::new("x", vec![3], TensorData::F32(vec![1.0])).is_err());
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use half::{bf16, f16};

use super::datatype::DataType;
use super::error::ProtocolError;
use super::limits::element_count;

/// Runs `$body` with `$v` bound to the inner `Vec` of whichever variant `$data` is, for code
/// that is the same for every element type (`len`, `clear`, ...).
macro_rules! with_elements {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::Bf16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// The elements of a tensor, flattened in row-major order, in their native type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`.
    Bool(Vec<bool>),
    /// `INT8`.
    I8(Vec<i8>),
    /// `INT16`.
    I16(Vec<i16>),
    /// `INT32`.
    I32(Vec<i32>),
    /// `INT64`.
    I64(Vec<i64>),
    /// `UINT8`.
    U8(Vec<u8>),
    /// `UINT16`.
    U16(Vec<u16>),
    /// `UINT32`.
    U32(Vec<u32>),
    /// `UINT64`.
    U64(Vec<u64>),
    /// `FP16`.
    F16(Vec<f16>),
    /// `BF16`.
    Bf16(Vec<bf16>),
    /// `FP32`.
    F32(Vec<f32>),
    /// `FP64`.
    F64(Vec<f64>),
    /// `BYTES`: each element is one byte string (cheap to clone: `Bytes` is reference-counted).
    Bytes(Vec<Bytes>),
}

impl TensorData {
    /// The element type.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::I8(_) => DataType::Int8,
            TensorData::I16(_) => DataType::Int16,
            TensorData::I32(_) => DataType::Int32,
            TensorData::I64(_) => DataType::Int64,
            TensorData::U8(_) => DataType::Uint8,
            TensorData::U16(_) => DataType::Uint16,
            TensorData::U32(_) => DataType::Uint32,
            TensorData::U64(_) => DataType::Uint64,
            TensorData::F16(_) => DataType::Fp16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::F32(_) => DataType::Fp32,
            TensorData::F64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_elements!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of type `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> Self {
        match datatype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::Int8 => TensorData::I8(Vec::with_capacity(capacity)),
            DataType::Int16 => TensorData::I16(Vec::with_capacity(capacity)),
            DataType::Int32 => TensorData::I32(Vec::with_capacity(capacity)),
            DataType::Int64 => TensorData::I64(Vec::with_capacity(capacity)),
            DataType::Uint8 => TensorData::U8(Vec::with_capacity(capacity)),
            DataType::Uint16 => TensorData::U16(Vec::with_capacity(capacity)),
            DataType::Uint32 => TensorData::U32(Vec::with_capacity(capacity)),
            DataType::Uint64 => TensorData::U64(Vec::with_capacity(capacity)),
            DataType::Fp16 => TensorData::F16(Vec::with_capacity(capacity)),
            DataType::Bf16 => TensorData::Bf16(Vec::with_capacity(capacity)),
            DataType::Fp32 => TensorData::F32(Vec::with_capacity(capacity)),
            DataType::Fp64 => TensorData::F64(Vec::with_capacity(capacity)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
        }
    }
}

/// One parameter value: the JSON scalars of the REST binding and the `InferParameter` oneof of
/// the gRPC binding (which adds `double` and `uint64`).
#[derive(Debug, Clone, PartialEq)]
pub enum ParameterValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer (JSON integers that fit in `i64` become this).
    Int64(i64),
    /// An unsigned integer too large for `i64` (or gRPC's `uint64_param`).
    Uint64(u64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    String(String),
}

impl ParameterValue {
    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParameterValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParameterValue::Int64(i) => Some(*i),
            ParameterValue::Uint64(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParameterValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Parameters by name, in name order. Unknown ones are passed through to the backend untouched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(pub BTreeMap<String, ParameterValue>);

impl Parameters {
    /// No parameters.
    pub fn new() -> Self {
        Parameters::default()
    }

    /// The value named `key`.
    pub fn get(&self, key: &str) -> Option<&ParameterValue> {
        self.0.get(key)
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: ParameterValue,
    ) -> Option<ParameterValue> {
        self.0.insert(key.into(), value)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<ParameterValue> {
        self.0.remove(key)
    }

    /// The boolean named `key`: `Ok(None)` when absent, an error naming it when not a boolean.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                ProtocolError::bad(format!("parameter '{key}' must be a boolean, got {v:?}"))
            }),
        }
    }

    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ParameterValue)> {
        self.0.iter()
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, ParameterValue)> for Parameters {
    fn from_iter<I: IntoIterator<Item = (K, ParameterValue)>>(iter: I) -> Self {
        Parameters(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// A named tensor: an input of a request or an output of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The tensor's name, as the model's metadata spells it.
    pub name: String,
    /// The dimensions, outermost first.
    pub shape: Vec<u64>,
    /// The elements; their count is the product of `shape`.
    pub data: TensorData,
    /// The tensor's parameters (transport-only ones such as `binary_data_size` are removed on
    /// decode and added on encode).
    pub parameters: Parameters,
}

impl Tensor {
    /// A tensor without parameters, after checking that `shape` holds exactly `data.len()`
    /// elements.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<u64>,
        data: TensorData,
    ) -> Result<Self, ProtocolError> {
        let name = name.into();
        check_count(&name, &shape, data.len())?;
        Ok(Tensor {
            name,
            shape,
            data,
            parameters: Parameters::new(),
        })
    }

    /// The element type.
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Checks that the shape holds exactly as many elements as the data has.
    pub fn check(&self) -> Result<(), ProtocolError> {
        check_count(&self.name, &self.shape, self.data.len())
    }
}

fn check_count(name: &str, shape: &[u64], len: usize) -> Result<(), ProtocolError> {
    match element_count(shape) {
        Some(n) if n == len as u64 => Ok(()),
        Some(n) => Err(ProtocolError::bad(format!(
            "tensor '{name}': shape {shape:?} holds {n} elements, but {len} were given"
        ))),
        None => Err(ProtocolError::too_large(format!(
            "tensor '{name}': shape {shape:?} has more elements than fit in 64 bits"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_capacity_has_the_asked_type_for_every_type() {
        for t in DataType::ALL {
            let d = TensorData::with_capacity(t, 3);
            assert_eq!(d.datatype(), t);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn parameters_get_bool_names_the_key() {
        let p: Parameters = [("binary_data", ParameterValue::Int64(1))]
            .into_iter()
            .collect();
        let e = p.get_bool("binary_data").unwrap_err();
        assert!(e.to_string().contains("binary_data"), "{e}");
        assert_eq!(Parameters::new().get_bool("binary_data"), Ok(None));
    }

    #[test]
    fn overflowing_shapes_are_too_large() {
        let e = Tensor::new("x", vec![u64::MAX, 2], TensorData::U8(vec![])).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge(_)));
    }
}
