//! Converting a tensor to the datatype its model expects, where that loses nothing that
//! matters, and refusing with the element and the reason where it would.
//!
//! The rules (applied to every element; the first that fails names itself):
//! - integer to integer: when the value fits the target type;
//! - integer to float: when the value is exactly representable (e.g. at most 2^24 in
//!   magnitude, or a multiple of a power of two, for FP32);
//! - float to float: widening always; narrowing (and FP16 to/from BF16) when a finite value stays
//!   finite; NaN and infinities carry over. Precision may round, as any float narrowing does;
//! - float to integer: never. A float tensor sent to an integer input is almost always a client
//!   bug (normalized pixels sent to token ids, say), and accepting it whenever the values happen
//!   to be integral would make an error depend on the data;
//! - `BOOL` and `BYTES` to or from anything else: never.
//!
//! ```
//! use cumulus_inference::protocol::{coerce, DataType, TensorData};
//! let d = coerce("x", TensorData::I64(vec![1, 2]), DataType::Fp32).unwrap();
//! assert_eq!(d, TensorData::F32(vec![1.0, 2.0]));
//! let e = coerce("x", TensorData::I64(vec![0, 1 << 25 | 1]), DataType::Fp32).unwrap_err();
//! assert!(e.to_string().contains("element 1"));
//! assert!(coerce("x", TensorData::F32(vec![1.0]), DataType::Int32).is_err());
//! ```

use half::{bf16, f16};

use super::datatype::DataType;
use super::error::ProtocolError;
use super::tensor::TensorData;

