//! The `train-worker` function: one invocation trains for a bounded number of local steps against
//! the parameter store, then pushes everything it still holds and reports.
//!
//! Per step: pull what changed (for `bsp`/`ssp:k` the store holds the pull until the clock allows)
//! → set `w = store + held` → one minibatch step with candle → push the significant entries →
//! advance the worker's clock. When the invocation's deadline nears, its step budget is spent or
//! the clock answer says the job is stopping, the worker pushes its whole accumulator and returns
//! a [`WorkerReport`]; the coordinator keeps the data cursor, the clock and the push sequence
//! number, so a new invocation (maybe on a new instance) continues where this one stopped. The
//! function is stateless between invocations.
//!
//! The optimizer's state (momentum, Adam moments) lives only as long as one invocation; plain SGD,
//! as MLLess uses, loses nothing by that.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use candle_core::{Device, Tensor};
use cumulus_models::{Model, ModelConfig};
use cumulus_param_store::client::{
    ChangedOptions, ChangedTensor, ClientConfig, ParamStoreClient, PullClock, SparseUpdate, sparse,
};
use cumulus_runtime::instance::{FunctionError, FunctionKind, InvokeContext};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::blocking;
use crate::data_shards;
use crate::filter::FilterConfig;
use crate::job::TrainingSpec;
use crate::replica::{Replica, TensorDelta};

/// The name the function is registered under.
pub const KIND: &str = "train-worker";

/// Floor of `|w|` in the significance filter.
pub const FILTER_EPS: f32 = 1e-6;

/// What one invocation is asked to do (the payload, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTask {
    pub job_id: String,
    pub worker: u32,
    /// Addresses of every parameter-store shard, in shard order.
    pub store: Vec<String>,
    pub model: ModelConfig,
    pub training: TrainingSpec,
    /// The significance threshold `v`.
    pub significance: f32,
    /// Object-store URL of this worker's data shard (see [`data_shards`]).
    pub partition: String,
    /// Examples of the partition consumed so far (the data cursor).
    pub cursor: u64,
    /// The worker's clock to start at.
    pub clock: u64,
    /// Next push sequence number.
    pub seq: u64,
    /// Local steps to run at most.
    pub steps: u32,
    /// Learning rate for this invocation (the job's schedule applied by the coordinator).
    pub lr: f64,
    /// Whether pulls wait for the clock (`bsp`/`ssp`); `asp` never waits.
    pub wait_for_clock: bool,
    /// Whether values travel as f16 (`[workers] wire_precision = "f16"`): each step's pull, and
    /// each step's push (rounded, the rounding error held for later; the final drain is f32).
    #[serde(default)]
    pub half_values: bool,
    /// The node's GPU executor (its socket): forward and backward run there when it covers
    /// the model's layers; the optimizer and the filter stay here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<PathBuf>,
}

/// A worker's training model resident on the GPU executor.
struct GpuTrainer {
    client: cumulus_gpu::ExecutorClient,
    handle: cumulus_gpu::ModelHandle,
}

