//! The gRPC front end: `inference.GRPCInferenceService` (KServe V2 plus Triton's model
//! repository RPCs) over an [`InferBackend`], for tonic.
//!
//! RPCs: `ServerLive`, `ServerReady`, `ModelReady`, `ServerMetadata`, `ModelMetadata`,
//! `ModelInfer`, `RepositoryIndex`, `RepositoryModelLoad`, `RepositoryModelUnload`. Errors map to
//! `NOT_FOUND`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED` (overloaded, with `retry-after`
//! metadata; too large), `UNAVAILABLE` and `INTERNAL` in [`status::status_of`]. Messages larger
//! than [`Limits::max_body_bytes`](crate::protocol::Limits) are refused by tonic itself before
//! they are read, with `OUT_OF_RANGE` and tonic's message. Each call runs in a `tracing` span
//! `kserve_grpc` naming the RPC.
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

use std::sync::Arc;

pub use cumulus_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;

use crate::protocol::InferBackend;

pub use service::InferenceService;
pub use status::status_of;

/// The tonic service over `backend`, with its message size limit from the backend's
/// [`Limits`](crate::protocol::Limits). Add it to a `tonic::transport::Server`.
pub fn service(backend: Arc<dyn InferBackend>) -> GrpcInferenceServiceServer<InferenceService> {
    let limit = backend.limits().max_body_bytes;
    GrpcInferenceServiceServer::new(InferenceService::new(backend))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
}
