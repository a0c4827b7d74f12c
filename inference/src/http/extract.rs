//! Request parts the handlers need, each refused with the JSON error body rather than axum's
//! plain-text rejections: the model (and version) from the path, and the body within the size
//! limit.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::ApiError;
use crate::protocol::{InferError, check_model_name, check_version};

/// The most bytes read and thrown away from an oversized body before answering 413. Reading
/// them lets an HTTP/1.1 client that sends the whole body before reading (as tritonclient
/// does) see the 413 instead of a connection reset; past this the connection is dropped.
const DRAIN_CAP: usize = 256 << 20;

/// The `{model}` and optional `{version}` segments of the path, checked.
#[derive(Debug, Clone)]
pub struct ModelRef {
    /// The model's name.
    pub name: String,
    /// The version, when the path has `/versions/{version}`.
    pub version: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ModelRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(segments) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError(InferError::BadRequest(format!("bad path: {e}"))))?;
        let mut model = ModelRef {
            name: String::new(),
            version: None,
        };
        for (key, value) in segments {
            match key.as_str() {
                "model" => model.name = value,
                "version" => model.version = Some(value),
                _ => {}
            }
        }
        check_model_name(&model.name)?;
        if let Some(v) = &model.version {
            check_version(v)?;
        }
        Ok(model)
    }
}

fn too_large(len: impl std::fmt::Display, limit: usize) -> ApiError {
    ApiError(InferError::TooLarge(format!(
        "the request body is {len} bytes, more than the {limit} allowed"
    )))
}

/// Reads and discards up to [`DRAIN_CAP`] more bytes of `stream`.
async fn drain(mut stream: axum::body::BodyDataStream) {
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > DRAIN_CAP {
            break;
        }
    }
}

/// The whole body, refused with 413 once it exceeds `limit` bytes (at once when
/// `Content-Length` says so), and with 400 when it uses a content encoding.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        drain(stream).await;
        return Err(ApiError(InferError::BadRequest(format!(
            "Content-Encoding {:?} is not supported; send the body uncompressed",
            String::from_utf8_lossy(encoding.as_bytes())
        ))));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > limit as u64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer at once. Others
        // are sending: read what they send so that they get to read the answer.
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits {
            drain(stream).await;
        }
        return Err(too_large(len, limit));
    }
    let capacity = declared.map_or(0, |len| len as usize);
    let mut buf = BytesMut::with_capacity(capacity);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError(InferError::BadRequest(format!(
                "failed to read the request body: {e}"
            )))
        })?;
        if buf.len() + chunk.len() > limit {
            drain(stream).await;
            return Err(ApiError(InferError::TooLarge(format!(
                "the request body is more than the {limit} bytes allowed"
            ))));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
