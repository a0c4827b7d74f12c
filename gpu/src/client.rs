//! [`ExecutorClient`]: what a function instance (an inference stage, a training worker) uses to
//! run its work on the node's executor.
//!
//! Connecting opens a tenant session that lasts as long as the client (and its clones): when the
//! last clone is dropped, or the process dies, the executor ends the session, refuses its queued
//! work and releases its models. Errors keep their [`GpuError`] variant across the socket, so a
//! caller can fall back to the CPU on [`GpuError::is_unsupported`] and retry on
//! [`GpuError::is_retryable`].
//!
//! ```no_run
//! # async fn demo() -> cumulus_gpu::Result<()> {
//! use cumulus_gpu::{ExecutorClient, HostTensor, LayerRange, Listen, ModelSource, TenantOptions};
//!
//! let socket = Listen::Unix("/tmp/cumulus-gpu.sock".into());
//! let client = ExecutorClient::connect(&socket, TenantOptions::named("stage-1")).await?;
//! let model = client
//!     .load_model(ModelSource::Folder("models/mlp".into()), LayerRange::new(0, 1))
//!     .await?;
//! let x = HostTensor::f32(vec![4, 64], vec![0.5; 256])?;
//! let y = client.forward(&model, &x).await?;
//! println!("{:?} from the {} backend", y.shape(), client.session().backend);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use cumulus_models::Loss;
use cumulus_proto::gpu::v1 as pb;
use hyper_util::rt::TokioIo;
use pb::gpu_executor_client::GpuExecutorClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::{Listen, Priority, TenantOptions};
use crate::error::{GpuError, Result};
use crate::executor::weights::ModelSource;
use crate::executor::{ExecutorStats, ModelHandle, WorkOutput};
use crate::tensor::HostTensor;
use crate::wire;

/// Largest message the client sends or accepts (the executor has its own bound).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Largest tensor the client accepts in an answer.
const MAX_ANSWER_ELEMENTS: usize = 1 << 28;

/// Which layers of a model to load: `first ..= last` (`None`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerRange {
    pub first: usize,
    pub last: Option<usize>,
}

impl LayerRange {
    /// Layers `first ..= last`.
    pub fn new(first: usize, last: usize) -> Self {
        Self {
            first,
            last: Some(last),
        }
    }

    /// The whole model.
    pub fn all() -> Self {
        Self::default()
    }
}

/// What the executor granted this client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub tenant_id: u64,
    /// `cpu` or `cuda`.
    pub backend: String,
    pub weight: u32,
    pub priority: Priority,
    pub max_in_flight: u32,
    pub memory_quota_bytes: u64,
}

/// A train step's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainStepOutput {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Every trainable parameter's gradient, by its safetensors name, in layer order.
    pub gradients: Vec<(String, HostTensor)>,
}

/// Keeps the session's stream open; dropping it ends the session.
struct Session {
    id: String,
    info: SessionInfo,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// A tenant's connection to the executor; cheap to clone (clones share the session).
#[derive(Clone)]
pub struct ExecutorClient {
    rpc: GpuExecutorClient<Channel>,
    session: Arc<Session>,
}

impl std::fmt::Debug for ExecutorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorClient")
            .field("session", &self.session.info)
            .finish()
    }
}

async fn channel(at: &Listen) -> Result<Channel> {
    match at {
        Listen::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API and ignored by the connector.
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| GpuError::Transport(format!("connect to {}: {e}", at_text(at))))
        }
        Listen::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| GpuError::Transport(e.to_string()))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| GpuError::Transport(format!("connect to {addr}: {e}"))),
    }
}

fn at_text(at: &Listen) -> String {
    match at {
        Listen::Unix(p) => p.display().to_string(),
        Listen::Tcp(a) => a.to_string(),
    }
}

