//! Keep-alive: the pure policies and the trace simulator that compares them.

mod policy;
mod simulate;

pub use policy::{
    FixedTtl, HybridHistogram, HybridParams, KeepAliveConfig, KeepAlivePolicy, Windows,
};
pub use simulate::{FunctionClass, SimReport, Trace, TraceFunction, TraceParams, simulate};
