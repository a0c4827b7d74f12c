//! The inference core: the models of the repository, each behind its own [`Batcher`] and
//! [`Executor`], answering [`InferBackend`] calls for both front ends (TEI's `Infer`).
//!
//! Every valid model folder is loaded at start; a bad one is logged, listed in the repository
//! index with its reason, and skipped. `load` and `unload` (the repository extension) run one at
//! a time; a reload swaps the new model in before the old one drains, so no request sees a gap.
//! [`Gateway::shutdown`] stops admitting, answers every queued request, and gives back the
//! models' functions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cumulus_models::folder::FolderConfig;
use cumulus_runtime::{CumulusConfig, Execution, ModelServing, Platform};

use crate::batcher::{self, BatchError, Batcher};
use crate::executor::{Executor, FunctionExecutor, InProcessExecutor, PipelineExecutor};
use crate::metrics as m;
use crate::protocol::metadata::{
    EXTENSION_BINARY_TENSOR_DATA, EXTENSION_MODEL_REPOSITORY, ModelState,
};
use crate::protocol::{
    BoxFuture, DataType, InferBackend, InferError, InferRequest, InferResponse, Limits,
    ModelMetadata, RepositoryEntry, ServerMetadata, Tensor, TensorData, TensorMetadata,
    check_version_known, validate_request,
};
use crate::repository::{Repository, RepositoryError};
use crate::stage::RawTensor;

/// The one version every model has.
pub const VERSION: &str = "1";

/// A loaded model.
struct Served {
    meta: ModelMetadata,
    batcher: Batcher,
    serving: ModelServing,
}

/// What the repository knows of a model.
enum Slot {
    Ready(Arc<Served>),
    /// Not loaded: unloaded, or it failed to load (the reason).
    Unavailable(String),
}

/// The inference core.
pub struct Gateway {
    repo: Repository,
    config: CumulusConfig,
    platform: Option<Platform>,
    limits: Limits,
    models: RwLock<BTreeMap<String, Slot>>,
    /// Loads and unloads run one at a time.
    changing: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    /// The node's GPU executor, where the models' functions run their layers.
    gpu: Option<PathBuf>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("repository", &self.repo.root())
            .finish_non_exhaustive()
    }
}

/// The front ends' limits from `[inference]`.
pub fn limits_of(config: &CumulusConfig) -> Limits {
    let defaults = Limits::default();
    let max_batch = config
        .models
        .keys()
        .map(|name| config.serving(name).max_batch_size)
        .chain(std::iter::once(config.inference.defaults.max_batch_size))
        .max()
        .unwrap_or(1) as u64;
    Limits {
        max_body_bytes: config.inference.max_body_bytes,
        max_request_elements: config.inference.max_elements as u64,
        max_tensor_elements: (config.inference.max_elements as u64).min(
            defaults
                .max_tensor_elements
                .max(config.inference.max_elements as u64),
        ),
        max_batch,
        ..defaults
    }
}

