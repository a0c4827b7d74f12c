//! The KServe V2 front ends (REST router, gRPC service, protocol codecs) against a fake backend:
//! every route and RPC, every error class with its status and body, round trips of every
//! datatype, property tests on hostile input, and real servers on 127.0.0.1:0.

#[path = "frontend/fake.rs"]
mod fake;
#[path = "frontend/grpc_service.rs"]
mod grpc_service;
#[path = "frontend/http_routes.rs"]
mod http_routes;
#[path = "frontend/properties.rs"]
mod properties;
#[path = "frontend/round_trips.rs"]
mod round_trips;
#[path = "frontend/servers.rs"]
mod servers;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use cumulus_inference::protocol::{InferBackend, Limits};
use serde_json::Value;
use tower::ServiceExt;

use fake::FakeBackend;

/// A router over a fresh fake backend with `limits`, and the backend to poke at.
fn app_with(limits: Limits) -> (Arc<FakeBackend>, Router) {
    let backend = Arc::new(FakeBackend::new(limits));
    let router = cumulus_inference::http::router(backend.clone() as Arc<dyn InferBackend>);
    (backend, router)
}

fn app() -> Router {
    app_with(Limits::default()).1
}

/// Sends one request through the router without a socket.
async fn call(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("bodies of the router's answers are in memory");
    (status, headers, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("a valid request")
}

fn post_json(uri: &str, json: &Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(json.to_string()))
        .expect("a valid request")
}

fn post_bytes(uri: &str, body: Vec<u8>, header_len: Option<usize>) -> Request<Body> {
    let mut r = Request::post(uri).header("content-type", "application/octet-stream");
    if let Some(n) = header_len {
        r = r.header("inference-header-content-length", n);
    }
    r.body(Body::from(body)).expect("a valid request")
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The message of an error body, after checking it is exactly `{"error": "<string>"}`.
fn error_of(body: &Bytes) -> String {
    let v = json_of(body);
    let obj = v.as_object().expect("an error body is an object");
    assert_eq!(obj.len(), 1, "an error body has only \"error\": {v}");
    obj["error"]
        .as_str()
        .expect("\"error\" is a string")
        .to_owned()
}
