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
//! unknown job, 403 a job reading or writing outside the allowed folders, 413 body too large,
//! 422 a job this control plane cannot run as written (the
//! limit is named), 429 too many jobs, 503 shutting down.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cumulus_service::auth::{BearerTokens, require_bearer};
use cumulus_service::error::json_error;
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
                JobsError::Unrunnable(_) => StatusCode::UNPROCESSABLE_ENTITY,
                JobsError::Forbidden(_) => StatusCode::FORBIDDEN,
                JobsError::BadOutput(_) => StatusCode::BAD_REQUEST,
                JobsError::UnknownJob(_) => StatusCode::NOT_FOUND,
                JobsError::TooManyJobs { .. } => StatusCode::TOO_MANY_REQUESTS,
                JobsError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
        };
        json_error(status, self.to_string())
    }
}

#[derive(Clone)]
struct AppState {
    manager: JobManager,
}

/// The job API. With at least one token, every request needs `Authorization: Bearer <token>`
/// with one of them.
pub fn router(manager: JobManager, tokens: BearerTokens) -> Router {
    let state = AppState { manager };
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(tokens, require_bearer))
        .with_state(state)
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
