//! The one error type of the protocol layer. Each variant is a class of failure, so both
//! transports map it without looking at the message: [`ProtocolError::BadRequest`] is HTTP 400 /
//! `INVALID_ARGUMENT`, [`ProtocolError::NotFound`] 404 / `NOT_FOUND`, [`ProtocolError::TooLarge`]
//! 413 / `RESOURCE_EXHAUSTED`. Messages are meant for the client: they name the tensor, the
//! element and the reason.
//!
//! ```
//! use cumulus_inference::protocol::ProtocolError;
//! let e = ProtocolError::BadRequest("input 'x': shape [2] needs 2 elements, got 3".into());
//! assert_eq!(e.to_string(), "input 'x': shape [2] needs 2 elements, got 3");
//! ```

/// A request (or a model's answer to it) that the protocol layer refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The input is malformed or does not fit the model (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// Something the request names does not exist, e.g. a model version (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request is larger than a configured [`Limits`](super::Limits) bound (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
}

impl ProtocolError {
    /// A [`ProtocolError::BadRequest`] from anything printable.
    pub fn bad(message: impl Into<String>) -> Self {
        ProtocolError::BadRequest(message.into())
    }

    /// A [`ProtocolError::TooLarge`] from anything printable.
    pub fn too_large(message: impl Into<String>) -> Self {
        ProtocolError::TooLarge(message.into())
    }

    /// The same class of error with `context: ` put before the message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        match self {
            ProtocolError::BadRequest(m) => ProtocolError::BadRequest(format!("{context}: {m}")),
            ProtocolError::NotFound(m) => ProtocolError::NotFound(format!("{context}: {m}")),
            ProtocolError::TooLarge(m) => ProtocolError::TooLarge(format!("{context}: {m}")),
        }
    }
}