impl GpuTrainer {
    /// The model on the executor at `socket`, or `None` (said in the log) when the executor
    /// does not cover it or cannot be reached: the worker then trains on its CPU share.
    async fn open(socket: &Path, task: &WorkerTask, model: &Model) -> Option<Self> {
        if let Err(e) = cumulus_gpu::check_supported(&task.model, 0, None, true) {
            tracing::warn!(worker = task.worker, reason = %e, "training on the CPU: the GPU executor does not cover this model");
            return None;
        }
        let opened = async {
            let at = cumulus_gpu::Listen::Unix(socket.to_path_buf());
            let name = format!("{}-w{}", task.job_id, task.worker);
            let client =
                cumulus_gpu::ExecutorClient::connect(&at, cumulus_gpu::TenantOptions::named(name))
                    .await?;
            let source = cumulus_gpu::ModelSource::from_model(model)?;
            let handle = client.load_for_training(source).await?;
            Ok::<_, cumulus_gpu::GpuError>(Self { client, handle })
        };
        match opened.await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(worker = task.worker, error = %e, "training on the CPU: the GPU executor refused the model");
                None
            }
        }
    }

    /// Forward and backward of one minibatch with the replica's current weights: the loss
    /// and the gradients, by parameter name.
    async fn step(
        &self,
        params: Vec<(String, Tensor)>,
        x: &Tensor,
        y: &Tensor,
        loss: cumulus_models::Loss,
    ) -> Result<(f64, Vec<(String, Tensor)>), TrainerError> {
        let gpu = |e: cumulus_gpu::GpuError| TrainerError::Data(format!("GPU executor: {e}"));
        let host = params
            .iter()
            .map(|(n, t)| Ok((n.clone(), cumulus_gpu::HostTensor::from_candle(t)?)))
            .collect::<Result<Vec<_>, cumulus_gpu::GpuError>>()
            .map_err(gpu)?;
        self.client
            .set_params(&self.handle, &host)
            .await
            .map_err(gpu)?;
        let out = self
            .client
            .train_step(
                &self.handle,
                &cumulus_gpu::HostTensor::from_candle(x).map_err(gpu)?,
                &cumulus_gpu::HostTensor::from_candle(y).map_err(gpu)?,
                loss,
            )
            .await
            .map_err(gpu)?;
        let grads = out
            .gradients
            .iter()
            .map(|(n, g)| Ok((n.clone(), g.to_candle(&Device::Cpu)?)))
            .collect::<Result<Vec<_>, cumulus_gpu::GpuError>>()
            .map_err(gpu)?;
        Ok((f64::from(out.loss), grads))
    }
}

/// One local step, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub loss: f64,
    /// Entries examined by the filter.
    pub considered: u64,
    /// Entries pushed.
    pub sent: u64,
    /// Payload bytes pushed, as on the wire (gap-coded indices; f32 values, or f16 ones when
    /// every value of an update is exactly an f16).
    pub bytes: u64,
    pub step_secs: f64,
}

/// What an invocation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: u32,
    pub steps: Vec<StepStats>,
    /// Data cursor, clock and sequence number to continue from.
    pub cursor: u64,
    pub clock: u64,
    pub seq: u64,
    /// Entries pushed by the final drain of the accumulators.
    pub drained: u64,
    pub drained_bytes: u64,
    /// Payload bytes pulled as they were on the wire (the full pull at the start, then the
    /// entries others changed at every step): 4 per value, plus the gap-coded offsets of the
    /// entries sent sparse.
    #[serde(default)]
    pub pulled_bytes: u64,
    /// Examples in this worker's partition.
    pub partition_len: u64,
    /// Steps whose forward and backward ran on the GPU executor.
    #[serde(default)]
    pub gpu_steps: u64,
}

fn to_updates(deltas: Vec<TensorDelta>) -> Vec<SparseUpdate> {
    deltas
        .into_iter()
        .map(|d| {
            let indices = d.delta.indices.iter().map(|&i| u64::from(i)).collect();
            sparse(&d.tensor, indices, d.delta.values)
        })
        .collect()
}

