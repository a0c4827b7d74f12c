//! The KServe Open Inference Protocol (V2), independent of any transport: its types, their
//! REST (JSON and binary extension) and gRPC codecs, validation against a model's metadata,
//! size limits, and the [`InferBackend`] trait the front ends serve.
//!
//! | module | what |
//! |---|---|
//! | [`datatype`], [`tensor`], [`request`], [`metadata`] | the types: `DataType`, `Tensor`, `InferRequest`/`InferResponse`, `ModelMetadata`, ... |
//! | [`json`], [`rest`], [`binary`] | REST bodies: JSON (nested or flat data) and the binary tensor data extension |
//! | [`grpc_conv`] | `ModelInferRequest`/`ModelInferResponse` and friends |
//! | [`validate`], [`mod@coerce`] | checking and converting a request for its model; name checks |
//! | [`limits`] | size bounds, checked before allocating |
//! | [`error`], [`api`] | `ProtocolError`; `InferBackend` and `InferError`, the seam to the core |
//!
//! A request travels: transport bytes → [`rest::decode_request`] or
//! [`grpc_conv::request_from_grpc`] (shape, size and encoding checks) → the backend's
//! [`InferBackend::infer`], which calls [`validate_request`] with the model's metadata → the
//! [`InferResponse`] → [`OutputSelection::apply`] → [`rest::encode_response`] or
//! [`grpc_conv::response_to_grpc`].
//!
//! ```
//! use bytes::Bytes;
//! use cumulus_inference::protocol::*;
//! let body = Bytes::from_static(br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[[1,2]]}],
//!     "outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#);
//! let request = rest::decode_request(&body, None, &Limits::default()).unwrap();
//! let selection = OutputSelection::of(&request);
//! let y = Tensor::new("y", vec![1, 2], TensorData::F32(vec![2.0, 3.0])).unwrap();
//! let response = InferResponse { model_name: "m".into(), outputs: vec![y], ..Default::default() };
//! let encoded = rest::encode_response(response, &selection).unwrap();
//! let json_len = encoded.header_len.unwrap(); // binary data follows the JSON
//! assert_eq!(encoded.body.len(), json_len + 8);
//! ```

pub mod api;
pub mod binary;
pub mod coerce;
pub mod datatype;
pub mod error;
mod grpc_contents;
pub mod grpc_conv;
pub mod json;
pub mod limits;
pub mod metadata;
pub mod request;
pub mod rest;
pub mod tensor;
pub mod validate;
mod wire;

pub use api::{BoxFuture, InferBackend, InferError};
pub use coerce::coerce;
pub use datatype::DataType;
pub use error::ProtocolError;
pub use limits::{Limits, element_count};
pub use metadata::{
    EXTENSION_BINARY_TENSOR_DATA, EXTENSION_MODEL_REPOSITORY, ModelMetadata, ModelState,
    RepositoryEntry, ServerMetadata, TensorMetadata,
};
pub use request::{
    BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, InferRequest, InferResponse,
    OutputSelection, RequestedOutput,
};
pub use tensor::{ParameterValue, Parameters, Tensor, TensorData};
pub use validate::{check_model_name, check_version, check_version_known, validate_request};
