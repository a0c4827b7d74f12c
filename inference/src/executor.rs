//! Where a model's batches run: in `infer-stage` function instances of the platform (the
//! product's default: a warm pool that scales out under load and to zero when idle), or on a
//! compute thread of the gateway (`execution = "in-process"`, for latency-critical deployments).
//!
//! Both take a batch as a [`RawTensor`] and give the output back with what it cost; neither
//! ever blocks the async runtime.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cumulus_runtime::keepalive::KeepAliveConfig;
use cumulus_runtime::{
    FunctionFailure, InvokeRequest, ModelServing, Platform, RuntimeError, StartKind,
};
use tokio::sync::{mpsc, oneshot};

use crate::stage::{self, ModelCache, RawTensor, StageTask};

/// A batch that ran.
#[derive(Debug, Clone)]
pub struct Executed {
    pub output: RawTensor,
    /// Wall time of the whole execution as the gateway saw it (invocation included).
    pub took: Duration,
    /// Time of the forward itself.
    pub compute: Duration,
    /// An instance was started (or the model loaded) for it.
    pub cold: bool,
}

/// Why a batch did not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The input does not fit the model (a shape the first layer refuses).
    #[error("{0}")]
    BadInput(String),
    /// No instance could take it (queue full, capacity).
    #[error("{0}")]
    Busy(String),
    /// The platform or the gateway is stopping.
    #[error("shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Failed(String),
}

pub type ExecFuture<'a> = Pin<Box<dyn Future<Output = Result<Executed, ExecError>> + Send + 'a>>;

/// Runs a model's batches.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, batch: RawTensor) -> ExecFuture<'_>;
    /// Batches that may run at once.
    fn parallelism(&self) -> usize;
    /// Gives back what the executor holds (the function's instances).
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The platform's name of a model's function: `infer-` and the model name made a DNS label,
/// with a hash of the whole name so names differing in case or punctuation never collide.
pub fn function_name(model: &str) -> String {
    cumulus_runtime::config::function_name("infer", model)
}

/// Batches as invocations of the model's own `infer-stage` function.
#[derive(Debug)]
pub struct FunctionExecutor {
    platform: Platform,
    function: String,
    model_dir: PathBuf,
    first: usize,
    last: Option<usize>,
    parallelism: usize,
    /// The node's GPU executor, when the stage runs its layers there.
    gpu: Option<PathBuf>,
}

impl FunctionExecutor {
    /// Deploys the model's function (`serving` says its tier, instances and idle timeout) for
    /// layers `first..=last` of the model in `model_dir`.
    pub fn deploy(
        platform: &Platform,
        model: &str,
        model_dir: PathBuf,
        layers: (usize, Option<usize>),
        serving: &ModelServing,
        gpu: Option<PathBuf>,
    ) -> Result<Self, RuntimeError> {
        Self::deploy_named(
            platform,
            function_name(model),
            model_dir,
            layers,
            serving.memory_mb,
            serving,
            gpu,
        )
    }

    /// [`FunctionExecutor::deploy`] under the name `function` at tier `memory_mb` (a stage of a
    /// partitioned model).
    pub fn deploy_named(
        platform: &Platform,
        function: String,
        model_dir: PathBuf,
        layers: (usize, Option<usize>),
        memory_mb: u32,
        serving: &ModelServing,
        gpu: Option<PathBuf>,
    ) -> Result<Self, RuntimeError> {
        let mut spec = platform.config().functions.spec(stage::KIND);
        spec.kind = Some(stage::KIND.to_string());
        spec.memory_mb = memory_mb;
        spec.min_instances = serving.min_instances;
        spec.max_instances = serving.max_instances;
        // The batcher never has more batches out than instances.
        spec.queue_capacity = serving.max_instances;
        spec.concurrency = 1;
        // A batch is late long before this; it only bounds a stuck instance.
        spec.timeout_ms = ((serving.slo_p99_ms * 20.0) as u64).clamp(10_000, 900_000);
        spec.keep_alive = KeepAliveConfig::Fixed {
            ttl_ms: serving.idle_ms,
        };
        platform.deploy(&function, spec)?;
        Ok(Self {
            platform: platform.clone(),
            function,
            model_dir,
            first: layers.0,
            last: layers.1,
            parallelism: serving.max_instances,
            gpu,
        })
    }