/// Runs one invocation's steps. `deadline` is when the platform kills it.
///
/// A job that stops while the worker waits at a barrier ends the wait (the store answers that
/// the job is stopping): the worker then pushes what it holds and returns at once. Each step's
/// computation runs on a blocking thread, so the instance keeps answering while it trains.
pub async fn run_task(task: WorkerTask, deadline: Instant) -> Result<WorkerReport, TrainerError> {
    let started = Instant::now();
    let client = ParamStoreClient::connect(&task.store, ClientConfig::default()).await?;
    let (x, y) = data_shards::read(&task.partition).await?;
    let n = x.dims().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(TrainerError::Data(format!("{} is empty", task.partition)));
    }
    let mut report = WorkerReport {
        worker: task.worker,
        steps: Vec::with_capacity(task.steps as usize),
        cursor: task.cursor,
        clock: task.clock,
        seq: task.seq,
        drained: 0,
        drained_bytes: 0,
        pulled_bytes: 0,
        partition_len: n as u64,
        gpu_steps: 0,
    };
    let (config, training, significance) =
        (task.model.clone(), task.training.clone(), task.significance);
    let (lr, half) = (task.lr, task.half_values);
    let mut replica = blocking::run("building the model", move || {
        let model = Model::new(&config, &Device::Cpu)?;
        let filter = FilterConfig::new(significance, FILTER_EPS)?;
        let mut replica = Replica::new(model, &training.optimizer, training.loss, filter)?;
        replica.set_learning_rate(lr);
        replica.set_half_pushes(half);
        Ok(replica)
    })
    .await?;

    let gpu = match &task.gpu {
        Some(socket) => GpuTrainer::open(socket, &task, replica.model()).await,
        None => None,
    };
    let at = |clock| {
        task.wait_for_clock.then_some(PullClock {
            worker: task.worker,
            clock,
        })
    };
    let values = match client.pull_all(&task.job_id, at(task.clock)).await {
        Ok(values) => values,
        // Stopped before this invocation trained anything: nothing to push.
        Err(e) if e.is_job_stopping() => return Ok(report),
        Err(e) => return Err(e.into()),
    };
    for (name, values) in values {
        report.pulled_bytes += values.len() as u64 * 4;
        replica.set_dense(&name, 0, &values)?;
    }
    // pull_all carries no versions; entries changed since registration, pulled right after, are
    // at least as new as what pull_all saw, so applying them leaves the replica at `versions`.
    // From then on each pull carries only what was pushed since.
    let (changed, mut versions) = client
        .pull_changed(&task.job_id, &client.no_versions(), None)
        .await?;
    report.pulled_bytes += changed_bytes(&changed);
    for c in changed {
        replica.set_entries(&c.tensor, &c.indices, &c.values)?;
    }

    let batch = task.training.batch_size.min(n);
    let mut slowest_step = Duration::ZERO;
    for _ in 0..task.steps {
        // Leave room for the final drain and the report: twice the slowest step, and a bit.
        let margin = slowest_step * 2 + Duration::from_millis(200);
        if Instant::now() + margin >= deadline {
            break;
        }
        let step_start = Instant::now();
        if report.steps.is_empty() {
            // pull_all above already waited for this clock.
        } else {
            // The replica already holds what only this worker changed (w = store + held).
            let options = ChangedOptions {
                at: at(report.clock),
                except_worker: Some(task.worker),
                half: task.half_values,
            };
            let (changed, v) = match client
                .pull_changed_with(&task.job_id, &versions, options)
                .await
            {
                Ok(answer) => answer,
                // The job stopped while this worker waited at the barrier.
                Err(e) if e.is_job_stopping() => break,
                Err(e) => return Err(e.into()),
            };
            versions = v;
            report.pulled_bytes += changed_bytes(&changed);
            for c in changed {
                replica.set_entries(&c.tensor, &c.indices, &c.values)?;
            }
        }
        let rows = batch_rows(report.cursor, batch, n);
        // Forward and backward on the GPU executor when it has the model; the optimizer
        // and the filter below, on a blocking thread, either way.
        let on_gpu = match &gpu {
            Some(g) => {
                let idx = Tensor::from_vec(rows.clone(), batch, &Device::Cpu)?;
                let (xb, yb) = (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?);
                Some(
                    g.step(replica.parameters(), &xb, &yb, task.training.loss)
                        .await?,
                )
            }
            None => None,
        };
        report.gpu_steps += u64::from(on_gpu.is_some());
        let (xs, ys) = (x.clone(), y.clone());
        let (back, stepped) = blocking::run("a training step", move || {
            let stepped = (|| {
                let loss = match on_gpu {
                    Some((loss, grads)) => replica.step_with_gradients(loss, &grads)?,
                    None => {
                        let idx = Tensor::from_vec(rows, batch, &Device::Cpu)?;
                        replica
                            .train_step(&xs.index_select(&idx, 0)?, &ys.index_select(&idx, 0)?)?
                    }
                };
                let (deltas, stats) = replica.take_significant()?;
                Ok::<_, TrainerError>((loss, deltas, stats))
            })();
            Ok((replica, stepped))
        })
        .await?;
        replica = back;
        let (loss, deltas, stats) = stepped?;
        let pushed = push(&client, &task, &mut report, deltas).await?;
        report.clock += 1;
        let clock = client
            .clock(&task.job_id, task.worker, report.clock, false)
            .await?;
        report.cursor += batch as u64;
        let took = step_start.elapsed();
        slowest_step = slowest_step.max(took);
        report.steps.push(StepStats {
            loss,
            considered: stats.considered,
            sent: stats.sent,
            bytes: pushed,
            step_secs: took.as_secs_f64(),
        });
        if clock.stopping {
            // The coordinator decided to stop (target met, a limit, a cancel): every further
            // step would be billed for nothing.
            break;
        }
    }
    let rest = replica.take_all();
    if !rest.is_empty() {
        report.drained = rest.iter().map(|d| d.delta.len() as u64).sum();
        report.drained_bytes = push(&client, &task, &mut report, rest).await?;
    }
    tracing::debug!(
        worker = task.worker,
        steps = report.steps.len(),
        secs = started.elapsed().as_secs_f64(),
        "invocation done"
    );
    Ok(report)
}

