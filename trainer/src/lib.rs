//! Cumulus trainer: job files, the coordinator, the `train-worker` function, the MLLess
//! significance filter and the scale-in auto-tuner.
//!
//! Built so far: [`job`], the validated job file; [`filter`], the significance filter every worker
//! applies before it pushes; [`replica`], a worker's local model with its accumulators;
//! [`autotune`], the scale-in auto-tuner that decides when a worker can go; [`checkpoint`], the
//! periodic model-folder checkpoints of a running job. The coordinator and
//! the worker function arrive with the serverless-training issue. [`jobs`] is the job manager of
//! `cumulus up` and its HTTP API; [`plan`] predicts a job's time and cost (`cumulus train --plan`).

pub mod autotune;
pub mod checkpoint;
pub mod coordinator;
pub mod dataset;
mod error;
pub mod evaluate;
pub mod filter;
pub mod invoker;
pub mod job;
pub mod jobs;
pub mod partition;
pub mod plan;
pub mod plot;
pub mod replica;
pub mod report;
pub mod worker;

pub use error::TrainerError;
