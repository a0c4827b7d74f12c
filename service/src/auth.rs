//! Bearer tokens: `Authorization: Bearer <token>` checked against the configured tokens in time
//! that does not depend on where an offered token differs from a real one, and an axum
//! middleware that answers 401 with `WWW-Authenticate: Bearer` to anything else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::json_error;

/// The accepted tokens; none means no authentication. Cheap to clone. Its `Debug` never shows
/// a token.
#[derive(Clone, Default)]
pub struct BearerTokens {
    tokens: Arc<Vec<String>>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens([{} redacted])", self.tokens.len())
    }
}

impl BearerTokens {
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: Arc::new(tokens),
        }
    }

    /// Whether requests need a token at all.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether an `Authorization` header value is acceptable: always when no token is
    /// configured, else `Bearer <one of the tokens>`. Every token is compared in full.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let offered = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if offered.is_empty() {
            return false;
        }
        let matched = self.tokens.iter().fold(subtle::Choice::from(0), |ok, t| {
            ok | offered.as_bytes().ct_eq(t.as_bytes())
        });
        bool::from(matched)
    }
}

/// axum middleware: `route_layer(middleware::from_fn_with_state(tokens, require_bearer))`.
pub async fn require_bearer(
    State(tokens): State<BearerTokens>,
    request: Request,
    next: Next,
) -> Response {
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if tokens.accepts(offered) {
        return next.run(request).await;
    }
    let mut response = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_exactly() {
        let t = BearerTokens::new(vec!["abc".into(), "longer-token".into()]);
        assert!(t.required());
        assert!(t.accepts(Some("Bearer abc")));
        assert!(t.accepts(Some("Bearer longer-token")));
        assert!(!t.accepts(Some("Bearer abd")));
        assert!(!t.accepts(Some("Bearer ab")));
        assert!(!t.accepts(Some("Bearer abcd")));
        assert!(!t.accepts(Some("abc")));
        assert!(!t.accepts(Some("Bearer ")));
        assert!(!t.accepts(None));
        assert!(!format!("{t:?}").contains("abc"));
    }

    #[test]
    fn no_tokens_accepts_everything() {
        let t = BearerTokens::default();
        assert!(!t.required());
        assert!(t.accepts(None));
    }
}
