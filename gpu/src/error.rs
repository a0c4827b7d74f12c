//! The crate's one error type, [`GpuError`], and its one mapping to and from `tonic::Status`.
//!
//! The executor answers every failure to the tenant that caused it; the mapping keeps the
//! variants callers act on (an unsupported layer to fall back on, a full queue to retry, a quota)
//! intact across the socket through the status's metadata, so a client sees the same variant the
//! executor raised.
//!
//! ```
//! use cumulus_gpu::GpuError;
//!
//! let err = GpuError::Unsupported {
//!     layer: "layers.1".into(),
//!     kind: "transformer_block".into(),
//!     reason: "training covers linear layers only".into(),
//! };
//! let back = GpuError::from_status(err.to_status());
//! assert!(back.is_unsupported());
//! assert_eq!(back.to_string(), err.to_string());
//! ```

use std::path::PathBuf;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Result alias used across `cumulus-gpu`.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Errors of the executor, its backends, its programs and its client.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// A request that is malformed regardless of any model: a missing field, a bad enum value,
    /// a tensor whose bytes do not match its shape.
    #[error("bad request: {0}")]
    InvalidRequest(String),

    /// An input that does not fit the layer it enters: rank, sizes, id ranges, label values.
    #[error("layer `{layer}`: bad input: {reason}")]
    BadInput { layer: String, reason: String },

    /// A layer the executor cannot run (or cannot train): the caller should run it on the CPU.
    #[error("layer `{layer}` of kind `{kind}` is not supported by the GPU executor: {reason}")]
    Unsupported {
        layer: String,
        kind: String,
        reason: String,
    },

    /// A size from the socket or a config past its bound.
    #[error("{what} is {size}, over the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },

    /// The tenant's memory quota would be exceeded.
    #[error(
        "memory quota of tenant `{tenant}` exceeded: {requested} more bytes requested, {used} of {quota} in use"
    )]
    QuotaExceeded {
        tenant: String,
        requested: u64,
        used: u64,
        quota: u64,
    },

    /// The device itself has no room (the global guard), whatever the tenant's quota.
    #[error("device memory exhausted: {requested} bytes requested, {available} available")]
    DeviceMemory { requested: u64, available: u64 },

    /// A bounded queue is full: retry later.
    #[error("{queue} queue is full ({limit} items)")]
    QueueFull { queue: String, limit: u64 },

    /// The session id names no open session (never opened, or closed).
    #[error("unknown or closed session")]
    UnknownSession,

    /// The model handle names no model loaded by this tenant.
    #[error("unknown model handle {0}")]
    UnknownHandle(u64),

    /// An executor or tenant setting out of range.
    #[error("invalid setting `{field}`: {reason}")]
    Config { field: String, reason: String },

    /// A model folder, config or weights file that cannot be used.
    #[error(transparent)]
    Model(#[from] cumulus_models::ModelError),

    /// CUDA cannot be used: no driver library, no device, or built without the `cuda` feature.
    #[error("no usable CUDA device: {0}")]
    NoDevice(String),

    /// A device, driver, cuBLAS or CPU-backend failure while running work.
    #[error("device error: {0}")]
    Device(String),

    /// An NVRTC compile error, with the compiler's log.
    #[error("kernel compile error: {0}")]
    KernelCompile(String),

    /// The executor is stopping or stopped.
    #[error("executor unavailable: {0}")]
    Unavailable(String),

    /// The connection to the executor failed.
    #[error("transport: {0}")]
    Transport(String),

    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An error the executor reported that has no variant of its own on this side.
    #[error("{message}")]
    Remote { code: String, message: String },
}

/// Metadata key carrying the variant's tag across the socket.
const TAG: &str = "x-cumulus-gpu-error";
const LAYER: &str = "x-cumulus-gpu-layer";
const KIND: &str = "x-cumulus-gpu-kind";

impl GpuError {
    /// Shorthand for [`GpuError::BadInput`].
    pub fn bad_input(layer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadInput {
            layer: layer.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`GpuError::Config`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the caller should run this work on the CPU instead (an unsupported layer, or no
    /// usable device).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. } | Self::NoDevice(_))
    }

    /// Whether the same request may succeed later (a full queue, memory in use by others).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::QueueFull { .. } | Self::DeviceMemory { .. } | Self::Unavailable(_)
        )
    }

