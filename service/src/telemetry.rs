//! The process-wide Prometheus recorder and the `/metrics` route that renders it.
//!
//! Libraries only record through the `metrics` facade and offer a `describe()`; the binary calls
//! [`install_prometheus`] once, then every crate's `describe()`, and hands the
//! [`PrometheusHandle`] to the roles that serve `/metrics`.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Histogram buckets of every `*_seconds` metric: 0.1 ms to 60 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Buckets of `*_size` metrics (batch sizes): powers of two to 1024.
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the global Prometheus recorder (histograms rendered with the buckets above).
/// Fails when another recorder was installed first.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS))
        .map_err(|e| format!("metric buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("installing the Prometheus recorder: {e}"))
}

/// `GET /metrics` in the Prometheus text format; an empty page without a recorder.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(
    handle: Option<PrometheusHandle>,
) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.map_or_else(String::new, |h| h.render()),
                )
                    .into_response()
            }
        }),
    )
}
