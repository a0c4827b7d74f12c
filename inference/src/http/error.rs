//! The one place an [`InferError`] becomes an HTTP status: an exhaustive `match`, so a new
//! variant cannot compile without a decision here. Every body is `{"error": "..."}`; a 500 says
//! only that the request failed, the detail goes to the log of the request's span.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cumulus_service::error::{internal_error, json_error};

use crate::protocol::{InferError, ProtocolError};

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError(pub InferError);

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        ApiError(e)
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError(e.into())
    }
}

/// The status an error is answered with.
pub fn status_of(e: &InferError) -> StatusCode {
    match e {
        InferError::ModelNotFound(_) => StatusCode::NOT_FOUND,
        InferError::ModelNotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        InferError::BadRequest(_) => StatusCode::BAD_REQUEST,
        InferError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        InferError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        InferError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        InferError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whole seconds to wait, rounded up and at least one (`Retry-After: 0` invites a retry storm).
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The response for `e`.
pub fn error_response(e: InferError) -> Response {
    let status = status_of(&e);
    match e {
        InferError::Internal(detail) => internal_error("the request failed", &detail),
        InferError::Overloaded {
            retry_after,
            reason,
        } => {
            tracing::debug!(%reason, ?retry_after, "overloaded");
            let mut r = json_error(status, reason);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
            r
        }
        InferError::ModelNotFound(m)
        | InferError::ModelNotReady(m)
        | InferError::BadRequest(m)
        | InferError::TooLarge(m)
        | InferError::Unavailable(m) => {
            tracing::debug!(status = status.as_u16(), error = %m, "refused");
            json_error(status, m)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn overloaded_carries_retry_after() {
        let r = error_response(InferError::Overloaded {
            retry_after: Duration::from_millis(2500),
            reason: "busy".into(),
        });
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
