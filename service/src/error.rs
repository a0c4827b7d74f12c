//! The error body of every Cumulus HTTP answer: `{"error": "..."}` with the status that says what
//! kind of failure it is. 4xx messages say exactly what was wrong with the input; 5xx messages
//! are generic and the detail goes to the log (STYLE.md §7), which [`internal_error`] does.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `status` with the body `{"error": message}`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// A 500 whose body says only `what` failed; `detail` goes to the log of the current span.
pub fn internal_error(what: &str, detail: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %detail, "{what}");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_one_error_field() {
        let r = json_error(StatusCode::BAD_REQUEST, "bad");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
}
