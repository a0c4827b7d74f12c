//! Size bounds on what a client may send, checked before anything is allocated for it.
//!
//! Decoders call [`Limits::check_shape`] on every tensor's shape before making its `Vec`, so a
//! ten-byte request claiming a `[1099511627776]` tensor is refused with a [`ProtocolError::TooLarge`]
//! instead of an allocation failure.
//!
//! ```
//! use cumulus_inference::protocol::{Limits, ProtocolError};
//! let limits = Limits::default();
//! assert_eq!(limits.check_shape("x", &[2, 3]).unwrap(), 6);
//! let e = limits.check_shape("x", &[1 << 40]).unwrap_err();
//! assert!(matches!(e, ProtocolError::TooLarge(_)));
//! ```

use serde::{Deserialize, Serialize};

use super::error::ProtocolError;

/// The bounds of one server. Every field has a tested default ([`Limits::default`]); a config
/// file may override any of them (`[limits]`-style table; unknown keys are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest HTTP body or gRPC message accepted, in bytes (larger: 413 /
    /// `RESOURCE_EXHAUSTED`).
    pub max_body_bytes: usize,
    /// The most elements one tensor may have.
    pub max_tensor_elements: u64,
    /// The most elements all inputs of one request may have together.
    pub max_request_elements: u64,
    /// The most inputs one request may have.
    pub max_inputs: usize,
    /// The most requested outputs one request may name.
    pub max_outputs: usize,
    /// The longest one `BYTES` element may be, in bytes.
    pub max_bytes_element_len: usize,
    /// The largest first (batch) dimension of an input whose model declares that dimension
    /// variable (`-1`).
    pub max_batch: u64,
    /// The most dimensions a tensor may have.
    pub max_rank: usize,
    /// The most parameters one parameter map (request, input or output) may have.
    pub max_parameters: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_tensor_elements: 1 << 24,
            max_request_elements: 1 << 25,
            max_inputs: 64,
            max_outputs: 64,
            max_bytes_element_len: 4 << 20,
            max_batch: 1024,
            max_rank: 16,
            max_parameters: 64,
        }
    }
}

/// The number of elements of `shape` (1 for a scalar `[]`), or `None` when it overflows `u64`.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

impl Limits {
    /// Checks that every bound is usable (non-zero), naming the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        let fields: [(&str, u64); 9] = [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_tensor_elements", self.max_tensor_elements),
            ("max_request_elements", self.max_request_elements),
            ("max_inputs", self.max_inputs as u64),
            ("max_outputs", self.max_outputs as u64),
            ("max_bytes_element_len", self.max_bytes_element_len as u64),
            ("max_batch", self.max_batch),
            ("max_rank", self.max_rank as u64),
            ("max_parameters", self.max_parameters as u64),
        ];
        match fields.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("limits: {name} must be at least 1")),
            None => Ok(()),
        }
    }

    /// Checks `shape` of the tensor `name` against the rank and element bounds and returns its
    /// element count, which then fits in memory terms (`usize`) too.
    pub fn check_shape(&self, name: &str, shape: &[u64]) -> Result<u64, ProtocolError> {
        if shape.len() > self.max_rank {
            return Err(ProtocolError::bad(format!(
                "tensor '{name}' has {} dimensions, more than the {} allowed",
                shape.len(),
                self.max_rank
            )));
        }
        match element_count(shape) {
            Some(n) if n <= self.max_tensor_elements && usize::try_from(n).is_ok() => Ok(n),
            _ => Err(ProtocolError::too_large(format!(
                "tensor '{name}' with shape {shape:?} has more than the {} elements allowed per tensor",
                self.max_tensor_elements
            ))),
        }
    }

    /// Checks the running element total of a request after adding one more tensor.
    pub fn check_request_elements(&self, total: u64) -> Result<(), ProtocolError> {
        if total > self.max_request_elements {
            return Err(ProtocolError::too_large(format!(
                "the request's inputs have {total} elements together, more than the {} allowed",
                self.max_request_elements
            )));
        }
        Ok(())
    }

    /// Checks the number of inputs and of requested outputs.
    pub fn check_counts(&self, inputs: usize, outputs: usize) -> Result<(), ProtocolError> {
        if inputs > self.max_inputs {
            return Err(ProtocolError::too_large(format!(
                "the request has {inputs} inputs, more than the {} allowed",
                self.max_inputs
            )));
        }
        if outputs > self.max_outputs {
            return Err(ProtocolError::too_large(format!(
                "the request asks for {outputs} outputs, more than the {} allowed",
                self.max_outputs
            )));
        }
        Ok(())
    }

    /// Checks the number of parameters in one map; `owner` says whose they are.
    pub fn check_parameters(&self, owner: &str, count: usize) -> Result<(), ProtocolError> {
        if count > self.max_parameters {
            return Err(ProtocolError::too_large(format!(
                "{owner} has {count} parameters, more than the {} allowed",
                self.max_parameters
            )));
        }
        Ok(())
    }

    /// Checks the length of element `index` of the `BYTES` tensor `name`.
    pub fn check_bytes_element(
        &self,
        name: &str,
        index: usize,
        len: usize,
    ) -> Result<(), ProtocolError> {
        if len > self.max_bytes_element_len {
            return Err(ProtocolError::too_large(format!(
                "tensor '{name}' element {index} is {len} bytes long, more than the {} allowed",
                self.max_bytes_element_len
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn zero_bounds_are_refused_by_name() {
        let limits = Limits {
            max_batch: 0,
            ..Limits::default()
        };
        assert!(limits.validate().unwrap_err().contains("max_batch"));
    }

    #[test]
    fn a_partial_table_keeps_the_other_defaults_and_unknown_keys_are_refused() {
        let l: Limits = serde_json::from_str(r#"{"max_batch": 8}"#).unwrap();
        assert_eq!(l.max_batch, 8);
        assert_eq!(l.max_inputs, Limits::default().max_inputs);
        assert!(serde_json::from_str::<Limits>(r#"{"max_batchh": 8}"#).is_err());
    }

    #[test]
    fn shapes_are_checked_with_overflow_in_mind() {
        let limits = Limits::default();
        assert_eq!(limits.check_shape("s", &[]).unwrap(), 1);
        assert_eq!(limits.check_shape("z", &[0, 1 << 62]).unwrap(), 0);
        assert!(matches!(
            limits.check_shape("x", &[1 << 32, 1 << 32]),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(matches!(
            limits.check_shape("x", &[1 << 33, 1 << 33]),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(matches!(
            limits.check_shape("x", &[1; 17]),
            Err(ProtocolError::BadRequest(_))
        ));
    }
}
