//! The `/invoke` contract shared by every backend, and the [`FunctionKind`] trait with its registry.
//!
//! `POST /invoke` carries the payload as the body and these headers:
//! [`HEADER_DEADLINE_MS`] (milliseconds left, relative so clocks need not agree),
//! [`HEADER_MEMORY_MB`], [`HEADER_REQUEST_ID`], [`HEADER_FUNCTION`]. The answer is 200 with the
//! result, 400 when the handler refused the payload, 429 when the instance is busy, 500 when the
//! handler failed; error bodies are `{"error": "..."}`. `GET /healthz` answers 200 once the
//! instance serves.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Milliseconds left until the invocation's deadline.
pub const HEADER_DEADLINE_MS: &str = "x-cumulus-deadline-ms";
/// The memory limit of the instance, MB.
pub const HEADER_MEMORY_MB: &str = "x-cumulus-memory-mb";
/// The platform's id of this invocation.
pub const HEADER_REQUEST_ID: &str = "x-cumulus-request-id";
/// The function's name.
pub const HEADER_FUNCTION: &str = "x-cumulus-function";

/// What an invocation knows about itself.
#[derive(Debug, Clone)]
pub struct InvokeContext {
    /// The platform's request id.
    pub request_id: String,
    /// The function's name.
    pub function: String,
    /// The memory limit, MB (0 when the platform did not say).
    pub memory_mb: u32,
    /// When the platform kills the invocation; a long handler should finish (or checkpoint) before.
    pub deadline: Instant,
}

impl InvokeContext {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Why a handler did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The payload is not acceptable (answered 400).
    #[error("bad payload: {0}")]
    BadPayload(String),
    /// The handler failed (answered 500).
    #[error("{0}")]
    Failed(String),
}

/// A kind of function (`train-worker`, `infer-stage`, `builtin-echo`): what one instance runs.
///
/// Implement it with `async fn invoke(...)`; the future must be `Send`.
pub trait FunctionKind: Send + Sync + 'static {
    /// Runs one invocation.
    fn invoke(
        &self,
        ctx: InvokeContext,
        payload: Bytes,
    ) -> impl Future<Output = Result<Bytes, FunctionError>> + Send;
}

type BoxedInvoke<'a> = Pin<Box<dyn Future<Output = Result<Bytes, FunctionError>> + Send + 'a>>;

/// Object-safe form of [`FunctionKind`], used by the registry and the instance server.
pub trait DynFunctionKind: Send + Sync + 'static {
    /// Runs one invocation.
    fn invoke_boxed(&self, ctx: InvokeContext, payload: Bytes) -> BoxedInvoke<'_>;
}

impl<T: FunctionKind> DynFunctionKind for T {
    fn invoke_boxed(&self, ctx: InvokeContext, payload: Bytes) -> BoxedInvoke<'_> {
        Box::pin(self.invoke(ctx, payload))
    }
}

/// The kinds a `cumulus` binary can run, by name. Each crate registers its own.
#[derive(Default, Clone)]
pub struct FunctionRegistry {
    kinds: BTreeMap<String, Arc<dyn DynFunctionKind>>,
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl FunctionRegistry {
    /// A registry with the built-in kinds (`builtin-echo`).
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        r.register(super::builtin::BUILTIN_ECHO, super::builtin::BuiltinEcho);
        r
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, name: &str, kind: impl FunctionKind) {
        self.kinds.insert(name.to_owned(), Arc::new(kind));
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynFunctionKind>> {
        self.kinds.get(name).cloned()
    }

    /// Names of every registered kind.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}
