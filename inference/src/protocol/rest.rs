//! Whole REST bodies: the JSON inference request/response objects, alone or followed by the
//! binary tensor data of Triton's binary extension.
//!
//! With binary data the `Inference-Header-Content-Length` header gives the length of the JSON
//! part; each binary input carries `parameters.binary_data_size` and its bytes follow the JSON
//! in input order. In a response, each output the client asked for in binary (its
//! `binary_data` parameter, or the request's `binary_data_output`) carries `binary_data_size`
//! and its bytes follow the JSON in output order.
//!
//! Server side: [`decode_request`], [`encode_response`]. Client side (tests, load generators):
//! [`encode_request`], [`decode_response`].
//!
//! ```
//! use bytes::Bytes;
//! use cumulus_inference::protocol::{rest, Limits, OutputSelection, TensorData};
//! let body = Bytes::from_static(
//!     br#"{"id":"1","inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}"#);
//! let request = rest::decode_request(&body, None, &Limits::default()).unwrap();
//! assert_eq!(request.inputs[0].data, TensorData::F32(vec![1.0, 2.0]));
//! assert!(rest::decode_request(&body, Some(body.len() + 1), &Limits::default()).is_err());
//! ```

use std::collections::HashSet;

use bytes::Bytes;

use super::api::InferError;
use super::binary;
use super::error::ProtocolError;
use super::json::{JsonData, bytes_are_utf8};
use super::limits::Limits;
use super::request::{
    BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, InferRequest, InferResponse,
    OutputSelection, RequestedOutput,
};
use super::tensor::{ParameterValue, Parameters, Tensor, TensorData};
use super::wire::{
    WireData, WireRequest, WireRequestOut, WireRequestedOutputOut, WireResponse, WireResponseOut,
    WireTensor, WireTensorOut,
};

/// The header that gives the length of the JSON part of a body with binary data.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Parameters of Triton extensions this server does not implement; a request using them is
/// refused rather than answered wrongly.
const UNSUPPORTED_PARAMETERS: [(&str, &str); 2] = [
    ("shared_memory_region", "the shared-memory extension"),
    ("classification", "the classification extension"),
];

/// An encoded body: the bytes, and the JSON length to send as
/// `Inference-Header-Content-Length` when binary data follows the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct RestBody {
    /// The whole body.
    pub body: Vec<u8>,
    /// `Some(json length)` when binary data follows the JSON.
    pub header_len: Option<usize>,
}

/// Splits a body into its JSON and binary parts by `header_len` (the parsed header).
fn split(body: &Bytes, header_len: Option<usize>) -> Result<(Bytes, Bytes), ProtocolError> {
    match header_len {
        None => Ok((body.clone(), Bytes::new())),
        Some(0) => Err(ProtocolError::bad(
            "Inference-Header-Content-Length 0 (a raw binary request without a JSON header) is not supported",
        )),
        Some(n) if n > body.len() => Err(ProtocolError::bad(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
        Some(n) => Ok((body.slice(..n), body.slice(n..))),
    }
}

/// Parses the value of the `Inference-Header-Content-Length` header.
pub fn parse_header_len(value: &[u8]) -> Result<usize, ProtocolError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ProtocolError::bad(format!(
                "Inference-Header-Content-Length must be a byte count, got {:?}",
                String::from_utf8_lossy(&value[..value.len().min(32)])
            ))
        })
}

pub(crate) fn refuse_unsupported(
    owner: &str,
    parameters: &Parameters,
) -> Result<(), ProtocolError> {
    for (key, what) in UNSUPPORTED_PARAMETERS {
        if parameters.get(key).is_some() {
            return Err(ProtocolError::bad(format!(
                "{owner} uses parameter '{key}' of {what}, which this server does not implement"
            )));
        }
    }
    Ok(())
}