    /// The short, stable name of the variant (metrics labels, the status metadata).
    pub fn tag(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::BadInput { .. } => "bad_input",
            Self::Unsupported { .. } => "unsupported",
            Self::TooLarge { .. } => "too_large",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::DeviceMemory { .. } => "device_memory",
            Self::QueueFull { .. } => "queue_full",
            Self::UnknownSession => "unknown_session",
            Self::UnknownHandle(_) => "unknown_handle",
            Self::Config { .. } => "config",
            Self::Model(_) => "model",
            Self::NoDevice(_) => "no_device",
            Self::Device(_) => "device",
            Self::KernelCompile(_) => "kernel_compile",
            Self::Unavailable(_) => "unavailable",
            Self::Transport(_) => "transport",
            Self::Io { .. } => "io",
            Self::Remote { .. } => "remote",
        }
    }

    /// The gRPC status of this error. Internal failures carry a generic message (the detail is
    /// logged where it happened); errors about the request say exactly what was wrong.
    pub fn to_status(&self) -> Status {
        let code = match self {
            Self::InvalidRequest(_)
            | Self::BadInput { .. }
            | Self::TooLarge { .. }
            | Self::Config { .. }
            | Self::Model(_) => Code::InvalidArgument,
            Self::Unsupported { .. } => Code::Unimplemented,
            Self::QuotaExceeded { .. } | Self::DeviceMemory { .. } | Self::QueueFull { .. } => {
                Code::ResourceExhausted
            }
            Self::UnknownSession => Code::Unauthenticated,
            Self::UnknownHandle(_) => Code::NotFound,
            Self::NoDevice(_) => Code::FailedPrecondition,
            Self::Device(_) | Self::KernelCompile(_) | Self::Io { .. } => Code::Internal,
            Self::Unavailable(_) | Self::Transport(_) => Code::Unavailable,
            Self::Remote { .. } => Code::Unknown,
        };
        let message = match code {
            Code::Internal => format!("internal executor error ({})", self.tag()),
            _ => self.to_string(),
        };
        let mut status = Status::new(code, message);
        let meta = status.metadata_mut();
        meta.insert(TAG, MetadataValue::from_static(self.tag()));
        let mut put = |key: &'static str, value: &str| {
            if let Ok(v) = MetadataValue::try_from(value) {
                meta.insert(key, v);
            }
        };
        match self {
            Self::Unsupported { layer, kind, .. } => {
                put(LAYER, layer);
                put(KIND, kind);
            }
            Self::BadInput { layer, .. } => put(LAYER, layer),
            _ => {}
        }
        status
    }

    /// Rebuilds the executor's error from a status received by a client.
    pub fn from_status(status: Status) -> Self {
        let get = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let message = status.message().to_string();
        match get(TAG).as_deref() {
            Some("unsupported") => {
                let layer = get(LAYER).unwrap_or_default();
                let kind = get(KIND).unwrap_or_default();
                // The message is this variant's Display; keep its reason part.
                let reason = message
                    .split_once("GPU executor: ")
                    .map(|(_, r)| r.to_string())
                    .unwrap_or(message);
                Self::Unsupported {
                    layer,
                    kind,
                    reason,
                }
            }
            Some("bad_input") => {
                let layer = get(LAYER).unwrap_or_default();
                let reason = message
                    .split_once("bad input: ")
                    .map(|(_, r)| r.to_string())
                    .unwrap_or(message);
                Self::BadInput { layer, reason }
            }
            Some("unknown_session") => Self::UnknownSession,
            Some("queue_full") => {
                // "{queue} queue is full ({limit} items)"
                let (queue, limit) = message
                    .split_once(" queue is full (")
                    .map(|(q, rest)| {
                        let n = rest.trim_end_matches(" items)").parse().unwrap_or(0);
                        (q.to_string(), n)
                    })
                    .unwrap_or((message.clone(), 0));
                Self::QueueFull { queue, limit }
            }
            Some("unavailable") => Self::Unavailable(strip(&message, "executor unavailable: ")),
            Some("no_device") => Self::NoDevice(strip(&message, "no usable CUDA device: ")),
            _ if status.code() == Code::Unavailable => Self::Transport(message),
            _ => Self::Remote {
                code: format!("{:?}", status.code()),
                message,
            },
        }
    }
}

/// `message` without its Display `prefix`.
fn strip(message: &str, prefix: &str) -> String {
    message.strip_prefix(prefix).unwrap_or(message).to_string()
}

impl From<Status> for GpuError {
    fn from(status: Status) -> Self {
        Self::from_status(status)
    }
}

impl From<tonic::transport::Error> for GpuError {
    fn from(e: tonic::transport::Error) -> Self {
        Self::Transport(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_that_callers_act_on_survive_the_socket() {
        let cases = [
            GpuError::Unsupported {
                layer: "layers.2".into(),
                kind: "basic_block".into(),
                reason: "training covers linear layers only".into(),
            },
            GpuError::bad_input("layers.0", "expected [batch, 64], got [3, 7]"),
            GpuError::UnknownSession,
            GpuError::Unavailable("stopping".into()),
            GpuError::NoDevice("the driver reports no CUDA device".into()),
            GpuError::QueueFull {
                queue: "tenant".into(),
                limit: 64,
            },
        ];
        for err in cases {
            let back = GpuError::from_status(err.to_status());
            assert_eq!(back.tag(), err.tag());
            assert_eq!(back.to_string(), err.to_string());
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        let status = GpuError::Device("cuMemAlloc failed at 0xdeadbeef".into()).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(
            !status.message().contains("deadbeef"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn quota_and_queue_errors_are_resource_exhausted() {
        let quota = GpuError::QuotaExceeded {
            tenant: "a".into(),
            requested: 10,
            used: 5,
            quota: 12,
        };
        assert_eq!(quota.to_status().code(), Code::ResourceExhausted);
        let full = GpuError::QueueFull {
            queue: "tenant".into(),
            limit: 4,
        };
        assert_eq!(full.to_status().code(), Code::ResourceExhausted);
        assert!(full.is_retryable());
    }
}
