//! Conversions between the gRPC messages of `inference.GRPCInferenceService` and the protocol
//! types.
//!
//! Input data comes either in `raw_input_contents` (one entry per input, in input order, in the
//! [`binary`] form) or in each input's typed `contents`, never both, as Triton
//! requires: raw contents for all inputs or for none. Typed contents use the field of the
//! input's datatype (`int_contents` for INT8/INT16/INT32, `uint_contents` for UINT8..UINT32, ...);
//! FP16 and BF16 have none and must be raw. Responses always use `raw_output_contents`, which is
//! what tritonclient reads.
//!
//! ```
//! use cumulus_inference::protocol::{grpc_conv, InferRequest, Limits, Tensor, TensorData};
//! let mut request = InferRequest::default();
//! request.inputs.push(Tensor::new("x", vec![2], TensorData::I8(vec![-1, 1])).unwrap());
//! for raw in [true, false] {
//!     let msg = grpc_conv::request_to_grpc("m", None, &request, raw).unwrap();
//!     let (model, version, back) = grpc_conv::request_from_grpc(msg, &Limits::default()).unwrap();
//!     assert_eq!((model.as_str(), version), ("m", None));
//!     assert_eq!(back, request);
//! }
//! ```

use std::collections::HashMap;

use bytes::Bytes;
use cumulus_proto::inference as pb;
use pb::infer_parameter::ParameterChoice;

use super::api::InferError;
use super::binary;
use super::datatype::{DataType, truncate};
use super::error::ProtocolError;
use super::grpc_contents::{data_from_contents, data_to_contents};
use super::limits::Limits;
use super::metadata::{ModelMetadata, RepositoryEntry, ServerMetadata, TensorMetadata};
use super::request::{InferRequest, InferResponse, RequestedOutput};
use super::rest::refuse_unsupported;
use super::tensor::{ParameterValue, Parameters, Tensor, TensorData};

/// Parameters from their gRPC form; a parameter without a value is refused.
pub fn parameters_from_grpc(
    owner: &str,
    map: HashMap<String, pb::InferParameter>,
    limits: &Limits,
) -> Result<Parameters, ProtocolError> {
    limits.check_parameters(owner, map.len())?;
    map.into_iter()
        .map(|(key, p)| {
            let value = match p.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => ParameterValue::Bool(b),
                Some(ParameterChoice::Int64Param(i)) => ParameterValue::Int64(i),
                Some(ParameterChoice::Uint64Param(u)) => ParameterValue::Uint64(u),
                Some(ParameterChoice::DoubleParam(f)) => ParameterValue::Double(f),
                Some(ParameterChoice::StringParam(s)) => ParameterValue::String(s),
                None => {
                    return Err(ProtocolError::bad(format!(
                        "{owner}: parameter '{}' has no value",
                        truncate(&key, 64)
                    )));
                }
            };
            Ok((key, value))
        })
        .collect()
}

/// Parameters in their gRPC form.
pub fn parameters_to_grpc(parameters: &Parameters) -> HashMap<String, pb::InferParameter> {
    parameters
        .iter()
        .map(|(k, v)| {
            let choice = match v {
                ParameterValue::Bool(b) => ParameterChoice::BoolParam(*b),
                ParameterValue::Int64(i) => ParameterChoice::Int64Param(*i),
                ParameterValue::Uint64(u) => ParameterChoice::Uint64Param(*u),
                ParameterValue::Double(f) => ParameterChoice::DoubleParam(*f),
                ParameterValue::String(s) => ParameterChoice::StringParam(s.clone()),
            };
            (
                k.clone(),
                pb::InferParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect()
}

fn shape_from_grpc(name: &str, shape: &[i64]) -> Result<Vec<u64>, ProtocolError> {
    shape
        .iter()
        .map(|&d| {
            u64::try_from(d).map_err(|_| {
                ProtocolError::bad(format!(
                    "tensor '{name}' has a negative dimension in shape {shape:?}"
                ))
            })
        })
        .collect()
}

fn shape_to_grpc(name: &str, shape: &[u64]) -> Result<Vec<i64>, ProtocolError> {
    shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| {
                ProtocolError::bad(format!("tensor '{name}': dimension {d} exceeds int64"))
            })
        })
        .collect()
}