/// Takes a tensor's binary data size out of its parameters (it is transport detail).
fn take_binary_size(
    name: &str,
    parameters: &mut Parameters,
) -> Result<Option<usize>, ProtocolError> {
    match parameters.remove(BINARY_DATA_SIZE) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ProtocolError::bad(format!(
                    "tensor '{name}': binary_data_size must be a non-negative integer, got {v:?}"
                ))
            }),
    }
}

/// Turns one parsed tensor into a typed one, taking binary data from `binary` at `*at` when it
/// has `binary_data_size`. Shapes are checked against `limits` before anything is allocated.
fn tensor_from_wire(
    mut wire: WireTensor,
    binary: &Bytes,
    at: &mut usize,
    limits: &Limits,
    total: &mut u64,
) -> Result<Tensor, ProtocolError> {
    let name = wire.name;
    limits.check_parameters(&format!("tensor '{name}'"), wire.parameters.len())?;
    refuse_unsupported(&format!("tensor '{name}'"), &wire.parameters)?;
    let count = limits.check_shape(&name, &wire.shape)?;
    *total = total.saturating_add(count);
    limits.check_request_elements(*total)?;
    let count = usize::try_from(count).expect("check_shape keeps counts within usize");
    let data = match (take_binary_size(&name, &mut wire.parameters)?, wire.data) {
        (Some(_), Some(_)) => {
            return Err(ProtocolError::bad(format!(
                "tensor '{name}' has both JSON data and binary_data_size"
            )));
        }
        (Some(size), None) => {
            let left = binary.len() - *at;
            if size > left {
                return Err(ProtocolError::bad(format!(
                    "tensor '{name}': binary_data_size is {size} but only {left} bytes of binary data remain"
                )));
            }
            let raw = binary.slice(*at..*at + size);
            *at += size;
            binary::decode(&name, wire.datatype, count, &raw, limits)?
        }
        (None, Some(data)) => {
            if data.len() != count {
                return Err(ProtocolError::bad(format!(
                    "tensor '{name}': shape {:?} needs {count} elements but its data has {}",
                    wire.shape,
                    data.len()
                )));
            }
            let data = match data {
                WireData::Typed(typed) => typed,
                WireData::Column(column) => column.into_tensor_data(&name, wire.datatype)?,
            };
            if let TensorData::Bytes(elements) = &data {
                for (i, e) in elements.iter().enumerate() {
                    limits.check_bytes_element(&name, i, e.len())?;
                }
            }
            data
        }
        (None, None) => {
            return Err(ProtocolError::bad(format!(
                "tensor '{name}' has neither \"data\" nor binary_data_size"
            )));
        }
    };
    Ok(Tensor {
        name,
        shape: wire.shape,
        data,
        parameters: wire.parameters,
    })
}

fn check_bool(owner: &str, parameters: &Parameters, key: &str) -> Result<(), ProtocolError> {
    parameters
        .get_bool(key)
        .map(|_| ())
        .map_err(|e| e.context(owner))
}

fn refuse_duplicates<'a>(
    what: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ProtocolError> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ProtocolError::bad(format!(
                "{what} '{name}' is given more than once"
            )));
        }
    }
    Ok(())
}