impl ExecutorClient {
    /// Connects to the executor at `at` and opens a session with `opts`.
    pub async fn connect(at: &Listen, opts: TenantOptions) -> Result<Self> {
        let mut rpc = GpuExecutorClient::new(channel(at).await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = rpc
            .open(pb::OpenRequest {
                name: opts.name,
                weight: opts.weight,
                priority: wire::priority_to_proto(opts.priority) as i32,
                max_in_flight: opts.max_in_flight,
                memory_quota_bytes: opts.memory_quota_bytes,
            })
            .await?
            .into_inner();
        let first = stream
            .message()
            .await?
            .and_then(|e| e.event)
            .ok_or_else(|| GpuError::Transport("the session stream ended at once".into()))?;
        let pb::session_event::Event::Opened(opened) = first;
        let info = SessionInfo {
            tenant_id: opened.tenant_id,
            backend: opened.backend,
            weight: opened.weight,
            priority: wire::priority_from_proto(opened.priority)?,
            max_in_flight: opened.max_in_flight,
            memory_quota_bytes: opened.memory_quota_bytes,
        };
        // Reading the stream to its end keeps it (and so the session) open.
        let keepalive =
            tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
        Ok(Self {
            rpc,
            session: Arc::new(Session {
                id: opened.session,
                info,
                keepalive,
            }),
        })
    }

    pub fn session(&self) -> &SessionInfo {
        &self.session.info
    }

    fn sid(&self) -> String {
        self.session.id.clone()
    }

    /// Makes layers `range` of a model resident; the weights are shared with every tenant of
    /// the same model (by content) and freed when the last of them unloads or disconnects.
    pub async fn load_model(&self, source: ModelSource, range: LayerRange) -> Result<ModelHandle> {
        self.load(source, range, false).await
    }

    /// Loads a whole model for [`ExecutorClient::train_step`]; refused with
    /// [`GpuError::Unsupported`] naming the first layer the executor cannot train.
    pub async fn load_for_training(&self, source: ModelSource) -> Result<ModelHandle> {
        self.load(source, LayerRange::all(), true).await
    }

    async fn load(
        &self,
        source: ModelSource,
        range: LayerRange,
        training: bool,
    ) -> Result<ModelHandle> {
        let source = match source {
            ModelSource::Folder(dir) => pb::load_model_request::Source::Folder(
                dir.to_str()
                    .ok_or_else(|| {
                        GpuError::InvalidRequest(format!("{} is not UTF-8", dir.display()))
                    })?
                    .to_string(),
            ),
            ModelSource::Inline {
                config_json,
                safetensors,
            } => pb::load_model_request::Source::Inline(pb::InlineModel {
                config_json,
                safetensors,
            }),
        };
        let to_u32 = |v: usize| {
            u32::try_from(v)
                .map_err(|_| GpuError::InvalidRequest(format!("layer {v} out of range")))
        };
        let r = self
            .rpc
            .clone()
            .load_model(pb::LoadModelRequest {
                session: self.sid(),
                source: Some(source),
                first_layer: to_u32(range.first)?,
                last_layer: range.last.map(to_u32).transpose()?,
                training,
            })
            .await?
            .into_inner();
        Ok(wire::model_from_proto(r))
    }

    /// Drops this tenant's reference; `true` when the weights left the device.
    pub async fn unload(&self, model: &ModelHandle) -> Result<bool> {
        let r = self
            .rpc
            .clone()
            .unload_model(pb::UnloadModelRequest {
                session: self.sid(),
                handle: model.id,
            })
            .await?
            .into_inner();
        Ok(r.freed)
    }

    /// Runs the loaded layers on one batch.
    pub async fn forward(&self, model: &ModelHandle, input: &HostTensor) -> Result<HostTensor> {
        let out = self.forward_timed(model, input).await?;
        out.tensors
            .into_iter()
            .next()
            .map(|(_, t)| t)
            .ok_or_else(|| GpuError::Transport("an answer without output".into()))
    }

    /// [`ExecutorClient::forward`] with the executor's dispatch order and timings.
    pub async fn forward_timed(
        &self,
        model: &ModelHandle,
        input: &HostTensor,
    ) -> Result<WorkOutput> {
        let r = self
            .rpc
            .clone()
            .forward(pb::ForwardRequest {
                session: self.sid(),
                handle: model.id,
                input: Some(input.to_proto()),
            })
            .await?
            .into_inner();
        wire::forward_from_proto(r, MAX_ANSWER_ELEMENTS)
    }

    /// Overwrites parameters of this tenant's view of a model (a training worker's current
    /// weights); returns how many shared tensors were copied to make the view private.
    pub async fn set_params(
        &self,
        model: &ModelHandle,
        params: &[(String, HostTensor)],
    ) -> Result<u32> {
        let r = self
            .rpc
            .clone()
            .set_params(pb::SetParamsRequest {
                session: self.sid(),
                handle: model.id,
                params: wire::named(params),
            })
            .await?
            .into_inner();
        Ok(r.copied)
    }

    /// One forward + backward pass of a model loaded with
    /// [`ExecutorClient::load_for_training`]: the mean loss and every gradient.
    pub async fn train_step(
        &self,
        model: &ModelHandle,
        input: &HostTensor,
        targets: &HostTensor,
        loss: Loss,
    ) -> Result<TrainStepOutput> {
        let r = self
            .rpc
            .clone()
            .train_step(pb::TrainStepRequest {
                session: self.sid(),
                handle: model.id,
                input: Some(input.to_proto()),
                targets: Some(targets.to_proto()),
                loss: wire::loss_to_proto(loss) as i32,
            })
            .await?
            .into_inner();
        let out = wire::train_from_proto(r, MAX_ANSWER_ELEMENTS)?;
        Ok(TrainStepOutput {
            loss: out.loss.unwrap_or(f32::NAN),
            gradients: out.tensors,
        })
    }

    /// The executor's state (every tenant's queue and memory, the resident weights).
    pub async fn stats(&self) -> Result<ExecutorStats> {
        let r = self
            .rpc
            .clone()
            .stats(pb::StatsRequest {})
            .await?
            .into_inner();
        Ok(wire::stats_from_proto(r))
    }
}