/// Every element as an `i128` (which holds every `i64` and `u64`), for integer sources.
fn int_values(data: &TensorData) -> Option<Box<dyn Iterator<Item = i128> + '_>> {
    Some(match data {
        TensorData::I8(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::I16(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::I32(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::I64(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::U8(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::U16(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::U32(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        TensorData::U64(v) => Box::new(v.iter().map(|&x| i128::from(x))),
        _ => return None,
    })
}

/// Every element as an `f64` (exact for every float type), for float sources.
fn float_values(data: &TensorData) -> Option<Box<dyn Iterator<Item = f64> + '_>> {
    Some(match data {
        TensorData::F16(v) => Box::new(v.iter().map(|x| x.to_f64())),
        TensorData::Bf16(v) => Box::new(v.iter().map(|x| x.to_f64())),
        TensorData::F32(v) => Box::new(v.iter().map(|&x| f64::from(x))),
        TensorData::F64(v) => Box::new(v.iter().copied()),
        _ => return None,
    })
}

struct Ctx<'a> {
    name: &'a str,
    from: DataType,
    to: DataType,
}

impl Ctx<'_> {
    fn fail(&self, index: usize, value: impl std::fmt::Display, why: &str) -> ProtocolError {
        ProtocolError::bad(format!(
            "input '{}' is {} but the model expects {}, and element {index} ({value}) {why}",
            self.name, self.from, self.to
        ))
    }

    fn ints<T: TryFrom<i128>>(
        &self,
        values: impl Iterator<Item = i128>,
    ) -> Result<Vec<T>, ProtocolError> {
        values
            .enumerate()
            .map(|(i, v)| T::try_from(v).map_err(|_| self.fail(i, v, "does not fit")))
            .collect()
    }

    /// Integers to a float type, keeping only exactly representable values.
    fn exact<T>(
        &self,
        values: impl Iterator<Item = i128>,
        to: impl Fn(i128) -> T,
        back: impl Fn(&T) -> f64,
    ) -> Result<Vec<T>, ProtocolError> {
        values
            .enumerate()
            .map(|(i, v)| {
                let t = to(v);
                let b = back(&t);
                // `as i128` saturates, and an infinity never equals a finite `v`.
                if b.is_finite() && b as i128 == v {
                    Ok(t)
                } else {
                    Err(self.fail(i, v, "is not exactly representable"))
                }
            })
            .collect()
    }

    /// Floats to a float type: a finite value must stay finite.
    fn floats<T>(
        &self,
        values: impl Iterator<Item = f64>,
        to: impl Fn(f64) -> T,
        is_infinite: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, ProtocolError> {
        values
            .enumerate()
            .map(|(i, v)| {
                let t = to(v);
                if v.is_finite() && is_infinite(&t) {
                    Err(self.fail(i, v, "is out of range"))
                } else {
                    Ok(t)
                }
            })
            .collect()
    }
}

/// `data` (of the input `name`) converted to `to` by the rules of this module; unchanged when
/// it already is `to`.
pub fn coerce(name: &str, data: TensorData, to: DataType) -> Result<TensorData, ProtocolError> {
    let from = data.datatype();
    if from == to {
        return Ok(data);
    }
    let cx = Ctx { name, from, to };
    if let Some(values) = int_values(&data) {
        return Ok(match to {
            DataType::Int8 => TensorData::I8(cx.ints(values)?),
            DataType::Int16 => TensorData::I16(cx.ints(values)?),
            DataType::Int32 => TensorData::I32(cx.ints(values)?),
            DataType::Int64 => TensorData::I64(cx.ints(values)?),
            DataType::Uint8 => TensorData::U8(cx.ints(values)?),
            DataType::Uint16 => TensorData::U16(cx.ints(values)?),
            DataType::Uint32 => TensorData::U32(cx.ints(values)?),
            DataType::Uint64 => TensorData::U64(cx.ints(values)?),
            DataType::Fp16 => {
                TensorData::F16(cx.exact(values, |v| f16::from_f64(v as f64), |t| t.to_f64())?)
            }
            DataType::Bf16 => {
                TensorData::Bf16(cx.exact(values, |v| bf16::from_f64(v as f64), |t| t.to_f64())?)
            }
            DataType::Fp32 => TensorData::F32(cx.exact(values, |v| v as f32, |&t| f64::from(t))?),
            DataType::Fp64 => TensorData::F64(cx.exact(values, |v| v as f64, |&t| t)?),
            DataType::Bool | DataType::Bytes => return Err(never(&cx)),
        });
    }
    if let Some(values) = float_values(&data) {
        return Ok(match to {
            DataType::Fp16 => {
                TensorData::F16(cx.floats(values, f16::from_f64, |t| t.is_infinite())?)
            }
            DataType::Bf16 => {
                TensorData::Bf16(cx.floats(values, bf16::from_f64, |t| t.is_infinite())?)
            }
            DataType::Fp32 => {
                TensorData::F32(cx.floats(values, |v| v as f32, |t| t.is_infinite())?)
            }
            DataType::Fp64 => TensorData::F64(values.collect()),
            _ => return Err(never(&cx)),
        });
    }
    Err(never(&cx))
}

fn never(cx: &Ctx<'_>) -> ProtocolError {
    let why = if cx.from.is_float() && cx.to.is_integer() {
        "floats are never converted to integers"
    } else {
        "the two types do not convert"
    };
    ProtocolError::bad(format!(
        "input '{}' is {} but the model expects {}; {why}",
        cx.name, cx.from, cx.to
    ))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn integers_convert_when_every_value_fits() {
        assert_eq!(
            coerce("x", TensorData::I32(vec![-1, 127]), DataType::Int8).unwrap(),
            TensorData::I8(vec![-1, 127])
        );
        let e = coerce("x", TensorData::I32(vec![0, 128]), DataType::Int8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element 1 (128) does not fit"), "{e}");
        assert!(coerce("x", TensorData::I8(vec![-1]), DataType::Uint64).is_err());
        assert_eq!(
            coerce("x", TensorData::U64(vec![u64::MAX]), DataType::Uint64).unwrap(),
            TensorData::U64(vec![u64::MAX])
        );
        assert_eq!(
            coerce("x", TensorData::U8(vec![255]), DataType::Int64).unwrap(),
            TensorData::I64(vec![255])
        );
    }

    #[test]
    fn integers_become_floats_only_exactly() {
        assert_eq!(
            coerce("x", TensorData::I64(vec![1 << 53]), DataType::Fp64).unwrap(),
            TensorData::F64(vec![9007199254740992.0])
        );
        assert!(coerce("x", TensorData::I64(vec![(1 << 53) + 1]), DataType::Fp64).is_err());
        assert!(coerce("x", TensorData::U64(vec![u64::MAX]), DataType::Fp64).is_err());
        assert!(coerce("x", TensorData::I32(vec![2049]), DataType::Fp16).is_err());
        assert!(coerce("x", TensorData::I32(vec![70000]), DataType::Fp16).is_err());
        assert_eq!(
            coerce("x", TensorData::I32(vec![2048]), DataType::Fp16).unwrap(),
            TensorData::F16(vec![f16::from_f32(2048.0)])
        );
        assert_eq!(
            coerce("x", TensorData::I32(vec![-256]), DataType::Bf16).unwrap(),
            TensorData::Bf16(vec![bf16::from_f32(-256.0)])
        );
    }

    #[test]
    fn floats_narrow_when_finite_values_stay_finite() {
        assert_eq!(
            coerce(
                "x",
                TensorData::F64(vec![0.5, f64::NAN.copysign(1.0)]),
                DataType::Fp32
            )
            .unwrap()
            .len(),
            2
        );
        assert_eq!(
            coerce("x", TensorData::F64(vec![f64::INFINITY]), DataType::Fp16).unwrap(),
            TensorData::F16(vec![f16::INFINITY])
        );
        let e = coerce("x", TensorData::F64(vec![1.0, 1e39]), DataType::Fp32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element 1") && e.contains("out of range"), "{e}");
        assert!(coerce("x", TensorData::Bf16(vec![bf16::MAX]), DataType::Fp16).is_err());
        assert_eq!(
            coerce("x", TensorData::F16(vec![f16::MAX]), DataType::Fp64).unwrap(),
            TensorData::F64(vec![65504.0])
        );
    }

    #[test]
    fn floats_never_become_integers_and_bool_bytes_never_convert() {
        let e = coerce("x", TensorData::F32(vec![1.0]), DataType::Int64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("never converted to integers"), "{e}");
        assert!(coerce("x", TensorData::Bool(vec![true]), DataType::Uint8).is_err());
        assert!(coerce("x", TensorData::U8(vec![1]), DataType::Bool).is_err());
        assert!(
            coerce(
                "x",
                TensorData::Bytes(vec![Bytes::from_static(b"1")]),
                DataType::Int32
            )
            .is_err()
        );
        assert!(coerce("x", TensorData::I32(vec![1]), DataType::Bytes).is_err());
    }
}
