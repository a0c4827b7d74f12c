//! Cumulus function platform: the `/invoke` contract, local process and HTTP backends, warm pools
//! with keep-alive policies, memory and time limits, billing, and the `cumulus.toml` types.
//!
//! Filled by the function-platform issue; nothing is exported yet.
