//! The gRPC front end: `inference.GRPCInferenceService` (KServe V2 plus Triton's model
//! repository RPCs) over an [`InferBackend`], for tonic.
//!
//! RPCs: `ServerLive`, `ServerReady`, `ModelReady`, `ServerMetadata`, `ModelMetadata`,
//! `ModelInfer`, `RepositoryIndex`, `RepositoryModelLoad`, `RepositoryModelUnload`. Errors map to
//! `NOT_FOUND`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED` (overloaded, with `retry-after`
//! metadata; too large), `UNAVAILABLE` and `INTERNAL` in [`status::status_of`]. Messages larger
//! than [`Limits::max_body_bytes`](crate::protocol::Limits) are refused by tonic's codec from
//! their length prefix, before they are read; tonic says `OUT_OF_RANGE` for that, which
//! [`KServeGrpc`] turns into `RESOURCE_EXHAUSTED` (what gRPC's C core, and so Triton, answers).
//! Each call runs in a `tracing` span `kserve_grpc` naming the RPC.
//!
//! ```no_run
//! # async fn serve(backend: std::sync::Arc<dyn cumulus_inference::protocol::InferBackend>) -> Result<(), tonic::transport::Error> {
//! tonic::transport::Server::builder()
//!     .add_service(cumulus_inference::grpc::service(backend))
//!     .serve("127.0.0.1:8001".parse().unwrap())
//!     .await
//! # }
//! ```

mod service;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use cumulus_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::protocol::InferBackend;

pub use service::InferenceService;
pub use status::status_of;

/// `grpc-status` of `OUT_OF_RANGE` and `RESOURCE_EXHAUSTED`.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The tonic server of `inference.GRPCInferenceService`: [`GrpcInferenceServiceServer`] over
/// [`InferenceService`], answering `RESOURCE_EXHAUSTED` where tonic's codec would say
/// `OUT_OF_RANGE` (a message over the size limit; the service itself never says
/// `OUT_OF_RANGE`). Add it to a `tonic::transport::Server` like the generated server.
#[derive(Debug, Clone)]
pub struct KServeGrpc {
    inner: GrpcInferenceServiceServer<InferenceService>,
}

impl KServeGrpc {
    /// The generated server inside, for callers that need its own builder methods.
    pub fn into_inner(self) -> GrpcInferenceServiceServer<InferenceService> {
        self.inner
    }
}

impl NamedService for KServeGrpc {
    const NAME: &'static str = <GrpcInferenceServiceServer<InferenceService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for KServeGrpc
where
    GrpcInferenceServiceServer<InferenceService>: Service<
            http::Request<B>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            // A refused message is a trailers-only answer: its status is in the headers.
            let headers = response.headers_mut();
            if headers
                .get("grpc-status")
                .is_some_and(|v| v == OUT_OF_RANGE)
            {
                headers.insert(
                    "grpc-status",
                    http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
                );
            }
            Ok(response)
        })
    }
}

/// The gRPC service over `backend`, with its message size limit from the backend's
/// [`Limits`](crate::protocol::Limits). Add it to a `tonic::transport::Server`.
pub fn service(backend: Arc<dyn InferBackend>) -> KServeGrpc {
    let limit = backend.limits().max_body_bytes;
    KServeGrpc {
        inner: GrpcInferenceServiceServer::new(InferenceService::new(backend))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
    }
}
