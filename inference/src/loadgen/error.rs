//! The load generator's one error type.

use std::path::PathBuf;

/// Why a run or a sweep could not be carried out (a server's failed answers are not errors: they
/// are counted in the result).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The [`LoadSpec`](super::LoadSpec) or sweep plan is unusable; the message names the field.
    #[error("invalid load spec: {0}")]
    Spec(String),
    /// The transport could not be set up (bad URL, gRPC channel refused).
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// A `/proc` file of the server's process tree could not be read.
    #[error("cannot read {path}: {reason}")]
    Proc { path: PathBuf, reason: String },
    /// Scraping the server's Prometheus metrics failed.
    #[error("cannot scrape metrics at {url}: {reason}")]
    Metrics { url: String, reason: String },
    /// The dispatcher thread could not be started or died.
    #[error("dispatcher: {0}")]
    Dispatcher(String),
}

pub type Result<T, E = LoadgenError> = std::result::Result<T, E>;