/// Payload bytes of a pull of changed entries, as they were on the wire (4 per f32 value, plus
/// the gap-coded offsets of the entries sent sparse).
fn changed_bytes(changed: &[ChangedTensor]) -> u64 {
    changed.iter().map(|c| c.wire_bytes).sum()
}

/// Pushes `deltas` (if any) at the report's clock under its next sequence number; returns the
/// payload bytes pushed.
async fn push(
    client: &ParamStoreClient,
    task: &WorkerTask,
    report: &mut WorkerReport,
    deltas: Vec<TensorDelta>,
) -> Result<u64, TrainerError> {
    if deltas.is_empty() {
        return Ok(0);
    }
    let updates = to_updates(deltas);
    let bytes = updates.iter().map(SparseUpdate::wire_bytes).sum();
    client
        .push(&task.job_id, task.worker, report.clock, report.seq, updates)
        .await?;
    report.seq += 1;
    Ok(bytes)
}

/// Row indices of the minibatch at `cursor` in a partition of `n` examples, wrapping around.
fn batch_rows(cursor: u64, batch: usize, n: usize) -> Vec<u32> {
    (0..batch as u64)
        .map(|k| ((cursor + k) % n as u64) as u32)
        .collect()
}

/// The `train-worker` function kind, registered in the `cumulus` binary.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrainWorker;

impl FunctionKind for TrainWorker {
    async fn invoke(&self, ctx: InvokeContext, payload: Bytes) -> Result<Bytes, FunctionError> {
        let task: WorkerTask = serde_json::from_slice(&payload)
            .map_err(|e| FunctionError::BadPayload(format!("train-worker task: {e}")))?;
        let report = run_task(task, ctx.deadline.into_std())
            .await
            .map_err(|e| FunctionError::Failed(e.to_string()))?;
        let body = serde_json::to_vec(&report)
            .map_err(|e| FunctionError::Failed(format!("encoding the report: {e}")))?;
        Ok(Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wrap_around_the_partition() {
        assert_eq!(batch_rows(0, 3, 5), vec![0, 1, 2]);
        assert_eq!(batch_rows(4, 3, 5), vec![4, 0, 1]);
        assert_eq!(batch_rows(10, 2, 5), vec![0, 1]);
    }

    #[test]
    fn pulled_bytes_count_the_wire_payload() {
        // Sparse entries carry an offset and a value, dense runs only values.
        let changed = |n: usize, sparse: bool| ChangedTensor {
            tensor: "t".into(),
            indices: (0..n as u64).collect(),
            values: vec![0.5; n],
            wire_bytes: n as u64 * if sparse { 8 } else { 4 },
        };
        assert_eq!(changed_bytes(&[]), 0);
        assert_eq!(
            changed_bytes(&[changed(3, true), changed(2, false)]),
            3 * 8 + 2 * 4
        );
    }

    #[test]
    fn a_report_without_pulled_bytes_still_decodes() {
        let json = r#"{"worker":1,"steps":[],"cursor":4,"clock":2,"seq":9,
            "drained":0,"drained_bytes":0,"partition_len":10}"#;
        let r: WorkerReport = serde_json::from_str(json).unwrap();
        assert_eq!((r.worker, r.pulled_bytes), (1, 0));
    }
}