    /// The platform's name of the function.
    pub fn function(&self) -> &str {
        &self.function
    }
}

/// A partitioned model: one function per layer group, a batch's activations passed from each
/// to the next in binary; batches in flight overlap across the stages (a pipeline).
pub struct PipelineExecutor {
    model: String,
    stages: Vec<FunctionExecutor>,
}

impl std::fmt::Debug for PipelineExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineExecutor")
            .field("model", &self.model)
            .field("stages", &self.stages.len())
            .finish()
    }
}

impl PipelineExecutor {
    /// Deploys one function per group of `plan` (each at its group's tier, loading only its
    /// layers).
    pub fn deploy(
        platform: &Platform,
        model: &str,
        model_dir: PathBuf,
        groups: &[(usize, usize, u32)],
        serving: &ModelServing,
        gpu: Option<PathBuf>,
    ) -> Result<Self, RuntimeError> {
        let base = function_name(model);
        let mut stages: Vec<FunctionExecutor> = Vec::with_capacity(groups.len());
        for (k, &(first, last, memory_mb)) in groups.iter().enumerate() {
            // `infer-<model>-<hash>` with the stage index; a DNS label stays under 64.
            let name = format!("{base}-s{k}");
            match FunctionExecutor::deploy_named(
                platform,
                name,
                model_dir.clone(),
                (first, Some(last)),
                memory_mb,
                serving,
                gpu.clone(),
            ) {
                Ok(stage) => stages.push(stage),
                Err(e) => {
                    for s in &stages {
                        let p = s.platform.clone();
                        let f = s.function.clone();
                        tokio::spawn(async move { p.undeploy(&f).await });
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            model: model.to_string(),
            stages,
        })
    }
}

impl PipelineExecutor {
    /// Runs `batch` through every stage in order; also answers each stage's wall time as the
    /// gateway saw it (invocation and activation transfer included), in stage order.
    pub async fn execute_stages(
        &self,
        batch: RawTensor,
    ) -> Result<(Executed, Vec<Duration>), ExecError> {
        let started = Instant::now();
        let (mut x, mut compute, mut cold) = (batch, Duration::ZERO, false);
        let mut took = Vec::with_capacity(self.stages.len());
        for (k, stage) in self.stages.iter().enumerate() {
            let done = stage.execute(x).await?;
            crate::metrics::stage(&self.model, k, done.took);
            took.push(done.took);
            compute += done.compute;
            cold |= done.cold;
            x = done.output;
        }
        let done = Executed {
            output: x,
            took: started.elapsed(),
            compute,
            cold,
        };
        Ok((done, took))
    }

    /// The function names of the stages, in order.
    pub fn functions(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.function.clone()).collect()
    }
}

impl Executor for PipelineExecutor {
    fn execute(&self, batch: RawTensor) -> ExecFuture<'_> {
        Box::pin(async move { Ok(self.execute_stages(batch).await?.0) })
    }

    fn parallelism(&self) -> usize {
        // A batch in each stage at once, times the instances of a stage.
        self.stages.first().map_or(1, |s| s.parallelism) * self.stages.len().max(1)
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            for s in &self.stages {
                s.close().await;
            }
        })
    }
}

