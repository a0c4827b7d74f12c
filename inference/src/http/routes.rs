//! The handlers: each translates between HTTP and one [`InferBackend`] call, nothing more.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cumulus_service::error::json_error;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{ModelRef, read_body};
use crate::protocol::rest::{self, INFERENCE_HEADER_CONTENT_LENGTH};
use crate::protocol::{
    InferBackend, InferError, OutputSelection, Parameters, ProtocolError, validate,
};

/// The router's state: the backend every handler calls.
pub type Backend = Arc<dyn InferBackend>;

/// Bodies larger than this are decoded and encoded on the blocking pool, so a 60 MB JSON
/// request does not stall the runtime's worker threads.
const BLOCKING_THRESHOLD: usize = 256 << 10;

async fn off_runtime<T: Send + 'static>(
    big: bool,
    f: impl FnOnce() -> Result<T, InferError> + Send + 'static,
) -> Result<T, InferError> {
    if !big {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InferError::Internal(format!("codec task failed: {e}")))?
}

pub async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

pub async fn ready(State(backend): State<Backend>) -> Response {
    if backend.server_ready() {
        Json(json!({ "ready": true })).into_response()
    } else {
        json_error(StatusCode::SERVICE_UNAVAILABLE, "the server is not ready")
    }
}

pub async fn server_metadata(State(backend): State<Backend>) -> Response {
    Json(backend.server_metadata()).into_response()
}

pub async fn model_metadata(
    State(backend): State<Backend>,
    model: ModelRef,
) -> Result<Response, ApiError> {
    let meta = backend.model_metadata(&model.name, model.version.as_deref())?;
    Ok(Json(meta).into_response())
}

pub async fn model_ready(
    State(backend): State<Backend>,
    model: ModelRef,
) -> Result<Response, ApiError> {
    if backend.model_ready(&model.name, model.version.as_deref())? {
        Ok(Json(json!({ "name": model.name, "ready": true })).into_response())
    } else {
        Err(InferError::not_ready(&model.name).into())
    }
}

pub async fn infer(
    State(backend): State<Backend>,
    model: ModelRef,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = backend.limits().clone();
    let bytes = read_body(&headers, body, limits.max_body_bytes).await?;
    // Shed load before the decode, the costliest part of a refused request.
    backend.admit(&model.name)?;
    let header_len = headers
        .get(INFERENCE_HEADER_CONTENT_LENGTH)
        .map(|v| rest::parse_header_len(v.as_bytes()))
        .transpose()?;
    let big = bytes.len() > BLOCKING_THRESHOLD;
    let request = off_runtime(big, move || {
        rest::decode_request(&bytes, header_len, &limits).map_err(InferError::from)
    })
    .await?;
    let selection = OutputSelection::of(&request);
    tracing::debug!(model = %model.name, inputs = request.inputs.len(), "infer");
    let response = backend
        .infer(&model.name, model.version.as_deref(), request)
        .await?;
    let big = response
        .outputs
        .iter()
        .map(|t| crate::protocol::binary::encoded_len(&t.data))
        .sum::<usize>()
        > BLOCKING_THRESHOLD;
    let encoded = off_runtime(big, move || rest::encode_response(response, &selection)).await?;
    let mut r = Response::new(Body::from(encoded.body));
    let content_type = match encoded.header_len {
        Some(n) => {
            r.headers_mut()
                .insert(INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(n));
            "application/octet-stream"
        }
        None => "application/json",
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// An optional JSON body: empty (or all whitespace) means the default.
fn optional_json<T: for<'de> Deserialize<'de> + Default>(
    what: &str,
    body: &Bytes,
) -> Result<T, ProtocolError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ProtocolError::bad(format!("invalid {what}: {e}")))
}

#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

#[derive(Debug, Default, Deserialize)]
struct RepositoryRequest {
    #[serde(default)]
    parameters: Parameters,
}

pub async fn repository_index(
    State(backend): State<Backend>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, backend.limits().max_body_bytes).await?;
    let request: IndexRequest = optional_json("repository index request", &body)?;
    Ok(Json(backend.repository_index(request.ready)).into_response())
}

pub async fn load(
    State(backend): State<Backend>,
    model: ModelRef,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, backend.limits().max_body_bytes).await?;
    let request: RepositoryRequest = optional_json("load request", &body)?;
    validate::check_repository_parameters(
        "load",
        request.parameters.iter().map(|(k, _)| k.as_str()),
        &[],
    )?;
    backend.load(&model.name).await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn unload(
    State(backend): State<Backend>,
    model: ModelRef,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, backend.limits().max_body_bytes).await?;
    let request: RepositoryRequest = optional_json("unload request", &body)?;
    validate::check_repository_parameters(
        "unload",
        request.parameters.iter().map(|(k, _)| k.as_str()),
        &["unload_dependents"],
    )?;
    backend.unload(&model.name).await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such endpoint")
}

pub async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}
