//! Cumulus inference: the KServe V2 REST and gRPC gateway, the SLO-aware adaptive batcher, and the
//! `infer-stage` function that runs a model's layer groups.
//!
//! - [`protocol`]: the Open Inference Protocol V2 types, their JSON, binary-extension and gRPC
//!   codecs, and validation against a model's metadata;
//! - [`http`], [`grpc`]: thin REST (axum) and gRPC (tonic) adapters over one [`protocol::InferBackend`]
//!   core trait;
//! - `loadgen` (feature `bench`): the open-loop load generator of `cumulus bench serve`.

pub mod batcher;
pub mod executor;
pub mod gateway;
pub mod gpu;
pub mod grpc;
pub mod http;
pub mod layer_profile;
#[cfg(feature = "bench")]
pub mod loadgen;
pub mod metrics;
pub mod plan_bench;
pub mod protocol;
pub mod repository;
pub mod server;
pub mod stage;
