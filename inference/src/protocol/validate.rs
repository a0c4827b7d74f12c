//! Checking a decoded request against the model it is for, and names against what a model
//! repository can hold.
//!
//! [`validate_request`] is what the backend calls with the model's metadata before queueing a
//! request: every input known, none missing, shapes matching (`-1` matches any size), the batch
//! dimension within [`Limits::max_batch`], datatypes equal or converted by [`coerce`]'s rules,
//! requested outputs known. It returns the request with its inputs in the model's order.
//!
//! ```
//! use cumulus_inference::protocol::*;
//! let meta = ModelMetadata {
//!     name: "m".into(), versions: vec![], platform: "cumulus".into(),
//!     inputs: vec![TensorMetadata::new("x", DataType::Fp32, vec![-1, 2])],
//!     outputs: vec![TensorMetadata::new("y", DataType::Fp32, vec![-1, 2])],
//! };
//! let mut request = InferRequest::default();
//! request.inputs.push(Tensor::new("x", vec![1, 2], TensorData::I64(vec![1, 2])).unwrap());
//! let ok = validate_request(&meta, &Limits::default(), request.clone()).unwrap();
//! assert_eq!(ok.inputs[0].data, TensorData::F32(vec![1.0, 2.0]));
//! request.outputs.push(RequestedOutput::new("z"));
//! let e = validate_request(&meta, &Limits::default(), request).unwrap_err();
//! assert!(e.to_string().contains("'z'"));
//! assert!(check_model_name("../etc").is_err());
//! ```

use super::coerce::coerce;
use super::datatype::truncate;
use super::error::ProtocolError;
use super::limits::Limits;
use super::metadata::{ModelMetadata, TensorMetadata};
use super::request::InferRequest;
use super::tensor::Tensor;

/// The longest model name accepted, in bytes.
pub const MAX_MODEL_NAME_LEN: usize = 256;
/// The longest model version accepted, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

fn check_name(what: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    let why = if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.len() > max {
        Some(format!("is longer than {max} bytes"))
    } else if value == "." || value.contains("..") {
        Some("contains '..' or is '.'".to_owned())
    } else if value.contains(['/', '\\']) {
        Some("contains a path separator".to_owned())
    } else if value.chars().any(char::is_control) {
        Some("contains a control character".to_owned())
    } else {
        None
    };
    match why {
        Some(why) => Err(ProtocolError::bad(format!(
            "{what} {:?} {why}",
            truncate(value, 64)
        ))),
        None => Ok(()),
    }
}

/// Refuses model names that no repository folder could have: empty, over
/// [`MAX_MODEL_NAME_LEN`] bytes, `.`, containing `..`, `/`, `\`, NUL or another control
/// character.
pub fn check_model_name(name: &str) -> Result<(), ProtocolError> {
    check_name("model name", name, MAX_MODEL_NAME_LEN)
}

/// The same rules as [`check_model_name`] for a model version (at most [`MAX_VERSION_LEN`]
/// bytes).
pub fn check_version(version: &str) -> Result<(), ProtocolError> {
    check_name("model version", version, MAX_VERSION_LEN)
}

/// `Err(NotFound)` when `version` is given and the model lists versions without it.
pub fn check_version_known(
    meta: &ModelMetadata,
    version: Option<&str>,
) -> Result<(), ProtocolError> {
    match version {
        Some(v) if !meta.versions.is_empty() && !meta.versions.iter().any(|have| have == v) => {
            Err(ProtocolError::NotFound(format!(
                "model '{}' has no version '{v}' (it has {})",
                meta.name,
                meta.versions.join(", ")
            )))
        }
        _ => Ok(()),
    }
}

/// Refuses repository parameters other than `allowed` ones: Triton's `config` and `file:...`
/// overrides would change what is loaded, and silently ignoring them would load the wrong
/// thing.
pub fn check_repository_parameters<'a>(
    action: &str,
    keys: impl Iterator<Item = &'a str>,
    allowed: &[&str],
) -> Result<(), ProtocolError> {
    for key in keys {
        if !allowed.contains(&key) {
            return Err(ProtocolError::bad(format!(
                "{action} parameter '{}' is not supported by this server",
                truncate(key, 64)
            )));
        }
    }
    Ok(())
}

