//! The raw (binary) form of tensor data, shared by the REST binary tensor data extension and
//! gRPC's `raw_input_contents` / `raw_output_contents`: little-endian, row-major, no padding;
//! `BOOL` one byte (0 or 1) per element; `BYTES` each element as a 4-byte little-endian length
//! followed by its bytes.
//!
//! Decoding checks the byte count against the element count before allocating, so a claimed
//! shape can never make it allocate more than the bytes actually received justify.
//!
//! ```
//! use bytes::Bytes;
//! use cumulus_inference::protocol::{binary, DataType, Limits, TensorData};
//! let data = TensorData::Bytes(vec![Bytes::from_static(b"hi"), Bytes::new()]);
//! let raw = binary::encode(&data).unwrap();
//! assert_eq!(raw, b"\x02\0\0\0hi\0\0\0\0");
//! let back = binary::decode("x", DataType::Bytes, 2, &Bytes::from(raw), &Limits::default()).unwrap();
//! assert_eq!(back, data);
//! ```

use bytes::Bytes;
use half::{bf16, f16};

use super::datatype::DataType;
use super::error::ProtocolError;
use super::limits::Limits;
use super::tensor::TensorData;

/// Decodes `count` elements of `datatype` for the tensor `name` from exactly the bytes of
/// `raw`. `BYTES` elements are slices of `raw`, not copies.
pub fn decode(
    name: &str,
    datatype: DataType,
    count: usize,
    raw: &Bytes,
    limits: &Limits,
) -> Result<TensorData, ProtocolError> {
    let Some(size) = datatype.byte_size() else {
        return decode_bytes(name, count, raw, limits);
    };
    let expected = count.checked_mul(size);
    if expected != Some(raw.len()) {
        return Err(ProtocolError::bad(format!(
            "tensor '{name}': {count} {datatype} elements need {} bytes of data, got {}",
            expected.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string()),
            raw.len()
        )));
    }
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                raw.chunks_exact(size_of::<$t>())
                    .map(|c| {
                        <$t>::from_le_bytes(
                            c.try_into()
                                .expect("chunks_exact yields size_of::<T>() bytes"),
                        )
                    })
                    .collect(),
            )
        };
    }
    Ok(match datatype {
        DataType::Bool => {
            if let Some(i) = raw.iter().position(|&b| b > 1) {
                return Err(ProtocolError::bad(format!(
                    "tensor '{name}' element {i}: BOOL byte {:#04x} is neither 0 nor 1",
                    raw[i]
                )));
            }
            TensorData::Bool(raw.iter().map(|&b| b == 1).collect())
        }
        DataType::Int8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        DataType::Uint8 => TensorData::U8(raw.to_vec()),
        DataType::Int16 => fixed!(I16, i16),
        DataType::Int32 => fixed!(I32, i32),
        DataType::Int64 => fixed!(I64, i64),
        DataType::Uint16 => fixed!(U16, u16),
        DataType::Uint32 => fixed!(U32, u32),
        DataType::Uint64 => fixed!(U64, u64),
        DataType::Fp16 => fixed!(F16, f16),
        DataType::Bf16 => fixed!(Bf16, bf16),
        DataType::Fp32 => fixed!(F32, f32),
        DataType::Fp64 => fixed!(F64, f64),
        DataType::Bytes => unreachable!("BYTES has no fixed size and returned above"),
    })
}

fn decode_bytes(
    name: &str,
    count: usize,
    raw: &Bytes,
    limits: &Limits,
) -> Result<TensorData, ProtocolError> {
    // Each element takes at least its 4-byte length: refuse before reserving `count` slots.
    if count.checked_mul(4).is_none_or(|min| min > raw.len()) {
        return Err(ProtocolError::bad(format!(
            "tensor '{name}': {count} BYTES elements need at least {} bytes of data, got {}",
            count.saturating_mul(4),
            raw.len()
        )));
    }
    let mut elements = Vec::with_capacity(count);
    let mut at = 0usize;
    for i in 0..count {
        let Some(prefix) = raw.get(at..at + 4) else {
            return Err(ProtocolError::bad(format!(
                "tensor '{name}': data ends inside the length of BYTES element {i}"
            )));
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("a 4-byte slice")) as usize;
        limits.check_bytes_element(name, i, len)?;
        at += 4;
        let end = at
            .checked_add(len)
            .filter(|&end| end <= raw.len())
            .ok_or_else(|| {
                ProtocolError::bad(format!(
                    "tensor '{name}': BYTES element {i} claims {len} bytes but only {} remain",
                    raw.len() - at
                ))
            })?;
        elements.push(raw.slice(at..end));
        at = end;
    }
    if at != raw.len() {
        return Err(ProtocolError::bad(format!(
            "tensor '{name}': {} bytes of data left over after its {count} BYTES elements",
            raw.len() - at
        )));
    }
    Ok(TensorData::Bytes(elements))
}

