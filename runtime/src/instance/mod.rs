//! A function instance: the `/invoke` contract, the kind registry, the HTTP server of
//! `cumulus fn <kind>`, and the built-in test kind.

pub mod builtin;
mod protocol;
mod server;

pub use protocol::{
    DynFunctionKind, FunctionError, FunctionKind, FunctionRegistry, HEADER_DEADLINE_MS,
    HEADER_FUNCTION, HEADER_MEMORY_MB, HEADER_REQUEST_ID, InvokeContext,
};
pub use server::{InstanceHandle, InstanceOptions, router, run_until_signal, serve};
