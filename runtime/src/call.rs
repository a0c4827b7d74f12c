//! One `POST /invoke` over HTTP, the same for local instances and remote functions (Knative,
//! OpenFaaS): headers of the contract, deadline enforced by the caller, errors sorted.

use std::time::Duration;

use bytes::Bytes;

use crate::error::FunctionFailure;
use crate::instance::{HEADER_DEADLINE_MS, HEADER_FUNCTION, HEADER_MEMORY_MB, HEADER_REQUEST_ID};

/// The first this many bytes of an error body are kept in the error.
const MAX_ERROR_BODY: usize = 1024;

/// Why a call did not return a result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The function answered with an error.
    Function(FunctionFailure, String),
    /// No answer: connection refused or reset, body cut.
    Transport(String),
    /// The deadline passed.
    Timeout,
}

/// What the platform tells the instance about one invocation.
pub(crate) struct CallHeaders<'a> {
    pub function: &'a str,
    pub request_id: &'a str,
    pub memory_mb: u32,
}

/// Posts `payload` to `url` and waits at most `deadline` for the whole answer.
pub(crate) async fn post_invoke(
    client: &reqwest::Client,
    url: &str,
    headers: CallHeaders<'_>,
    deadline: Duration,
    payload: Bytes,
) -> Result<Bytes, CallError> {
    let request = client
        .post(url)
        .header(HEADER_DEADLINE_MS, deadline.as_millis().to_string())
        .header(HEADER_MEMORY_MB, headers.memory_mb.to_string())
        .header(HEADER_REQUEST_ID, headers.request_id)
        .header(HEADER_FUNCTION, headers.function)
        .body(payload);
    let exchange = async {
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if status.is_success() {
            return Ok(body);
        }
        let failure = match status.as_u16() {
            400..=428 | 430..=499 => FunctionFailure::BadPayload,
            429 => FunctionFailure::Busy,
            _ => FunctionFailure::Failed,
        };
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).into_owned()
            });
        Err(CallError::Function(
            failure,
            format!("HTTP {status}: {message}"),
        ))
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout),
    }
}
