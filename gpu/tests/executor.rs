//! The crate's one integration-test binary: the CPU backend's operations against candle, every
//! zoo program against `Model::forward_range`, the executor with several real tenants on a
//! temporary socket, and (with `--features cuda`) the NVRTC compile check and the CUDA-vs-CPU
//! checks, which skip with a message where there is no nvrtc or no GPU.

#[path = "executor/common.rs"]
mod common;
#[cfg(feature = "cuda")]
#[path = "executor/cuda.rs"]
mod cuda;
#[path = "executor/ops.rs"]
mod ops;
#[path = "executor/programs.rs"]
mod programs;
#[path = "executor/suite.rs"]
mod suite;
#[path = "executor/tenants.rs"]
mod tenants;
#[path = "executor/training.rs"]
mod training;