impl Executor for FunctionExecutor {
    fn execute(&self, batch: RawTensor) -> ExecFuture<'_> {
        Box::pin(async move {
            let task = StageTask {
                model_dir: self.model_dir.clone(),
                first: self.first,
                last: self.last,
                dtype: batch.dtype,
                shape: batch.shape.clone(),
                profile: None,
                gpu: self.gpu.clone(),
            };
            let started = Instant::now();
            let done = self
                .platform
                .invoke_request(InvokeRequest {
                    function: self.function.clone(),
                    payload: stage::encode_task(&task, &batch),
                    deadline: None,
                    job: None,
                    cancel: None,
                })
                .await
                .map_err(|e| match e {
                    RuntimeError::Function {
                        failure: FunctionFailure::BadPayload,
                        message,
                        ..
                    } => ExecError::BadInput(message),
                    RuntimeError::QueueFull { .. }
                    | RuntimeError::CapacityExceeded { .. }
                    | RuntimeError::Function {
                        failure: FunctionFailure::Busy,
                        ..
                    } => ExecError::Busy(e.to_string()),
                    RuntimeError::ShuttingDown => ExecError::ShuttingDown,
                    other => ExecError::Failed(other.to_string()),
                })?;
            let took = started.elapsed();
            let (header, output) = stage::decode_output(&done.output).map_err(ExecError::Failed)?;
            Ok(Executed {
                output,
                took,
                compute: Duration::from_micros(header.compute_us),
                cold: done.start == StartKind::Cold || header.loaded,
            })
        })
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.platform.undeploy(&self.function).await;
        })
    }
}

type Job = (RawTensor, oneshot::Sender<Result<Executed, ExecError>>);

/// Batches on compute threads of this process, which own the loaded model.
#[derive(Debug)]
pub struct InProcessExecutor {
    tx: mpsc::Sender<Job>,
    parallelism: usize,
}

impl InProcessExecutor {
    /// `threads` compute threads, each running whole batches of layers `first..=last` of the
    /// model in `model_dir` (loaded once, shared).
    pub fn start(
        model_dir: PathBuf,
        layers: (usize, Option<usize>),
        threads: usize,
    ) -> Result<Self, ExecError> {
        let cache = Arc::new(ModelCache::default());
        // Load now: a bad folder is a load error, not the first request's.
        cache
            .get(&model_dir)
            .map_err(|e| ExecError::Failed(format!("loading {}: {e}", model_dir.display())))?;
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(threads * 2);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let (rx, cache, dir) = (rx.clone(), cache.clone(), model_dir.clone());
            std::thread::Builder::new()
                .name(format!("infer-compute-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                        let Some((batch, reply)) = job else { return };
                        let started = Instant::now();
                        let task = StageTask {
                            model_dir: dir.clone(),
                            first: layers.0,
                            last: layers.1,
                            dtype: batch.dtype,
                            shape: batch.shape.clone(),
                            profile: None,
                            gpu: None,
                        };
                        let result = stage::run_stage(&cache, &task, &batch)
                            .map(|(header, output)| Executed {
                                output,
                                took: started.elapsed(),
                                compute: Duration::from_micros(header.compute_us),
                                cold: header.loaded,
                            })
                            .map_err(|e| match e {
                                cumulus_runtime::instance::FunctionError::BadPayload(m) => {
                                    ExecError::BadInput(m)
                                }
                                cumulus_runtime::instance::FunctionError::Failed(m) => {
                                    ExecError::Failed(m)
                                }
                            });
                        let _ = reply.send(result);
                    }
                })
                .map_err(|e| ExecError::Failed(format!("starting a compute thread: {e}")))?;
        }
        Ok(Self {
            tx,
            parallelism: threads,
        })
    }
}

impl Executor for InProcessExecutor {
    fn execute(&self, batch: RawTensor) -> ExecFuture<'_> {
        Box::pin(async move {
            let (reply, done) = oneshot::channel();
            self.tx
                .send((batch, reply))
                .await
                .map_err(|_| ExecError::ShuttingDown)?;
            done.await.map_err(|_| ExecError::ShuttingDown)?
        })
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // The threads end when the executor (and its sender) is dropped.
        Box::pin(async {})
    }
}
