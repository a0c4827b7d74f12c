//! [`HostTensor`]: a tensor in host memory as it travels to and from the executor: a shape and
//! either `f32` values or `u32` ids, row-major. On the wire it is raw little-endian bytes plus
//! shape plus type ([`HostTensor::to_proto`] / [`HostTensor::from_proto`]), never text; decoding
//! checks the element count against a limit before allocating anything.
//!
//! ```
//! use cumulus_gpu::HostTensor;
//!
//! let t = HostTensor::f32(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])?;
//! let wire = t.to_proto();
//! assert_eq!(wire.data.len(), 24);
//! let back = HostTensor::from_proto(&wire, 1 << 20)?;
//! assert_eq!(back, t);
//! assert!(HostTensor::f32(vec![2, 2], vec![1.0]).is_err());
//! # Ok::<(), cumulus_gpu::GpuError>(())
//! ```

use cumulus_proto::gpu::v1 as pb;

use crate::error::{GpuError, Result};

/// Largest rank accepted from the socket.
pub const MAX_RANK: usize = 8;

/// The element type of a [`HostTensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
}

/// The values of a [`HostTensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// A row-major host tensor whose element count always equals the product of its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// The element count of `shape`, refusing overflow.
pub(crate) fn numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        n.checked_mul(d)
            .ok_or_else(|| GpuError::InvalidRequest(format!("shape {shape:?} overflows")))
    })
}