/// Decodes a REST inference request body; `header_len` is the parsed
/// `Inference-Header-Content-Length`, if the request had one.
pub fn decode_request(
    body: &Bytes,
    header_len: Option<usize>,
    limits: &Limits,
) -> Result<InferRequest, ProtocolError> {
    if body.len() > limits.max_body_bytes {
        return Err(ProtocolError::too_large(format!(
            "the request body is {} bytes, more than the {} allowed",
            body.len(),
            limits.max_body_bytes
        )));
    }
    let (json, binary) = split(body, header_len)?;
    let wire: WireRequest = serde_json::from_slice(&json)
        .map_err(|e| ProtocolError::bad(format!("invalid inference request JSON: {e}")))?;
    limits.check_counts(wire.inputs.len(), wire.outputs.len())?;
    limits.check_parameters("the request", wire.parameters.len())?;
    check_bool("the request", &wire.parameters, BINARY_DATA_OUTPUT)?;
    refuse_duplicates("input", wire.inputs.iter().map(|t| t.name.as_str()))?;
    refuse_duplicates(
        "requested output",
        wire.outputs.iter().map(|o| o.name.as_str()),
    )?;

    let (mut at, mut total) = (0usize, 0u64);
    let inputs = wire
        .inputs
        .into_iter()
        .map(|t| tensor_from_wire(t, &binary, &mut at, limits, &mut total))
        .collect::<Result<Vec<_>, _>>()?;
    if at != binary.len() {
        return Err(ProtocolError::bad(format!(
            "{} bytes of binary data follow the last binary input",
            binary.len() - at
        )));
    }
    let outputs = wire
        .outputs
        .into_iter()
        .map(|o| {
            let owner = format!("requested output '{}'", o.name);
            limits.check_parameters(&owner, o.parameters.len())?;
            check_bool(&owner, &o.parameters, BINARY_DATA)?;
            refuse_unsupported(&owner, &o.parameters)?;
            Ok(RequestedOutput {
                name: o.name,
                parameters: o.parameters,
            })
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    Ok(InferRequest {
        id: wire.id,
        parameters: wire.parameters,
        inputs,
        outputs,
    })
}

/// Encodes the backend's answer for the client. `selection` is what the request asked for
/// ([`OutputSelection::of`]); outputs are kept and ordered by it, and sent as binary where it
/// says so. A `BYTES` output that is not UTF-8 has no JSON form: asking for it in JSON is a
/// [`InferError::BadRequest`]. A malformed answer of the backend is an [`InferError::Internal`].
pub fn encode_response(
    response: InferResponse,
    selection: &OutputSelection,
) -> Result<RestBody, InferError> {
    let response = selection.apply(response).map_err(InferError::Internal)?;
    let mut binary_parts = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for t in &response.outputs {
        t.check()
            .map_err(|e| InferError::Internal(format!("the backend's answer: {e}")))?;
        let mut parameters = t.parameters.clone();
        let data = if selection.wants_binary(&t.name) {
            let size = binary::encoded_len(&t.data);
            parameters.insert(BINARY_DATA_SIZE, ParameterValue::Int64(size as i64));
            binary_parts.push(&t.data);
            None
        } else {
            if let Some(i) = bytes_are_utf8(&t.data) {
                return Err(InferError::BadRequest(format!(
                    "output '{}' element {i} is not UTF-8 and cannot be sent as JSON; ask for it with \"binary_data\": true",
                    t.name
                )));
            }
            Some(JsonData(&t.data))
        };
        outputs.push(WireTensorOut {
            name: &t.name,
            datatype: t.datatype(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    let wire = WireResponseOut {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        parameters: &response.parameters,
        outputs,
    };
    let mut body = serde_json::to_vec(&wire)
        .map_err(|e| InferError::Internal(format!("encoding the response JSON: {e}")))?;
    if binary_parts.is_empty() {
        return Ok(RestBody {
            body,
            header_len: None,
        });
    }
    let header_len = body.len();
    for data in binary_parts {
        body.extend_from_slice(
            &binary::encode(data).map_err(|e| InferError::Internal(e.to_string()))?,
        );
    }
    Ok(RestBody {
        body,
        header_len: Some(header_len),
    })
}

/// Encodes a request as a client would: with `binary_inputs`, every input's data follows the
/// JSON in binary (as tritonclient does by default), else all data is JSON.
pub fn encode_request(
    request: &InferRequest,
    binary_inputs: bool,
) -> Result<RestBody, ProtocolError> {
    let mut binary_parts = Vec::new();
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for t in &request.inputs {
        t.check()?;
        let mut parameters = t.parameters.clone();
        let data = if binary_inputs {
            parameters.insert(
                BINARY_DATA_SIZE,
                ParameterValue::Int64(binary::encoded_len(&t.data) as i64),
            );
            binary_parts.push(&t.data);
            None
        } else {
            if let Some(i) = bytes_are_utf8(&t.data) {
                return Err(ProtocolError::bad(format!(
                    "input '{}' element {i} is not UTF-8",
                    t.name
                )));
            }
            Some(JsonData(&t.data))
        };
        inputs.push(WireTensorOut {
            name: &t.name,
            datatype: t.datatype(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    let wire = WireRequestOut {
        id: request.id.as_deref(),
        parameters: &request.parameters,
        inputs,
        outputs: request
            .outputs
            .iter()
            .map(|o| WireRequestedOutputOut {
                name: &o.name,
                parameters: &o.parameters,
            })
            .collect(),
    };
    let mut body = serde_json::to_vec(&wire).map_err(|e| ProtocolError::bad(e.to_string()))?;
    if binary_parts.is_empty() {
        return Ok(RestBody {
            body,
            header_len: None,
        });
    }
    let header_len = body.len();
    for data in binary_parts {
        body.extend_from_slice(&binary::encode(data)?);
    }
    Ok(RestBody {
        body,
        header_len: Some(header_len),
    })
}

/// Decodes a REST inference response as a client would.
pub fn decode_response(
    body: &Bytes,
    header_len: Option<usize>,
    limits: &Limits,
) -> Result<InferResponse, ProtocolError> {
    let (json, binary) = split(body, header_len)?;
    let wire: WireResponse = serde_json::from_slice(&json)
        .map_err(|e| ProtocolError::bad(format!("invalid inference response JSON: {e}")))?;
    let (mut at, mut total) = (0usize, 0u64);
    let outputs = wire
        .outputs
        .into_iter()
        .map(|t| tensor_from_wire(t, &binary, &mut at, limits, &mut total))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InferResponse {
        model_name: wire.model_name,
        model_version: wire.model_version,
        id: wire.id,
        parameters: wire.parameters,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TensorData;

    fn decode(json: &str) -> Result<InferRequest, ProtocolError> {
        decode_request(
            &Bytes::copy_from_slice(json.as_bytes()),
            None,
            &Limits::default(),
        )
    }

    #[test]
    fn the_specs_binary_example_decodes() {
        let json = r#"{"model_name":"mymodel","inputs":[
            {"name":"input0","shape":[2,2],"datatype":"UINT32","parameters":{"binary_data_size":16}},
            {"name":"input1","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":3}}],
            "outputs":[{"name":"output0","parameters":{"binary_data":true}}]}"#;
        let mut body = json.as_bytes().to_vec();
        for v in [1u32, 2, 3, 4] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&[1, 0, 1]);
        let r = decode_request(&Bytes::from(body), Some(json.len()), &Limits::default()).unwrap();
        assert_eq!(r.inputs[0].data, TensorData::U32(vec![1, 2, 3, 4]));
        assert_eq!(r.inputs[1].data, TensorData::Bool(vec![true, false, true]));
        assert!(
            r.inputs[0].parameters.is_empty(),
            "binary_data_size is transport detail"
        );
        assert!(r.output_wants_binary("output0"));
    }

    #[test]
    fn counts_sizes_and_leftovers_are_checked() {
        let e = decode(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT32","data":[1,2]}]}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 3 elements but its data has 2"),
            "{e}"
        );
        let e = decode(
            r#"{"inputs":[{"name":"x","shape":[1099511627776],"datatype":"INT32","data":[1]}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge(_)), "{e}");
        let e = decode(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32"}]}"#).unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let e = decode(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1]},{"name":"x","shape":[1],"datatype":"INT32","data":[1]}]}"#).unwrap_err();
        assert!(e.to_string().contains("more than once"), "{e}");
        let e = decode(r#"{"inputs":[],"parameters":{"binary_data_output":"yes"}}"#).unwrap_err();
        assert!(e.to_string().contains("binary_data_output"), "{e}");
        let e =
            decode(r#"{"inputs":[],"outputs":[{"name":"y","parameters":{"classification":3}}]}"#)
                .unwrap_err();
        assert!(e.to_string().contains("classification"), "{e}");
        let json = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(&[1, 2]);
        let e =
            decode_request(&Bytes::from(body), Some(json.len()), &Limits::default()).unwrap_err();
        assert!(
            e.to_string().contains("1 bytes of binary data follow"),
            "{e}"
        );
    }

    #[test]
    fn counts_and_string_lengths_are_bounded() {
        let limits = Limits {
            max_inputs: 2,
            max_bytes_element_len: 3,
            ..Limits::default()
        };
        let input = |n: usize| {
            format!(r#"{{"name":"i{n}","shape":[1],"datatype":"BYTES","data":["abc"]}}"#)
        };
        let three = format!(r#"{{"inputs":[{},{},{}]}}"#, input(0), input(1), input(2));
        let e = decode_request(&Bytes::from(three), None, &limits).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge(_)), "{e}");
        let long = r#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","data":["abcd"]}]}"#;
        let e = decode_request(&Bytes::from_static(long.as_bytes()), None, &limits).unwrap_err();
        assert!(
            matches!(e, ProtocolError::TooLarge(_)) && e.to_string().contains("element 0"),
            "{e}"
        );
    }

    #[test]
    fn data_before_or_after_datatype_decodes_and_fails_alike() {
        let typed = r#"{"inputs":[{"name":"x","datatype":"UINT8","shape":[2],"data":[[1],[2]]}]}"#;
        let column = r#"{"inputs":[{"data":[[1],[2]],"shape":[2],"name":"x","datatype":"UINT8"}]}"#;
        assert_eq!(decode(typed).unwrap(), decode(column).unwrap());
        for json in [
            r#"{"inputs":[{"name":"x","datatype":"UINT8","shape":[2],"data":[1,256]}]}"#,
            r#"{"inputs":[{"data":[1,256],"name":"x","datatype":"UINT8","shape":[2]}]}"#,
        ] {
            let e = decode(json).unwrap_err().to_string();
            assert!(
                e.contains("tensor 'x' element 1: 256 is out of range for UINT8"),
                "{e}"
            );
        }
        let e = decode(
            r#"{"inputs":[{"name":"x","datatype":"INT8","datatype":"INT8","shape":[],"data":1}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("duplicate field"), "{e}");
        let e = decode(r#"{"inputs":[{"name":"x","datatype":"BOOL","shape":[1],"data":[1]}]}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("is BOOL but its data holds numbers"),
            "{e}"
        );
    }

    #[test]
    fn a_response_round_trips_in_json_and_binary() {
        let t = |name: &str| Tensor::new(name, vec![2], TensorData::F32(vec![1.0, -2.5])).unwrap();
        let response = InferResponse {
            model_name: "m".into(),
            model_version: Some("1".into()),
            id: None,
            parameters: Parameters::new(),
            outputs: vec![t("a"), t("b")],
        };
        let mut selection = OutputSelection {
            request_id: Some("r".into()),
            ..Default::default()
        };
        let json = encode_response(response.clone(), &selection).unwrap();
        assert_eq!(json.header_len, None);
        let back = decode_response(&Bytes::from(json.body), None, &Limits::default()).unwrap();
        assert_eq!(back.id.as_deref(), Some("r"));
        assert_eq!(back.outputs, response.outputs);

        selection.binary_default = true;
        let bin = encode_response(response.clone(), &selection).unwrap();
        let n = bin.header_len.unwrap();
        assert_eq!(bin.body.len(), n + 16);
        let back = decode_response(&Bytes::from(bin.body), Some(n), &Limits::default()).unwrap();
        assert_eq!(back.outputs, response.outputs);
    }
}
