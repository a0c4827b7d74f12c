//! What a job reports: its live [`JobStatus`] (progress bar, job API, server-sent events), the
//! [`HistoryPoint`]s of every evaluation, and the final [`JobSummary`] written as `metrics.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::dataset::Prepared;
use crate::evaluate::JobMetric;
use crate::filter::DENSE_BYTES_PER_ENTRY;
use crate::job::JobSpec;

/// Name of the metrics file in the output folder.
pub const METRICS_FILE: &str = "metrics.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for a running slot or for room for its workers.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A job's progress so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub state: JobState,
    /// What the job is doing or waiting for right now, in words (`queued: …`, `preparing the
    /// data`, `starting workers: 3 of 8 up`, `round 4: 5 of 8 workers reported`, …).
    #[serde(default)]
    pub phase: String,
    /// The metric measured on the test split (`test_accuracy`, `test_rmse`, `test_auc`).
    pub metric: String,
    pub metric_value: Option<f64>,
    /// Mean training loss of the last round.
    pub loss: f64,
    /// Local steps of all workers.
    pub steps: u64,
    /// Highest worker clock.
    pub clock: u64,
    pub examples: u64,
    pub epoch: f64,
    pub workers: u32,
    pub invocations: u64,
    /// Worker invocations begun (those still running or waiting included).
    #[serde(default)]
    pub invocations_started: u64,
    pub cold_starts: u64,
    pub failures: u64,
    /// Steps whose forward and backward ran on the GPU executor.
    #[serde(default)]
    pub gpu_steps: u64,
    /// Entries the filter examined, and those it sent (the final drains included).
    pub entries_considered: u64,
    pub entries_sent: u64,
    pub bytes_pushed: u64,
    /// Payload bytes the workers pulled (see `WorkerReport::pulled_bytes`).
    #[serde(default)]
    pub bytes_pulled: u64,
    pub cost_usd: f64,
    pub elapsed_secs: f64,
    pub stop_reason: Option<String>,
}

impl JobStatus {
    pub fn new(job_id: &str, metric: JobMetric, workers: u32) -> Self {
        Self {
            job_id: job_id.to_string(),
            state: JobState::Queued,
            phase: "queued".to_string(),
            metric: metric.key().to_string(),
            metric_value: None,
            loss: f64::NAN,
            steps: 0,
            clock: 0,
            examples: 0,
            epoch: 0.0,
            workers,
            invocations: 0,
            invocations_started: 0,
            cold_starts: 0,
            gpu_steps: 0,
            failures: 0,
            entries_considered: 0,
            entries_sent: 0,
            bytes_pushed: 0,
            bytes_pulled: 0,
            cost_usd: 0.0,
            elapsed_secs: 0.0,
            stop_reason: None,
        }
    }

    /// Bytes the filter kept off the network: what pushing every tensor whole would have cost,
    /// less what was pushed (0 when the sparse pushes cost more, as with `v = 0`).
    pub fn bytes_filtered(&self) -> u64 {
        self.entries_considered
            .saturating_mul(DENSE_BYTES_PER_ENTRY)
            .saturating_sub(self.bytes_pushed)
    }
}

/// One evaluation, for the plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub elapsed_secs: f64,
    pub epoch: f64,
    pub steps: u64,
    pub loss: f64,
    pub metric: Option<f64>,
    pub bytes_pushed: u64,
    #[serde(default)]
    pub bytes_pulled: u64,
    pub workers: u32,
    pub cost_usd: f64,
}

impl HistoryPoint {
    pub fn of(st: &JobStatus) -> Self {
        Self {
            elapsed_secs: st.elapsed_secs,
            epoch: st.epoch,
            steps: st.steps,
            loss: st.loss,
            metric: st.metric_value,
            bytes_pushed: st.bytes_pushed,
            bytes_pulled: st.bytes_pulled,
            workers: st.workers,
            cost_usd: st.cost_usd,
        }
    }
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job: String,
    pub job_id: String,
    pub arch: String,
    pub dataset: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub test_accuracy: Option<f64>,
    pub test_rmse: Option<f64>,
    pub test_auc: Option<f64>,
    pub final_loss: f64,
    pub steps: u64,
    pub epochs: f64,
    pub workers_start: u32,
    pub workers_end: u32,
    pub sync: String,
    pub significance: f32,
    pub entries_considered: u64,
    pub entries_sent: u64,
    pub bytes_pushed: u64,
    #[serde(default)]
    pub bytes_pulled: u64,
    pub bytes_filtered: u64,
    pub invocations: u64,
    /// Worker invocations begun (those still running or waiting included).
    #[serde(default)]
    pub invocations_started: u64,
    pub cold_starts: u64,
    pub failed_invocations: u64,
    /// Steps whose forward and backward ran on the GPU executor.
    #[serde(default)]
    pub gpu_steps: u64,
    pub billed_cost_usd: f64,
    pub wall_secs: f64,
    pub stop_reason: Option<String>,
    pub history: Vec<HistoryPoint>,
}

impl JobSummary {
    pub fn new(job: &JobSpec, st: &JobStatus, data: &Prepared, history: Vec<HistoryPoint>) -> Self {
        let pick = |key: &str| (st.metric == key).then_some(st.metric_value).flatten();
        Self {
            job: job.name.clone(),
            job_id: st.job_id.clone(),
            arch: match &job.model {
                crate::job::ModelSource::Arch(c) => c.arch().to_string(),
                crate::job::ModelSource::Folder(d) => format!("from {}", d.display()),
            },
            dataset: data.name.clone(),
            train_examples: data.train_len(),
            test_examples: data.test_len(),
            test_accuracy: pick("test_accuracy"),
            test_rmse: pick("test_rmse"),
            test_auc: pick("test_auc"),
            final_loss: st.loss,
            steps: st.steps,
            epochs: st.epoch,
            workers_start: job.workers.count,
            workers_end: st.workers,
            sync: job.workers.sync.to_string(),
            significance: job.workers.significance,
            entries_considered: st.entries_considered,
            entries_sent: st.entries_sent,
            bytes_pushed: st.bytes_pushed,
            bytes_pulled: st.bytes_pulled,
            bytes_filtered: st.bytes_filtered(),
            invocations: st.invocations,
            invocations_started: st.invocations_started,
            cold_starts: st.cold_starts,
            failed_invocations: st.failures,
            gpu_steps: st.gpu_steps,
            billed_cost_usd: st.cost_usd,
            wall_secs: st.elapsed_secs,
            stop_reason: st.stop_reason.clone(),
            history,
        }
    }

    /// Writes `dir/metrics.json`.
    pub fn write(&self, dir: &Path) -> Result<(), TrainerError> {
        let path = dir.join(METRICS_FILE);
        let text = serde_json::to_string_pretty(self).expect("metrics always serialize to JSON");
        std::fs::write(&path, text)
            .map_err(|e| TrainerError::Data(format!("{}: cannot write: {e}", path.display())))
    }
}