fn names(tensors: &[TensorMetadata]) -> String {
    tensors
        .iter()
        .map(|t| format!("'{}'", t.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shape_matches(shape: &[u64], want: &[i64]) -> bool {
    shape.len() == want.len()
        && shape
            .iter()
            .zip(want)
            .all(|(&d, &w)| w < 0 || u64::try_from(w) == Ok(d))
}

fn check_input(
    meta: &ModelMetadata,
    want: &TensorMetadata,
    limits: &Limits,
    mut tensor: Tensor,
) -> Result<Tensor, ProtocolError> {
    tensor.check()?;
    if !shape_matches(&tensor.shape, &want.shape) {
        return Err(ProtocolError::bad(format!(
            "input '{}' has shape {:?} but model '{}' expects {:?} (-1: any size)",
            tensor.name, tensor.shape, meta.name, want.shape
        )));
    }
    if want.shape.first().is_some_and(|&d| d < 0) && tensor.shape[0] > limits.max_batch {
        return Err(ProtocolError::too_large(format!(
            "input '{}' has a batch of {}, more than the {} allowed",
            tensor.name, tensor.shape[0], limits.max_batch
        )));
    }
    tensor.data = coerce(&tensor.name, tensor.data, want.datatype)?;
    Ok(tensor)
}

/// Checks `request` against the model `meta` and returns it with every input converted to the
/// model's datatype and put in the model's input order. Errors name the input (and element)
/// at fault; unknown requested outputs are named all at once.
pub fn validate_request(
    meta: &ModelMetadata,
    limits: &Limits,
    request: InferRequest,
) -> Result<InferRequest, ProtocolError> {
    limits.check_counts(request.inputs.len(), request.outputs.len())?;
    let unknown: Vec<String> = request
        .outputs
        .iter()
        .filter(|o| meta.output(&o.name).is_none())
        .map(|o| format!("'{}'", truncate(&o.name, 64)))
        .collect();
    if !unknown.is_empty() {
        return Err(ProtocolError::bad(format!(
            "model '{}' has no output {} (its outputs are {})",
            meta.name,
            unknown.join(", "),
            names(&meta.outputs)
        )));
    }
    let mut given: Vec<Option<Tensor>> = request.inputs.into_iter().map(Some).collect();
    if let Some(stray) = given
        .iter()
        .flatten()
        .find(|t| meta.input(&t.name).is_none())
    {
        return Err(ProtocolError::bad(format!(
            "model '{}' has no input '{}' (its inputs are {})",
            meta.name,
            truncate(&stray.name, 64),
            names(&meta.inputs)
        )));
    }
    let mut inputs = Vec::with_capacity(meta.inputs.len());
    for want in &meta.inputs {
        let mut matching = given
            .iter_mut()
            .filter(|slot| slot.as_ref().is_some_and(|t| t.name == want.name));
        let Some(tensor) = matching.next().and_then(Option::take) else {
            return Err(ProtocolError::bad(format!(
                "model '{}' needs input '{}', which the request does not have",
                meta.name, want.name
            )));
        };
        if matching.next().is_some() {
            return Err(ProtocolError::bad(format!(
                "input '{}' is given more than once",
                want.name
            )));
        }
        inputs.push(check_input(meta, want, limits, tensor)?);
    }
    Ok(InferRequest { inputs, ..request })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DataType, RequestedOutput, TensorData};

    fn meta() -> ModelMetadata {
        ModelMetadata {
            name: "m".into(),
            versions: vec!["1".into()],
            platform: "test".into(),
            inputs: vec![
                TensorMetadata::new("a", DataType::Fp32, vec![-1, 2]),
                TensorMetadata::new("b", DataType::Int8, vec![1]),
            ],
            outputs: vec![TensorMetadata::new("y", DataType::Fp32, vec![-1])],
        }
    }

    fn req(inputs: Vec<Tensor>) -> InferRequest {
        InferRequest {
            inputs,
            ..InferRequest::default()
        }
    }

    fn a(batch: u64) -> Tensor {
        let n = (batch * 2) as usize;
        Tensor::new("a", vec![batch, 2], TensorData::F32(vec![0.0; n])).unwrap()
    }

    fn b() -> Tensor {
        Tensor::new("b", vec![1], TensorData::I32(vec![5])).unwrap()
    }

    #[test]
    fn inputs_come_back_in_the_models_order_and_type() {
        let r = validate_request(&meta(), &Limits::default(), req(vec![b(), a(3)])).unwrap();
        assert_eq!(r.inputs[0].name, "a");
        assert_eq!(r.inputs[1].data, TensorData::I8(vec![5]));
    }

    #[test]
    fn each_mismatch_names_what_is_wrong() {
        let limits = Limits::default();
        let e = validate_request(&meta(), &limits, req(vec![a(1)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs input 'b'"), "{e}");
        let stray = Tensor::new("c", vec![1], TensorData::I8(vec![1])).unwrap();
        let e = validate_request(&meta(), &limits, req(vec![a(1), b(), stray]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no input 'c'") && e.contains("'a', 'b'"), "{e}");
        let wrong = Tensor::new("a", vec![2], TensorData::F32(vec![0.0; 2])).unwrap();
        let e = validate_request(&meta(), &limits, req(vec![wrong, b()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shape [2]") && e.contains("[-1, 2]"), "{e}");
        let mut r = req(vec![a(1), b()]);
        r.outputs = vec![
            RequestedOutput::new("p"),
            RequestedOutput::new("y"),
            RequestedOutput::new("q"),
        ];
        let e = validate_request(&meta(), &limits, r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'p', 'q'"), "{e}");
        let text = Tensor::new(
            "b",
            vec![1],
            TensorData::Bytes(vec![bytes::Bytes::from_static(b"x")]),
        )
        .unwrap();
        let e = validate_request(&meta(), &limits, req(vec![a(1), text]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BYTES") && e.contains("INT8"), "{e}");
    }

    #[test]
    fn the_batch_dimension_is_bounded() {
        let limits = Limits {
            max_batch: 2,
            ..Limits::default()
        };
        assert!(validate_request(&meta(), &limits, req(vec![a(2), b()])).is_ok());
        let e = validate_request(&meta(), &limits, req(vec![a(3), b()])).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge(_)), "{e}");
    }

    #[test]
    fn names_and_versions() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "a\nb", "x..y"] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_model_name(&"m".repeat(MAX_MODEL_NAME_LEN + 1)).is_err());
        for good in ["resnet50", "my-model_v2.onnx", "模型"] {
            check_model_name(good).unwrap();
        }
        check_version("3").unwrap();
        assert!(matches!(
            check_version_known(&meta(), Some("2")),
            Err(ProtocolError::NotFound(_))
        ));
        check_version_known(&meta(), Some("1")).unwrap();
        check_version_known(&meta(), None).unwrap();
    }
}