impl Gateway {
    /// The core over the repository at `repo`; `platform` runs the models' functions (needed
    /// unless every model is served in-process). Loads every valid model now.
    pub async fn start(
        repo: Repository,
        config: CumulusConfig,
        platform: Option<Platform>,
        gpu: Option<PathBuf>,
    ) -> Arc<Self> {
        let gateway = Arc::new(Self {
            limits: limits_of(&config),
            repo,
            config,
            platform,
            models: RwLock::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            gpu,
        });
        for found in gateway.repo.scan() {
            match found.config {
                Ok(_) => {
                    if let Err(e) = gateway.load_model(&found.name).await {
                        tracing::warn!(model = %found.name, error = %e, "model not loaded");
                    }
                }
                Err(reason) => {
                    tracing::warn!(model = %found.name, %reason, "model folder skipped");
                    gateway
                        .write()
                        .insert(found.name, Slot::Unavailable(reason));
                }
            }
        }
        gateway.report_ready();
        gateway
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

    fn report_ready(&self) {
        let n = self
            .read()
            .values()
            .filter(|s| matches!(s, Slot::Ready(_)))
            .count();
        m::models_ready(n);
    }

    fn served(&self, name: &str) -> Result<Arc<Served>, InferError> {
        match self.read().get(name) {
            Some(Slot::Ready(s)) => Ok(s.clone()),
            Some(Slot::Unavailable(_)) => Err(InferError::not_ready(name)),
            None => Err(InferError::unknown_model(name, None)),
        }
    }

    /// The batch bound of a loaded model now (tests and diagnostics).
    pub fn batch_bound(&self, name: &str) -> Option<usize> {
        self.served(name).ok().map(|s| s.batcher.bound())
    }

    /// Loads (or reloads) `name` from its folder: the executor, the measured profile, the
    /// batcher. On failure the model is listed as unavailable with the reason.
    async fn load_model(&self, name: &str) -> Result<(), InferError> {
        let _one = self.changing.lock().await;
        if self.draining.load(Ordering::Acquire) {
            return Err(InferError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        let loaded = self.build(name).await;
        let old = match loaded {
            Ok(served) => {
                tracing::info!(model = name, bound = served.batcher.bound(), "model ready");
                self.write()
                    .insert(name.to_string(), Slot::Ready(Arc::new(served)))
            }
            Err(e) => {
                let reason = e.to_string();
                // A model that is not in the repository at all stays unknown.
                if !matches!(e, InferError::ModelNotFound(_)) {
                    self.write()
                        .insert(name.to_string(), Slot::Unavailable(reason.clone()));
                }
                self.report_ready();
                return Err(e);
            }
        };
        if let Some(Slot::Ready(old)) = old {
            old.batcher.close().await;
        }
        self.report_ready();
        Ok(())
    }

    async fn build(&self, name: &str) -> Result<Served, InferError> {
        let (dir, folder) = self.repo.read(name).map_err(|e| match e {
            RepositoryError::NotFound(_) => InferError::unknown_model(name, None),
            RepositoryError::BadName(_) | RepositoryError::Escapes(_) => {
                InferError::BadRequest(e.to_string())
            }
            RepositoryError::Unreadable { .. } => {
                InferError::BadRequest(format!("failed to load: {e}"))
            }
        })?;
        let serving = self.config.serving(name);
        let meta = metadata(name, &folder).map_err(InferError::BadRequest)?;
        let row = profile_row(&folder).map_err(InferError::BadRequest)?;
        let executor = self.executor(name, dir, &serving)?;
        // One batch first: it must answer what the metadata promises (a plan that stops at an
        // inner layer, or a folder whose weights do not run, is caught here, not by a client).
        let checked = match executor.execute(row.clone()).await {
            Ok(done) => check_output(&meta, &done.output),
            Err(e) => Err(format!("its first batch failed: {e}")),
        };
        if let Err(e) = checked {
            executor.close().await;
            return Err(InferError::BadRequest(format!(
                "failed to load model '{name}': {e}"
            )));
        }
        let profile = match batcher::profile(executor.as_ref(), &row, serving.max_batch_size).await
        {
            Ok(p) => p,
            Err(e) => {
                executor.close().await;
                return Err(InferError::BadRequest(format!(
                    "failed to load model '{name}': its first batches failed: {e}"
                )));
            }
        };
        tracing::info!(
            model = name,
            t1_ms = profile.ms(1),
            tmax_ms = profile.ms(serving.max_batch_size),
            "profiled"
        );
        let batcher = Batcher::start(name, &serving, executor, profile);
        Ok(Served {
            meta,
            batcher,
            serving,
        })
    }

    fn executor(
        &self,
        name: &str,
        dir: PathBuf,
        serving: &ModelServing,
    ) -> Result<Arc<dyn Executor>, InferError> {
        if let Some(plan) = &serving.plan {
            let platform = self.platform.as_ref().ok_or_else(|| {
                InferError::Internal("no function platform to run models on".into())
            })?;
            let (groups, predicted) = read_plan(plan).map_err(|e| {
                InferError::BadRequest(format!("failed to load model '{name}': {e}"))
            })?;
            for (k, ms) in predicted.iter().enumerate() {
                crate::metrics::stage_predicted(name, k, *ms);
            }
            tracing::info!(
                model = name,
                plan = %plan.display(),
                stages = groups.len(),
                predicted_ms = ?predicted,
                "serving partitioned"
            );
            return Ok(Arc::new(
                PipelineExecutor::deploy(platform, name, dir, &groups, serving, self.gpu.clone())
                    .map_err(|e| {
                    InferError::BadRequest(format!("failed to load model '{name}': {e}"))
                })?,
            ));
        }
        Ok(match serving.execution {
            Execution::Function => {
                let platform = self.platform.as_ref().ok_or_else(|| {
                    InferError::Internal("no function platform to run models on".into())
                })?;
                Arc::new(
                    FunctionExecutor::deploy(
                        platform,
                        name,
                        dir,
                        (0, None),
                        serving,
                        self.gpu.clone(),
                    )
                    .map_err(|e| {
                        InferError::BadRequest(format!("failed to load model '{name}': {e}"))
                    })?,
                )
            }
            Execution::InProcess => Arc::new(
                InProcessExecutor::start(dir, (0, None), serving.max_instances).map_err(|e| {
                    InferError::BadRequest(format!("failed to load model '{name}': {e}"))
                })?,
            ),
        })
    }

    async fn unload_model(&self, name: &str) -> Result<(), InferError> {
        let _one = self.changing.lock().await;
        let old = {
            let mut models = self.write();
            match models.get(name) {
                None => return Err(InferError::unknown_model(name, None)),
                Some(_) => models.insert(name.to_string(), Slot::Unavailable("unloaded".into())),
            }
        };
        if let Some(Slot::Ready(old)) = old {
            old.batcher.close().await;
        }
        self.report_ready();
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Stops admitting (readiness goes false), answers what is queued, gives back every
    /// model's function.
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        let _one = self.changing.lock().await;
        let served: Vec<Arc<Served>> = self
            .write()
            .values_mut()
            .filter_map(|slot| {
                match std::mem::replace(slot, Slot::Unavailable("shut down".into())) {
                    Slot::Ready(s) => Some(s),
                    Slot::Unavailable(_) => None,
                }
            })
            .collect();
        for s in served {
            s.batcher.close().await;
        }
        self.report_ready();
    }

    async fn run(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> Result<InferResponse, InferError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(InferError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        let served = self.served(name)?;
        check_version_known(&served.meta, version)?;
        let request = validate_request(&served.meta, &self.limits, request)?;
        let input = request
            .inputs
            .first()
            .ok_or_else(|| InferError::BadRequest("the request has no input".into()))?;
        let raw = raw_input(input)?;
        let answer = served.batcher.submit(raw).await.map_err(|e| match e {
            BatchError::Overloaded {
                retry_after,
                reason,
            } => InferError::Overloaded {
                retry_after,
                reason,
            },
            BatchError::BadInput(m) => InferError::BadRequest(m),
            BatchError::Unavailable(_) => InferError::not_ready(name),
            BatchError::Failed(m) => InferError::Internal(m),
        })?;
        m::queued(name, answer.queued);
        let output = output_tensor(&served.meta, answer.output)?;
        Ok(InferResponse {
            model_name: name.to_string(),
            model_version: Some(VERSION.to_string()),
            id: request.id,
            outputs: vec![output],
            ..InferResponse::default()
        })
    }

    /// The serving settings a model runs with (tests and diagnostics).
    pub fn serving(&self, name: &str) -> Option<ModelServing> {
        self.served(name).ok().map(|s| s.serving.clone())
    }
}

/// The groups of a plan file (`cumulus partition --json`): `(first, last, memory_mb)`, checked
/// to cover layers from 0 on, in order, without a gap.
/// The groups `(first, last, memory_mb)` of a plan file, and each group's predicted latency, ms.
type PlanGroups = (Vec<(usize, usize, u32)>, Vec<f64>);

fn read_plan(path: &std::path::Path) -> Result<PlanGroups, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("plan {}: cannot read: {e}", path.display()))?;
    let plan: cumulus_partitioner::Plan =
        serde_json::from_str(&text).map_err(|e| format!("plan {}: {e}", path.display()))?;
    let mut next = 0;
    let mut groups = Vec::with_capacity(plan.groups.len());
    for (k, g) in plan.groups.iter().enumerate() {
        if g.first != next || g.last < g.first {
            return Err(format!(
                "plan {}: group {k} covers layers {}..={} where layer {next} comes next",
                path.display(),
                g.first,
                g.last
            ));
        }
        next = g.last + 1;
        groups.push((g.first, g.last, g.memory_mb));
    }
    if groups.is_empty() {
        return Err(format!("plan {}: no groups", path.display()));
    }
    Ok((groups, plan.groups.iter().map(|g| g.latency_ms).collect()))
}

fn outcome(r: &Result<InferResponse, InferError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(InferError::BadRequest(_)) => "bad_request",
        Err(InferError::ModelNotFound(_)) => "not_found",
        Err(InferError::TooLarge(_)) => "too_large",
        Err(InferError::Overloaded { .. }) => "overloaded",
        Err(InferError::ModelNotReady(_) | InferError::Unavailable(_)) => "unavailable",
        Err(InferError::Internal(_)) => "error",
    }
}

/// The KServe metadata of a model folder: its inputs and outputs as `config.json` lists them
/// (−1 for the batch dimension and for any other variable one).
fn metadata(name: &str, folder: &FolderConfig) -> Result<ModelMetadata, String> {
    let specs = |list: &[cumulus_models::TensorSpec]| -> Result<Vec<TensorMetadata>, String> {
        list.iter()
            .map(|t| {
                let datatype = DataType::from_str(&t.datatype)
                    .map_err(|e| format!("tensor '{}': {e}", t.name))?;
                Ok(TensorMetadata::new(
                    t.name.clone(),
                    datatype,
                    t.shape.clone(),
                ))
            })
            .collect()
    };
    let inputs = specs(&folder.inputs)?;
    if inputs.len() != 1 || !matches!(inputs[0].datatype, DataType::Fp32 | DataType::Uint32) {
        return Err(format!(
            "model '{name}': one FP32 or UINT32 input is supported, the folder lists {:?}",
            folder.inputs
        ));
    }
    Ok(ModelMetadata {
        name: name.to_string(),
        versions: vec![VERSION.to_string()],
        platform: format!("cumulus_{}", folder.model.arch()),
        inputs,
        outputs: specs(&folder.outputs)?,
    })
}

/// Whether `output` has the shape the model's metadata promises (the batch dimension aside).
fn check_output(meta: &ModelMetadata, output: &RawTensor) -> Result<(), String> {
    let Some(want) = meta.outputs.first() else {
        return Ok(());
    };
    let fits = output.shape.len() == want.shape.len()
        && output
            .shape
            .iter()
            .zip(&want.shape)
            .skip(1)
            .all(|(&got, &w)| w < 0 || got as i64 == w);
    if fits {
        Ok(())
    } else {
        Err(format!(
            "it answers shape {:?} where its output '{}' is {:?}",
            output.shape, want.name, want.shape
        ))
    }
}

/// One row of zeros of the model's input, for profiling.
fn profile_row(folder: &FolderConfig) -> Result<RawTensor, String> {
    let shape = folder.model.input_shape(1);
    let n: usize = shape.iter().product();
    Ok(match folder.inputs.first().map(|t| t.datatype.as_str()) {
        Some("UINT32") => RawTensor::u32(shape, &vec![0; n]),
        _ => RawTensor::f32(shape, &vec![0.0; n]),
    })
}

fn raw_input(t: &Tensor) -> Result<RawTensor, InferError> {
    let shape: Vec<usize> = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| InferError::TooLarge(format!("input '{}': shape too large", t.name)))?;
    match &t.data {
        TensorData::F32(v) => Ok(RawTensor::f32(shape, v)),
        TensorData::U32(v) => Ok(RawTensor::u32(shape, v)),
        other => Err(InferError::BadRequest(format!(
            "input '{}': {} data where the model takes FP32 or UINT32",
            t.name,
            other.datatype()
        ))),
    }
}

