//! Cumulus trainer: job files, the coordinator, the `train-worker` function, the MLLess
//! significance filter and the scale-in auto-tuner.
//!
//! - [`job`]: the validated job file; [`fleet`]: where a job's workers run and how its
//!   `[workers]` become the platform settings of its worker function (one function, used by
//!   every entry point);
//! - [`coordinator`]: runs one job in named phases (prepare, start, rounds, finish);
//!   [`worker`]: the `train-worker` function; [`invoker`]: how an invocation reaches it;
//! - [`filter`], [`replica`]: the significance filter and a worker's local model;
//!   [`autotune`]: the scale-in auto-tuner; [`checkpoint`]: periodic model-folder checkpoints;
//! - [`dataset`] reads and splits a job's data, [`data_shards`] writes and reads each worker's
//!   share of it; [`evaluate`] measures a model; [`report`] is a job's live status and its
//!   `metrics.json` summary; [`plot`] draws it;
//! - [`jobs`]: the job manager of the control plane and its HTTP API; [`sizing`] predicts a
//!   job's time and cost over worker counts and tiers (`cumulus train --plan`);
//! - [`metrics`]: the trainer's Prometheus series.

pub mod autotune;
mod blocking;
pub mod checkpoint;
pub mod coordinator;
pub mod data_shards;
pub mod dataset;
mod error;
pub mod evaluate;
pub mod filter;
pub mod fleet;
pub mod invoker;
pub mod job;
pub mod jobs;
pub mod metrics;
pub mod plot;
pub mod replica;
pub mod report;
pub mod sizing;
pub mod worker;

pub use error::TrainerError;
