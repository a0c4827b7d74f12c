//! The local process backend: instance processes, their limits and their monitors.

mod limits;
mod process;

pub(crate) use process::{LocalBackend, LocalInstance};
