//! The REST front end (KServe V2 / Open Inference Protocol, with Triton's binary tensor data
//! and model repository extensions): an axum [`Router`] over an [`InferBackend`], built by
//! [`router`] so tests drive it with `oneshot` and no socket.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2/health/live` | `{"live": true}` |
//! | `GET /v2/health/ready` | `{"ready": true}`, or 503 |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | `{"name", "ready": true}`, or 503 |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | inference, JSON or binary extension |
//! | `POST /v2/repository/index` | `[{"name", "version"?, "state", "reason"}]` |
//! | `POST /v2/repository/models/{m}/load`, `.../unload` | empty 200 |
//!
//! Errors are `{"error": "..."}` with 400 (bad input), 404 (unknown model), 413 (too large),
//! 429 (overloaded, with `Retry-After`), 503 (not ready, shutting down), 500 (generic message;
//! detail in the log). The mapping is [`error::status_of`]. Each request runs in a `tracing`
//! span `kserve_http` with its method, path and status.
//!
//! ```no_run
//! # async fn serve(backend: std::sync::Arc<dyn cumulus_inference::protocol::InferBackend>) -> std::io::Result<()> {
//! let app = cumulus_inference::http::router(backend);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod error;
mod extract;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::Instrument;

use crate::protocol::InferBackend;

pub use error::{ApiError, error_response, status_of};
pub use extract::ModelRef;

async fn trace(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "kserve_http",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    async move {
        let response = next.run(req).await;
        tracing::Span::current().record("status", response.status().as_u16());
        response
    }
    .instrument(span)
    .await
}

/// The KServe V2 REST router over `backend`. Bind and serve it with `axum::serve`.
pub fn router(backend: Arc<dyn InferBackend>) -> Router {
    let limit = backend.limits().max_body_bytes;
    Router::new()
        .route("/v2", get(routes::server_metadata))
        .route("/v2/health/live", get(routes::live))
        .route("/v2/health/ready", get(routes::ready))
        .route("/v2/models/{model}", get(routes::model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(routes::model_metadata),
        )
        .route("/v2/models/{model}/ready", get(routes::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(routes::model_ready),
        )
        .route("/v2/models/{model}/infer", post(routes::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(routes::infer),
        )
        .route("/v2/repository/index", post(routes::repository_index))
        .route("/v2/repository/models/{model}/load", post(routes::load))
        .route("/v2/repository/models/{model}/unload", post(routes::unload))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // The handlers read bodies themselves (for a JSON 413); this bounds any extractor too.
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(trace))
        .with_state(backend)
}
