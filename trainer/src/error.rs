//! [`TrainerError`]: everything that can stop a training job, one noun per cause.

use cumulus_models::ModelError;
use cumulus_param_store::StoreError;

use crate::autotune::AutoTuneError;
use crate::filter::FilterError;
use crate::job::JobError;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("tensor computation: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("significance filter: {0}")]
    Filter(#[from] FilterError),
    #[error("auto-tuner: {0}")]
    AutoTune(#[from] AutoTuneError),
    #[error("parameter store: {0}")]
    Store(#[from] StoreError),
    #[error("the model has no trainable tensor {0:?}")]
    UnknownTensor(String),
    #[error("{tensor}: {len} values at {start} do not fit its {size} entries")]
    Range {
        tensor: String,
        start: usize,
        len: usize,
        size: usize,
    },
    #[error("data: {0}")]
    Data(String),
    #[error("function platform: {0}")]
    Runtime(#[from] cumulus_runtime::RuntimeError),
    #[error("worker {worker}: {reason}")]
    Worker { worker: u32, reason: String },
    #[error("checkpoint {path}: {source}")]
    Checkpoint {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Compute(String),
    #[error("training diverged at local step {step}: loss is {loss}")]
    Diverged { step: u64, loss: f64 },
}
