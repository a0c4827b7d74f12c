//! Cumulus trainer: job files, the coordinator, the `train-worker` function, the MLLess
//! significance filter and the scale-in auto-tuner.
//!
//! Filled by the serverless-training issue; nothing is exported yet.
