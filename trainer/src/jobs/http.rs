//! The job API over HTTP (DESIGN.md §5): a thin translation of [`JobManager`] calls to REST and
//! server-sent events. [`router`] builds the whole service, so tests drive it without a socket.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/jobs` | the job file as TOML, or JSON with `Content-Type: application/json`; 201 `{"id"}` |
//! | `GET /v1/jobs` | `{"jobs": [...]}`, oldest first |
//! | `GET /v1/jobs/{id}` | the job: state, status (step, loss, bytes, workers, cost), metrics when done |
//! | `GET /v1/jobs/{id}/events` | SSE: a `status` event per update, then one `end` event with the job |
//! | `DELETE /v1/jobs/{id}` | cancels it; the job as it stands |
//!
//! Errors are `{"error": "..."}`: 400 bad job file, 401 missing or wrong bearer token, 404
//! unknown job, 413 body too large, 429 too many jobs, 503 shutting down.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::json;
use tokio::sync::watch;

use super::{JobManager, JobsError};
use crate::report::JobStatus;

/// Largest job file accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a request was refused; [`IntoResponse`] maps each cause to its status in one `match`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("unreadable request body: {0}")]
    BadBody(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Jobs(e) => match e {
                JobsError::BadJob(_) => StatusCode::BAD_REQUEST,
                JobsError::UnknownJob(_) => StatusCode::NOT_FOUND,
                JobsError::TooManyJobs { .. } => StatusCode::TOO_MANY_REQUESTS,
                JobsError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
        };
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[derive(Clone)]
struct AppState {
    manager: JobManager,
    /// Accepted bearer tokens; empty means no authentication.
    tokens: Arc<Vec<String>>,
}

/// The job API. With `auth` holding at least one token, every request needs
/// `Authorization: Bearer <token>` with one of them.
pub fn router(manager: JobManager, auth: Option<Vec<String>>) -> Router {
    let state = AppState {
        manager,
        tokens: Arc::new(auth.unwrap_or_default()),
    };
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.tokens.is_empty() {
        let offered = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Every token is compared in full, so the time taken does not say which one came close.
        let matched = state
            .tokens
            .iter()
            .fold(false, |ok, token| ok | constant_time_eq(offered, token));
        if offered.is_empty() || !matched {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Equality whose time depends only on the lengths, never on where the strings differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[tracing::instrument(skip_all)]
async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::BadBody(e.body_text())
        }
    })?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadBody(format!("the job file is not UTF-8: {e}")))?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let id = state.manager.submit_text(text, json)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

async fn list(State(state): State<AppState>) -> Response {
    Json(json!({ "jobs": state.manager.list() })).into_response()
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.manager.get(&id)?).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.manager.cancel(&id)?).into_response())
}

async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = state.manager.subscribe(&id)?;
    let stream = progress_events(state.manager.clone(), id, rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

enum Phase {
    First,
    Updates,
    Done,
}

/// The current status, one `status` event per change, then one `end` event carrying the
/// whole job (metrics or error included) once the job's channel closes.
fn progress_events(
    manager: JobManager,
    id: String,
    rx: watch::Receiver<JobStatus>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((Phase::First, rx), move |(phase, mut rx)| {
        let manager = manager.clone();
        let id = id.clone();
        async move {
            let event = match phase {
                Phase::Done => return None,
                Phase::First => {
                    let st = rx.borrow_and_update().clone();
                    return Some((Ok(status_event(&st)), (Phase::Updates, rx)));
                }
                Phase::Updates => match rx.changed().await {
                    Ok(()) => {
                        let st = rx.borrow_and_update().clone();
                        return Some((Ok(status_event(&st)), (Phase::Updates, rx)));
                    }
                    Err(_) => {
                        let data = match manager.get(&id) {
                            Ok(view) => serde_json::to_string(&view),
                            // Forgotten already: the last status is all there is.
                            Err(_) => serde_json::to_string(&*rx.borrow()),
                        };
                        Event::default()
                            .event("end")
                            .data(data.unwrap_or_else(|_| "{}".to_string()))
                    }
                },
            };
            Some((Ok(event), (Phase::Done, rx)))
        }
    })
}

fn status_event(st: &JobStatus) -> Event {
    // Serializing a JobStatus only fails on a non-finite float, which serde_json writes as null.
    Event::default()
        .event("status")
        .data(serde_json::to_string(st).unwrap_or_else(|_| "{}".to_string()))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
        assert!(constant_time_eq("", ""));
    }
}
