//! Cumulus parameter store: hash-sharded flat f32 tensors keyed by parameter name, sparse push and
//! pull over gRPC (`paramstore.v1`), BSP/SSP/ASP clocks, write-ahead log and snapshots, and the
//! routing client used by workers.
//!
//! Filled by the parameter-store issue; nothing is exported yet.
