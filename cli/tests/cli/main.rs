//! The `cumulus` binary as users run it, one test binary for the whole CLI: every test starts
//! the real binary (no `CUMULUS_*` settings of the caller leak in) and bounds its run.

mod common;
mod data;
mod gpu;
mod models;
mod plan;
mod serve;
mod train;
mod up;
