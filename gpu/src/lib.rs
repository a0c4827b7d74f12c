//! Cumulus GPU executor: one process owns the CUDA context of one GPU and runs the work of many
//! tenant functions on their own streams with share limits and one resident copy of each model's
//! weights. The CPU path is always built; CUDA sits behind the `cuda` feature.
//!
//! Filled by the GPU-sharing issue; nothing is exported yet.
