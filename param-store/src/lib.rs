//! Cumulus parameter store: hash-sharded flat f32 tensors keyed by parameter name, sparse push and
//! pull over gRPC (`paramstore.v1`), BSP/SSP/ASP clocks, a group-committed write-ahead log and
//! snapshots in an object store, and the routing client used by workers.
//!
//! - [`run`] starts one shard (the `cumulus param-store` role) and returns a [`ShardHandle`].
//! - [`ParamStoreClient`] talks to all shards of a store.
//! - [`shard::Shard`] is the transport-agnostic core; [`grpc`] only translates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cumulus_param_store::StoreError> {
//! use cumulus_param_store::{run, ShardConfig};
//! let dir = std::env::temp_dir().join("ps-demo");
//! let handle = run(ShardConfig::new("127.0.0.1:0".parse().unwrap(), dir)).await?;
//! println!("serving on {}", handle.addr);
//! handle.stop().await
//! # }
//! ```

#[cfg(feature = "bench")]
pub mod bench;
pub mod chunk;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod init;
pub mod layout;
pub mod limits;
pub mod metrics;
pub mod recovery;
mod routing;
pub mod server;
pub mod shard;
pub mod snapshot;
pub mod state;
pub mod wal;

pub use client::{ClientConfig, ParamStoreClient};
pub use config::ShardConfig;
pub use error::StoreError;
pub use server::{ShardHandle, run};