/// One tensor from its gRPC parts: `raw` when the message uses raw contents.
#[allow(clippy::too_many_arguments)]
fn tensor_from_grpc(
    name: String,
    datatype: &str,
    shape: &[i64],
    parameters: HashMap<String, pb::InferParameter>,
    contents: Option<pb::InferTensorContents>,
    raw: Option<Vec<u8>>,
    limits: &Limits,
    total: &mut u64,
) -> Result<Tensor, ProtocolError> {
    let owner = format!("tensor '{}'", truncate(&name, 64));
    let datatype: DataType = datatype
        .parse()
        .map_err(|e: ProtocolError| e.context(&owner))?;
    let shape = shape_from_grpc(&name, shape)?;
    let parameters = parameters_from_grpc(&owner, parameters, limits)?;
    refuse_unsupported(&owner, &parameters)?;
    let count = limits.check_shape(&name, &shape)?;
    *total = total.saturating_add(count);
    limits.check_request_elements(*total)?;
    let count = usize::try_from(count).expect("check_shape keeps counts within usize");
    let data = match (raw, contents) {
        (Some(_), Some(_)) => {
            return Err(ProtocolError::bad(format!(
                "{owner}: contents must not be given when raw contents are used"
            )));
        }
        (Some(raw), None) => binary::decode(&name, datatype, count, &Bytes::from(raw), limits)?,
        (None, Some(c)) => data_from_contents(&name, datatype, count, c, limits)?,
        // An absent `contents` is the empty message on the wire: fine for zero elements.
        (None, None) if count == 0 => TensorData::with_capacity(datatype, 0),
        (None, None) => {
            return Err(ProtocolError::bad(format!(
                "{owner} has no data: neither contents nor raw_input_contents"
            )));
        }
    };
    Ok(Tensor {
        name,
        shape,
        data,
        parameters,
    })
}

fn refuse_duplicates<'a>(
    what: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ProtocolError> {
    let mut seen = std::collections::HashSet::new();
    match names.into_iter().find(|n| !seen.insert(*n)) {
        Some(n) => Err(ProtocolError::bad(format!(
            "{what} '{}' is given more than once",
            truncate(n, 64)
        ))),
        None => Ok(()),
    }
}

