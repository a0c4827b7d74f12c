//! The typed `contents` of gRPC tensors (`InferTensorContents`): one repeated field per
//! group of datatypes, `int_contents` for INT8/INT16/INT32, `uint_contents` for
//! UINT8/UINT16/UINT32, and so on; FP16 and BF16 have none and travel only as raw contents.

use bytes::Bytes;
use cumulus_proto::inference as pb;

use super::datatype::DataType;
use super::error::ProtocolError;
use super::limits::Limits;
use super::tensor::TensorData;

/// The typed-contents field names that hold elements, for error messages.
fn filled_fields(c: &pb::InferTensorContents) -> Vec<&'static str> {
    let fields = [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ];
    fields
        .into_iter()
        .filter(|(_, empty)| !empty)
        .map(|(n, _)| n)
        .collect()
}

fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    name: &str,
    datatype: DataType,
    values: Vec<S>,
) -> Result<Vec<T>, ProtocolError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            T::try_from(v).map_err(|_| {
                ProtocolError::bad(format!(
                    "tensor '{name}' element {i}: {v} is out of range for {datatype}"
                ))
            })
        })
        .collect()
}

/// The data of a tensor sent in typed `contents`.
pub(crate) fn data_from_contents(
    name: &str,
    datatype: DataType,
    count: usize,
    c: pb::InferTensorContents,
    limits: &Limits,
) -> Result<TensorData, ProtocolError> {
    let field = match datatype {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 | DataType::Bf16 => {
            return Err(ProtocolError::bad(format!(
                "tensor '{name}' is {datatype}, which has no typed contents field: send it in raw_input_contents"
            )));
        }
    };
    let filled = filled_fields(&c);
    if let Some(other) = filled.iter().find(|f| **f != field) {
        return Err(ProtocolError::bad(format!(
            "tensor '{name}' is {datatype}, whose elements go in {field}, but {other} is filled"
        )));
    }
    let data = match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::I8(narrow(name, datatype, c.int_contents)?),
        DataType::Int16 => TensorData::I16(narrow(name, datatype, c.int_contents)?),
        DataType::Int32 => TensorData::I32(c.int_contents),
        DataType::Int64 => TensorData::I64(c.int64_contents),
        DataType::Uint8 => TensorData::U8(narrow(name, datatype, c.uint_contents)?),
        DataType::Uint16 => TensorData::U16(narrow(name, datatype, c.uint_contents)?),
        DataType::Uint32 => TensorData::U32(c.uint_contents),
        DataType::Uint64 => TensorData::U64(c.uint64_contents),
        DataType::Fp32 => TensorData::F32(c.fp32_contents),
        DataType::Fp64 => TensorData::F64(c.fp64_contents),
        DataType::Bytes => {
            for (i, e) in c.bytes_contents.iter().enumerate() {
                limits.check_bytes_element(name, i, e.len())?;
            }
            TensorData::Bytes(c.bytes_contents.into_iter().map(Bytes::from).collect())
        }
        DataType::Fp16 | DataType::Bf16 => unreachable!("refused above: no typed field"),
    };
    if data.len() != count {
        return Err(ProtocolError::bad(format!(
            "tensor '{name}': its shape needs {count} elements but {field} has {}",
            data.len()
        )));
    }
    Ok(data)
}

/// The typed `contents` of `data`; FP16 and BF16 have no typed form.
pub(crate) fn data_to_contents(
    name: &str,
    data: &TensorData,
) -> Result<pb::InferTensorContents, ProtocolError> {
    let mut c = pb::InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::I8(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I16(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I32(v) => c.int_contents = v.clone(),
        TensorData::I64(v) => c.int64_contents = v.clone(),
        TensorData::U8(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U16(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U32(v) => c.uint_contents = v.clone(),
        TensorData::U64(v) => c.uint64_contents = v.clone(),
        TensorData::F32(v) => c.fp32_contents = v.clone(),
        TensorData::F64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.iter().map(|b| b.to_vec()).collect(),
        TensorData::F16(_) | TensorData::Bf16(_) => {
            return Err(ProtocolError::bad(format!(
                "tensor '{name}' is {}, which has no typed contents field",
                data.datatype()
            )));
        }
    }
    Ok(c)
}