impl HostTensor {
    /// An `f32` tensor; `values.len()` must equal the product of `shape`.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        Self::new(shape, TensorData::F32(values))
    }

    /// A `u32` (ids) tensor; `values.len()` must equal the product of `shape`.
    pub fn u32(shape: Vec<usize>, values: Vec<u32>) -> Result<Self> {
        Self::new(shape, TensorData::U32(values))
    }

    /// A tensor of `data` shaped `shape`.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let n = numel(&shape)?;
        let len = match &data {
            TensorData::F32(v) => v.len(),
            TensorData::U32(v) => v.len(),
        };
        if n != len {
            return Err(GpuError::InvalidRequest(format!(
                "shape {shape:?} holds {n} elements, got {len} values"
            )));
        }
        Ok(Self { shape, data })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::U32(_) => DType::U32,
        }
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `f32` values, or `None` for an ids tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::U32(_) => None,
        }
    }

    /// The values as `f32` (ids converted; exact below 2^24).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::U32(v) => v.iter().map(|&i| i as f32).collect(),
        }
    }

    /// Takes the `f32` values out (ids converted).
    pub fn into_f32_vec(self) -> Vec<f32> {
        match self.data {
            TensorData::F32(v) => v,
            TensorData::U32(v) => v.into_iter().map(|i| i as f32).collect(),
        }
    }

    /// The wire form: little-endian bytes, shape and type.
    pub fn to_proto(&self) -> pb::Tensor {
        let (dtype, data) = match &self.data {
            TensorData::F32(v) => (
                pb::DataType::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TensorData::U32(v) => (
                pb::DataType::U32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        };
        pb::Tensor {
            dtype: dtype as i32,
            shape: self.shape.iter().map(|&d| d as u64).collect(),
            data,
        }
    }

    /// Decodes a wire tensor, refusing more than `max_elements` elements, a rank over
    /// [`MAX_RANK`], an unknown type, or bytes that do not match the shape.
    pub fn from_proto(t: &pb::Tensor, max_elements: usize) -> Result<Self> {
        if t.shape.len() > MAX_RANK {
            return Err(GpuError::InvalidRequest(format!(
                "tensor rank {} is over the limit of {MAX_RANK}",
                t.shape.len()
            )));
        }
        let mut shape = Vec::with_capacity(t.shape.len());
        for &d in &t.shape {
            shape.push(usize::try_from(d).map_err(|_| {
                GpuError::InvalidRequest(format!("dimension {d} does not fit this machine"))
            })?);
        }
        let n = numel(&shape)?;
        if n > max_elements {
            return Err(GpuError::TooLarge {
                what: format!("tensor element count of shape {shape:?}"),
                size: n as u64,
                limit: max_elements as u64,
            });
        }
        let expected = n * 4;
        if t.data.len() != expected {
            return Err(GpuError::InvalidRequest(format!(
                "tensor of shape {shape:?} needs {expected} bytes, got {}",
                t.data.len()
            )));
        }
        let words = t.data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let data = match pb::DataType::try_from(t.dtype) {
            Ok(pb::DataType::F32) => TensorData::F32(words.map(f32::from_le_bytes).collect()),
            Ok(pb::DataType::U32) => TensorData::U32(words.map(u32::from_le_bytes).collect()),
            _ => {
                return Err(GpuError::InvalidRequest(format!(
                    "tensor dtype {} is not F32 or U32",
                    t.dtype
                )));
            }
        };
        Ok(Self { shape, data })
    }

    /// A host copy of a candle tensor (F32 or U32; other dtypes are converted to F32).
    pub fn from_candle(t: &candle_core::Tensor) -> Result<Self> {
        let shape = t.dims().to_vec();
        let flat = t
            .flatten_all()
            .map_err(|e| GpuError::InvalidRequest(format!("tensor: {e}")))?;
        let data = match t.dtype() {
            candle_core::DType::U32 => TensorData::U32(
                flat.to_vec1::<u32>()
                    .map_err(|e| GpuError::InvalidRequest(format!("tensor: {e}")))?,
            ),
            _ => TensorData::F32(
                flat.to_dtype(candle_core::DType::F32)
                    .and_then(|f| f.to_vec1::<f32>())
                    .map_err(|e| GpuError::InvalidRequest(format!("tensor: {e}")))?,
            ),
        };
        Self::new(shape, data)
    }

    /// This tensor as a candle tensor on `device`.
    pub fn to_candle(&self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        let r = match &self.data {
            TensorData::F32(v) => candle_core::Tensor::from_slice(v, self.shape.as_slice(), device),
            TensorData::U32(v) => candle_core::Tensor::from_slice(v, self.shape.as_slice(), device),
        };
        r.map_err(|e| GpuError::Device(format!("candle tensor: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_roundtrip_keeps_type_and_values() {
        let ids = HostTensor::u32(vec![3], vec![0, 7, u32::MAX]).expect("valid");
        assert_eq!(
            HostTensor::from_proto(&ids.to_proto(), 16).expect("decodes"),
            ids
        );
    }

    #[test]
    fn bad_wire_tensors_are_refused_before_allocating() {
        let huge = pb::Tensor {
            dtype: pb::DataType::F32 as i32,
            shape: vec![1 << 20, 1 << 20],
            data: vec![],
        };
        assert!(matches!(
            HostTensor::from_proto(&huge, 1 << 20),
            Err(GpuError::TooLarge { .. })
        ));
        let overflow = pb::Tensor {
            dtype: pb::DataType::F32 as i32,
            shape: vec![u64::MAX, u64::MAX],
            data: vec![],
        };
        assert!(HostTensor::from_proto(&overflow, usize::MAX).is_err());
        let short = pb::Tensor {
            dtype: pb::DataType::F32 as i32,
            shape: vec![2],
            data: vec![0; 7],
        };
        assert!(HostTensor::from_proto(&short, 16).is_err());
        let untyped = pb::Tensor {
            dtype: 0,
            shape: vec![1],
            data: vec![0; 4],
        };
        assert!(HostTensor::from_proto(&untyped, 16).is_err());
        let deep = pb::Tensor {
            dtype: pb::DataType::F32 as i32,
            shape: vec![1; MAX_RANK + 1],
            data: vec![0; 4],
        };
        assert!(HostTensor::from_proto(&deep, 16).is_err());
    }
}
