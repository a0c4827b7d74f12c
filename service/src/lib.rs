//! What every long-lived Cumulus role shares, written once: the shutdown signal ([`shutdown`]),
//! the `{"error": "..."}` body of every HTTP error ([`error`]), bearer-token checks in constant
//! time ([`auth`]) and the process-wide Prometheus recorder with its `/metrics` route
//! ([`telemetry`]).
//!
//! It sits below every service crate (param-store, runtime, trainer, inference, control), so
//! each of them can use it without depending on another; it knows nothing of their domains.
//!
//! ```
//! use axum::http::StatusCode;
//! let response = cumulus_service::error::json_error(StatusCode::NOT_FOUND, "no model \"m\"");
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! let tokens = cumulus_service::auth::BearerTokens::new(vec!["s3cret".into()]);
//! assert!(tokens.accepts(Some("Bearer s3cret")));
//! assert!(!tokens.accepts(Some("Bearer s3cres")));
//! ```

pub mod auth;
pub mod error;
pub mod shutdown;
pub mod telemetry;