fn output_tensor(meta: &ModelMetadata, out: RawTensor) -> Result<Tensor, InferError> {
    let name = meta
        .outputs
        .first()
        .map_or_else(|| "output".to_string(), |o| o.name.clone());
    let values: Vec<f32> = out
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let shape = out.shape.iter().map(|&d| d as u64).collect();
    Tensor::new(name, shape, TensorData::F32(values))
        .map_err(|e| InferError::Internal(e.to_string()))
}

impl InferBackend for Gateway {
    fn server_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }

    fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "cumulus".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: vec![
                EXTENSION_BINARY_TENSOR_DATA.to_string(),
                EXTENSION_MODEL_REPOSITORY.to_string(),
            ],
        }
    }

    fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, InferError> {
        let served = self.served(name)?;
        check_version_known(&served.meta, version)?;
        Ok(served.meta.clone())
    }

    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, InferError> {
        match self.served(name) {
            Ok(s) => {
                check_version_known(&s.meta, version)?;
                Ok(!self.draining.load(Ordering::Acquire))
            }
            Err(InferError::ModelNotReady(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'_, Result<InferResponse, InferError>> {
        let (name, version) = (name.to_string(), version.map(str::to_string));
        Box::pin(async move {
            let started = Instant::now();
            let result = self.run(&name, version.as_deref(), request).await;
            // Only models of the repository label the series (a closed set).
            if self.read().contains_key(&name) {
                m::request(&name, outcome(&result), started.elapsed());
            }
            result
        })
    }

    fn admit(&self, name: &str) -> Result<(), InferError> {
        let served = match self.read().get(name) {
            Some(Slot::Ready(served)) => served.clone(),
            _ => return Ok(()),
        };
        match served.batcher.admits(1) {
            Err(BatchError::Overloaded {
                retry_after,
                reason,
            }) => {
                m::request(name, "overloaded", Duration::ZERO);
                Err(InferError::Overloaded {
                    retry_after,
                    reason,
                })
            }
            _ => Ok(()),
        }
    }

    fn repository_index(&self, ready_only: bool) -> Vec<RepositoryEntry> {
        let models = self.read();
        let mut names: Vec<String> = models.keys().cloned().collect();
        for found in self.repo.scan() {
            if !models.contains_key(&found.name) {
                names.push(found.name);
            }
        }
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let (state, reason) = match models.get(&name) {
                    Some(Slot::Ready(_)) => (ModelState::Ready, String::new()),
                    Some(Slot::Unavailable(r)) => (ModelState::Unavailable, r.clone()),
                    None => (ModelState::Unavailable, "not loaded".to_string()),
                };
                (!ready_only || state == ModelState::Ready).then_some(RepositoryEntry {
                    name,
                    version: Some(VERSION.to_string()),
                    state,
                    reason,
                })
            })
            .collect()
    }

    fn load(&self, name: &str) -> BoxFuture<'_, Result<(), InferError>> {
        let name = name.to_string();
        Box::pin(async move { self.load_model(&name).await })
    }

    fn unload(&self, name: &str) -> BoxFuture<'_, Result<(), InferError>> {
        let name = name.to_string();
        Box::pin(async move { self.unload_model(&name).await })
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }
}