/// A `ModelInferRequest` as `(model name, model version, request)`; an empty version or id is
/// none.
pub fn request_from_grpc(
    msg: pb::ModelInferRequest,
    limits: &Limits,
) -> Result<(String, Option<String>, InferRequest), ProtocolError> {
    limits.check_counts(msg.inputs.len(), msg.outputs.len())?;
    refuse_duplicates("input", msg.inputs.iter().map(|t| t.name.as_str()))?;
    refuse_duplicates(
        "requested output",
        msg.outputs.iter().map(|o| o.name.as_str()),
    )?;
    let raw_mode = !msg.raw_input_contents.is_empty();
    if raw_mode && msg.raw_input_contents.len() != msg.inputs.len() {
        return Err(ProtocolError::bad(format!(
            "raw_input_contents has {} entries for {} inputs: raw contents must be given for all inputs or none",
            msg.raw_input_contents.len(),
            msg.inputs.len()
        )));
    }
    let parameters = parameters_from_grpc("the request", msg.parameters, limits)?;
    let mut raw = msg.raw_input_contents.into_iter();
    let mut total = 0u64;
    let inputs = msg
        .inputs
        .into_iter()
        .map(|t| {
            let r = if raw_mode { raw.next() } else { None };
            tensor_from_grpc(
                t.name,
                &t.datatype,
                &t.shape,
                t.parameters,
                t.contents,
                r,
                limits,
                &mut total,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = msg
        .outputs
        .into_iter()
        .map(|o| {
            let owner = format!("requested output '{}'", truncate(&o.name, 64));
            let parameters = parameters_from_grpc(&owner, o.parameters, limits)?;
            refuse_unsupported(&owner, &parameters)?;
            Ok(RequestedOutput {
                name: o.name,
                parameters,
            })
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    let request = InferRequest {
        id: Some(msg.id).filter(|s| !s.is_empty()),
        parameters,
        inputs,
        outputs,
    };
    Ok((
        msg.model_name,
        Some(msg.model_version).filter(|s| !s.is_empty()),
        request,
    ))
}

/// The answer as a `ModelInferResponse`, with every output in `raw_output_contents` (as
/// Triton answers). The caller has applied the request's [`OutputSelection`](super::OutputSelection).
pub fn response_to_grpc(response: InferResponse) -> Result<pb::ModelInferResponse, InferError> {
    let internal = |e: ProtocolError| InferError::Internal(format!("the backend's answer: {e}"));
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = Vec::with_capacity(response.outputs.len());
    for t in response.outputs {
        t.check().map_err(internal)?;
        raw.push(binary::encode(&t.data).map_err(internal)?);
        outputs.push(pb::model_infer_response::InferOutputTensor {
            datatype: t.datatype().to_string(),
            shape: shape_to_grpc(&t.name, &t.shape).map_err(internal)?,
            parameters: parameters_to_grpc(&t.parameters),
            contents: None,
            name: t.name,
        });
    }
    Ok(pb::ModelInferResponse {
        model_name: response.model_name,
        model_version: response.model_version.unwrap_or_default(),
        id: response.id.unwrap_or_default(),
        parameters: parameters_to_grpc(&response.parameters),
        outputs,
        raw_output_contents: raw,
    })
}

/// A request as a client sends it: all inputs in `raw_input_contents` when `raw`, else in
/// typed contents (which FP16 and BF16 inputs cannot use).
pub fn request_to_grpc(
    model_name: &str,
    model_version: Option<&str>,
    request: &InferRequest,
    raw: bool,
) -> Result<pb::ModelInferRequest, ProtocolError> {
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut raw_contents = Vec::new();
    for t in &request.inputs {
        t.check()?;
        let contents = if raw {
            raw_contents.push(binary::encode(&t.data)?);
            None
        } else {
            Some(data_to_contents(&t.name, &t.data)?)
        };
        inputs.push(pb::model_infer_request::InferInputTensor {
            name: t.name.clone(),
            datatype: t.datatype().to_string(),
            shape: shape_to_grpc(&t.name, &t.shape)?,
            parameters: parameters_to_grpc(&t.parameters),
            contents,
        });
    }
    Ok(pb::ModelInferRequest {
        model_name: model_name.to_owned(),
        model_version: model_version.unwrap_or_default().to_owned(),
        id: request.id.clone().unwrap_or_default(),
        parameters: parameters_to_grpc(&request.parameters),
        inputs,
        outputs: request
            .outputs
            .iter()
            .map(|o| pb::model_infer_request::InferRequestedOutputTensor {
                name: o.name.clone(),
                parameters: parameters_to_grpc(&o.parameters),
            })
            .collect(),
        raw_input_contents: raw_contents,
    })
}

/// A response as a client reads it (raw or typed output contents).
pub fn response_from_grpc(
    msg: pb::ModelInferResponse,
    limits: &Limits,
) -> Result<InferResponse, ProtocolError> {
    let raw_mode = !msg.raw_output_contents.is_empty();
    if raw_mode && msg.raw_output_contents.len() != msg.outputs.len() {
        return Err(ProtocolError::bad(format!(
            "raw_output_contents has {} entries for {} outputs",
            msg.raw_output_contents.len(),
            msg.outputs.len()
        )));
    }
    let mut raw = msg.raw_output_contents.into_iter();
    let mut total = 0u64;
    let outputs = msg
        .outputs
        .into_iter()
        .map(|t| {
            let r = if raw_mode { raw.next() } else { None };
            tensor_from_grpc(
                t.name,
                &t.datatype,
                &t.shape,
                t.parameters,
                t.contents,
                r,
                limits,
                &mut total,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InferResponse {
        model_name: msg.model_name,
        model_version: Some(msg.model_version).filter(|s| !s.is_empty()),
        id: Some(msg.id).filter(|s| !s.is_empty()),
        parameters: parameters_from_grpc("the response", msg.parameters, limits)?,
        outputs,
    })
}

fn tensor_metadata_to_grpc(t: &TensorMetadata) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.to_string(),
        shape: t.shape.clone(),
    }
}

/// Model metadata as a `ModelMetadataResponse`.
pub fn model_metadata_to_grpc(m: &ModelMetadata) -> pb::ModelMetadataResponse {
    pb::ModelMetadataResponse {
        name: m.name.clone(),
        versions: m.versions.clone(),
        platform: m.platform.clone(),
        inputs: m.inputs.iter().map(tensor_metadata_to_grpc).collect(),
        outputs: m.outputs.iter().map(tensor_metadata_to_grpc).collect(),
    }
}

/// Server metadata as a `ServerMetadataResponse`.
pub fn server_metadata_to_grpc(m: &ServerMetadata) -> pb::ServerMetadataResponse {
    pb::ServerMetadataResponse {
        name: m.name.clone(),
        version: m.version.clone(),
        extensions: m.extensions.clone(),
    }
}

/// Repository index rows as a `RepositoryIndexResponse`.
pub fn repository_index_to_grpc(entries: &[RepositoryEntry]) -> pb::RepositoryIndexResponse {
    pb::RepositoryIndexResponse {
        models: entries
            .iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name.clone(),
                version: e.version.clone().unwrap_or_default(),
                state: e.state.to_string(),
                reason: e.reason.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: HashMap::new(),
            contents,
        }
    }

    #[test]
    fn raw_contents_are_for_all_inputs_or_none() {
        let msg = pb::ModelInferRequest {
            inputs: vec![
                input("a", "INT8", vec![1], None),
                input("b", "INT8", vec![1], None),
            ],
            raw_input_contents: vec![vec![1]],
            ..Default::default()
        };
        let e = request_from_grpc(msg, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("all inputs or none"), "{e}");
        let both = pb::ModelInferRequest {
            inputs: vec![input(
                "a",
                "INT32",
                vec![1],
                Some(pb::InferTensorContents {
                    int_contents: vec![1],
                    ..Default::default()
                }),
            )],
            raw_input_contents: vec![vec![1, 0, 0, 0]],
            ..Default::default()
        };
        let e = request_from_grpc(both, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("must not be given"), "{e}");
    }

    #[test]
    fn typed_contents_use_the_field_of_the_type_and_its_range() {
        let c = pb::InferTensorContents {
            int_contents: vec![1, 200],
            ..Default::default()
        };
        let msg = pb::ModelInferRequest {
            inputs: vec![input("a", "INT8", vec![2], Some(c))],
            ..Default::default()
        };
        let e = request_from_grpc(msg, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("element 1: 200 is out of range for INT8"), "{e}");
        let c = pb::InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        };
        let msg = pb::ModelInferRequest {
            inputs: vec![input("a", "INT32", vec![1], Some(c))],
            ..Default::default()
        };
        let e = request_from_grpc(msg, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fp32_contents is filled"), "{e}");
        let c = pb::InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        };
        let msg = pb::ModelInferRequest {
            inputs: vec![input("a", "FP16", vec![1], Some(c))],
            ..Default::default()
        };
        assert!(request_from_grpc(msg, &Limits::default()).is_err());
        let msg = pb::ModelInferRequest {
            inputs: vec![input("a", "FP32", vec![-1], None)],
            ..Default::default()
        };
        assert!(
            request_from_grpc(msg, &Limits::default())
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        let msg = pb::ModelInferRequest {
            inputs: vec![input("a", "FP32", vec![1 << 40], None)],
            ..Default::default()
        };
        assert!(matches!(
            request_from_grpc(msg, &Limits::default()),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn responses_are_raw_and_read_back() {
        let response = InferResponse {
            model_name: "m".into(),
            model_version: Some("2".into()),
            id: Some("7".into()),
            parameters: [("p", ParameterValue::Double(0.5))].into_iter().collect(),
            outputs: vec![
                Tensor::new("h", vec![1, 2], TensorData::F16(vec![f16::ONE, f16::MAX])).unwrap(),
            ],
        };
        let msg = response_to_grpc(response.clone()).unwrap();
        assert_eq!(msg.raw_output_contents, vec![vec![0x00, 0x3c, 0xff, 0x7b]]);
        assert_eq!(
            response_from_grpc(msg, &Limits::default()).unwrap(),
            response
        );
    }
}
