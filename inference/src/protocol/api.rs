//! The seam between the front ends and the inference core: [`InferBackend`], which the core
//! implements, and [`InferError`], the one error both [`http`](crate::http) and
//! [`grpc`](crate::grpc) map to a status, each with one exhaustive `match`.
//!
//! Neither mentions axum or tonic: the same backend serves both transports (as TEI's `Infer`
//! serves its HTTP and gRPC routers).
//!
//! ```
//! use std::time::Duration;
//! use cumulus_inference::protocol::{InferError, ProtocolError};
//! let e: InferError = ProtocolError::BadRequest("input 'x': wrong shape".into()).into();
//! assert!(matches!(e, InferError::BadRequest(_)));
//! let busy = InferError::Overloaded { retry_after: Duration::from_millis(1500), reason: "queue full".into() };
//! assert_eq!(busy.to_string(), "queue full");
//! ```

use std::time::Duration;

pub use futures::future::BoxFuture;

use super::error::ProtocolError;
use super::limits::Limits;
use super::metadata::{ModelMetadata, RepositoryEntry, ServerMetadata};
use super::request::{InferRequest, InferResponse};

/// Why a backend refused or failed a call. Messages of the 4xx-class variants go to the client
/// as they are; the message of [`InferError::Internal`] goes to the log only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// No such model, or no such version of it (HTTP 404, `NOT_FOUND`).
    #[error("{0}")]
    ModelNotFound(String),
    /// The model exists but is not loaded or not ready (HTTP 503, `UNAVAILABLE`).
    #[error("{0}")]
    ModelNotReady(String),
    /// The request is malformed or does not fit the model (HTTP 400, `INVALID_ARGUMENT`).
    #[error("{0}")]
    BadRequest(String),
    /// The request exceeds a size limit (HTTP 413, `RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    TooLarge(String),
    /// Admission control refused the request; the client may retry after `retry_after`
    /// (HTTP 429 with `Retry-After`, `RESOURCE_EXHAUSTED`).
    #[error("{reason}")]
    Overloaded {
        /// When a retry may succeed.
        retry_after: Duration,
        /// What is overloaded, for the client.
        reason: String,
    },
    /// The server is shutting down or otherwise not serving (HTTP 503, `UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the server; the detail is logged, the client sees a generic message (HTTP
    /// 500, `INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl InferError {
    /// [`InferError::ModelNotFound`] with the usual wording.
    pub fn unknown_model(name: &str, version: Option<&str>) -> Self {
        match version {
            Some(v) => InferError::ModelNotFound(format!("unknown model '{name}' version '{v}'")),
            None => InferError::ModelNotFound(format!("unknown model '{name}'")),
        }
    }

    /// [`InferError::ModelNotReady`] with the usual wording.
    pub fn not_ready(name: &str) -> Self {
        InferError::ModelNotReady(format!("model '{name}' is not ready"))
    }
}

impl From<ProtocolError> for InferError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::BadRequest(m) => InferError::BadRequest(m),
            ProtocolError::NotFound(m) => InferError::ModelNotFound(m),
            ProtocolError::TooLarge(m) => InferError::TooLarge(m),
        }
    }
}

/// What the front ends need from the inference core. Names given to it have passed
/// [`check_model_name`](super::check_model_name) / [`check_version`](super::check_version);
/// requests given to [`InferBackend::infer`] are decoded and within [`InferBackend::limits`] but
/// not yet checked against the model: the backend calls
/// [`validate_request`](super::validate_request) with the model's metadata (it owns the metadata
/// and can do so without a race against a reload).
pub trait InferBackend: Send + Sync + 'static {
    /// Whether the server is ready for inference (`/v2/health/ready`). Liveness needs no call:
    /// a server that answers is live.
    fn server_ready(&self) -> bool;

    /// The server's name, version and implemented extensions.
    fn server_metadata(&self) -> ServerMetadata;

    /// The metadata of a model (`version` `None`: the server's choice).
    fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, InferError>;

    /// Whether a model is ready; `Err(ModelNotFound)` for an unknown one.
    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, InferError>;

    /// Runs one request. The front end keeps only the requested outputs of the answer, in the
    /// requested order, and echoes the request id if the answer has none.
    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'_, Result<InferResponse, InferError>>;

    /// A cheap check before a request's body is decoded: `Err(Overloaded)` when the model would
    /// refuse any request now, so an overloaded server sheds load without parsing tensors.
    /// Anything else (unknown model, bad input) is left to [`InferBackend::infer`].
    fn admit(&self, _name: &str) -> Result<(), InferError> {
        Ok(())
    }

    /// Every model the repository knows (only ready ones when `ready_only`).
    fn repository_index(&self, ready_only: bool) -> Vec<RepositoryEntry>;

    /// Loads (or reloads) a model; resolves once it is ready or has failed.
    fn load(&self, name: &str) -> BoxFuture<'_, Result<(), InferError>>;

    /// Unloads a model; resolves once it is unloaded.
    fn unload(&self, name: &str) -> BoxFuture<'_, Result<(), InferError>>;

    /// The size bounds both front ends enforce (body size, tensor elements, ...).
    fn limits(&self) -> &Limits;
}