/// The raw form of `data`. Fails only for a `BYTES` element longer than 4 GiB, which the
/// 4-byte length cannot say.
pub fn encode(data: &TensorData) -> Result<Vec<u8>, ProtocolError> {
    macro_rules! fixed {
        ($v:expr) => {{
            let mut out = Vec::with_capacity(size_of_val(&$v[..]));
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
            out
        }};
    }
    Ok(match data {
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I16(v) => fixed!(v),
        TensorData::I32(v) => fixed!(v),
        TensorData::I64(v) => fixed!(v),
        TensorData::U16(v) => fixed!(v),
        TensorData::U32(v) => fixed!(v),
        TensorData::U64(v) => fixed!(v),
        TensorData::F16(v) => fixed!(v),
        TensorData::Bf16(v) => fixed!(v),
        TensorData::F32(v) => fixed!(v),
        TensorData::F64(v) => fixed!(v),
        TensorData::Bytes(v) => {
            let total: usize = v.iter().map(|e| 4 + e.len()).sum();
            let mut out = Vec::with_capacity(total);
            for (i, e) in v.iter().enumerate() {
                let len = u32::try_from(e.len()).map_err(|_| {
                    ProtocolError::too_large(format!(
                        "BYTES element {i} is {} bytes, more than a 4-byte length can say",
                        e.len()
                    ))
                })?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(e);
            }
            out
        }
    })
}

/// The length of the raw form of `data` without building it.
pub fn encoded_len(data: &TensorData) -> usize {
    match (data, data.datatype().byte_size()) {
        (TensorData::Bytes(v), _) => v.iter().map(|e| 4 + e.len()).sum(),
        (_, Some(size)) => data.len() * size,
        (_, None) => unreachable!("only BYTES lacks a fixed size"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_types() -> Vec<TensorData> {
        vec![
            TensorData::Bool(vec![true, false, true]),
            TensorData::I8(vec![-128, 0, 127]),
            TensorData::I16(vec![i16::MIN, -1, i16::MAX]),
            TensorData::I32(vec![i32::MIN, 7, i32::MAX]),
            TensorData::I64(vec![i64::MIN, 7, i64::MAX]),
            TensorData::U8(vec![0, 1, 255]),
            TensorData::U16(vec![0, 1, u16::MAX]),
            TensorData::U32(vec![0, 1, u32::MAX]),
            TensorData::U64(vec![0, 1, u64::MAX]),
            TensorData::F16(vec![f16::from_f32(0.5), f16::MAX, f16::NEG_INFINITY]),
            TensorData::Bf16(vec![bf16::from_f32(-2.0), bf16::MIN_POSITIVE, bf16::ZERO]),
            TensorData::F32(vec![1.5, f32::MIN, f32::INFINITY]),
            TensorData::F64(vec![1e300, -0.0, f64::EPSILON]),
            TensorData::Bytes(vec![
                Bytes::from_static(b""),
                Bytes::from_static(b"\xff\x00"),
                Bytes::from_static(b"abc"),
            ]),
        ]
    }

    #[test]
    fn every_type_round_trips_and_encoded_len_agrees() {
        for data in all_types() {
            let raw = encode(&data).unwrap();
            assert_eq!(raw.len(), encoded_len(&data), "{:?}", data.datatype());
            let back = decode(
                "t",
                data.datatype(),
                data.len(),
                &Bytes::from(raw),
                &Limits::default(),
            );
            assert_eq!(back.unwrap(), data);
        }
    }

    #[test]
    fn byte_counts_must_match_exactly() {
        let limits = Limits::default();
        let e = decode(
            "t",
            DataType::Fp32,
            2,
            &Bytes::from_static(&[0; 7]),
            &limits,
        )
        .unwrap_err();
        assert!(e.to_string().contains("need 8 bytes"), "{e}");
        let e = decode("t", DataType::Bool, 1, &Bytes::from_static(&[2]), &limits).unwrap_err();
        assert!(e.to_string().contains("neither 0 nor 1"), "{e}");
    }

    #[test]
    fn bytes_elements_are_bounded_and_exact() {
        let limits = Limits {
            max_bytes_element_len: 2,
            ..Limits::default()
        };
        let long = Bytes::from_static(b"\x03\0\0\0abc");
        assert!(matches!(
            decode("t", DataType::Bytes, 1, &long, &limits),
            Err(ProtocolError::TooLarge(_))
        ));
        let short = Bytes::from_static(b"\x09\0\0\0ab");
        assert!(decode("t", DataType::Bytes, 1, &short, &Limits::default()).is_err());
        let extra = Bytes::from_static(b"\x01\0\0\0ab");
        assert!(decode("t", DataType::Bytes, 1, &extra, &Limits::default()).is_err());
        // A huge claimed count with a few bytes is refused before reserving anything.
        assert!(
            decode(
                "t",
                DataType::Bytes,
                usize::MAX / 2,
                &extra,
                &Limits::default()
            )
            .is_err()
        );
    }
}
