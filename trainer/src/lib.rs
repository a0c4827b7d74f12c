//! Cumulus trainer: job files, the coordinator, the `train-worker` function, the MLLess
//! significance filter and the scale-in auto-tuner.
//!
//! Built so far: [`job`], the validated job file; [`filter`], the significance filter every worker
//! applies before it pushes; [`autotune`], the scale-in auto-tuner that decides when a worker can
//! go. The coordinator and the worker function arrive with the serverless-training issue.

pub mod autotune;
pub mod filter;
pub mod job;
