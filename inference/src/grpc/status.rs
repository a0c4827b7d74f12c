//! The one place an [`InferError`] becomes a gRPC status: an exhaustive `match`. `INTERNAL`
//! carries a generic message; the detail goes to the log of the call's span.

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::http::error::retry_after_secs;
use crate::protocol::{InferError, ProtocolError};

/// The status `e` is answered with. An overloaded answer also carries `retry-after` metadata
/// (whole seconds, rounded up), as the REST binding's header.
pub fn status_of(e: InferError) -> Status {
    match e {
        InferError::ModelNotFound(m) => Status::not_found(m),
        InferError::ModelNotReady(m) => Status::unavailable(m),
        InferError::BadRequest(m) => Status::invalid_argument(m),
        InferError::TooLarge(m) => Status::resource_exhausted(m),
        InferError::Overloaded {
            retry_after,
            reason,
        } => {
            let mut status = Status::resource_exhausted(reason);
            status.metadata_mut().insert(
                "retry-after",
                MetadataValue::from(retry_after_secs(retry_after)),
            );
            status
        }
        InferError::Unavailable(m) => Status::unavailable(m),
        InferError::Internal(detail) => {
            tracing::error!(error = %detail, "the request failed");
            Status::internal("internal error: the request failed")
        }
    }
}

/// A status from a protocol error (always a client error).
pub fn from_protocol(e: ProtocolError) -> Status {
    status_of(e.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    #[test]
    fn each_class_has_its_code() {
        let cases = [
            (InferError::ModelNotFound("m".into()), Code::NotFound),
            (InferError::ModelNotReady("m".into()), Code::Unavailable),
            (InferError::BadRequest("m".into()), Code::InvalidArgument),
            (InferError::TooLarge("m".into()), Code::ResourceExhausted),
            (InferError::Unavailable("m".into()), Code::Unavailable),
            (InferError::Internal("secret detail".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let s = status_of(e);
            assert_eq!(s.code(), code);
            assert!(!s.message().contains("secret"));
        }
        let s = status_of(InferError::Overloaded {
            retry_after: Duration::from_millis(100),
            reason: "busy".into(),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get("retry-after").unwrap(), "1");
    }
}
