//! Cumulus trainer: job files, the coordinator, the `train-worker` function, the MLLess
//! significance filter and the scale-in auto-tuner.
//!
//! Built so far: [`filter`], the significance filter every worker applies before it pushes.
//! The coordinator, worker function and auto-tuner arrive with the serverless-training issue.

pub mod filter;
