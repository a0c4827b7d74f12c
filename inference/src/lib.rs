//! Cumulus inference: the KServe V2 REST and gRPC gateway, the SLO-aware adaptive batcher, and the
//! `infer-stage` function that runs a model's layer groups.
//!
//! Filled by the inference issues; nothing is exported yet.
