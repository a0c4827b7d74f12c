//! Benchmark of the parameter store against Redis (placeholder while it is written).
