//! The `paramstore.v1.ParamStore` gRPC service: a thin adapter over [`Shard`], and the one mapping
//! from [`StoreError`] to `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use cumulus_proto::paramstore::v1 as pb;
use futures::Stream;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::metrics as m;
use crate::shard::Shard;

/// Metadata key on a RESOURCE_EXHAUSTED answer that retrying cannot help (the shard is full, not
/// busy); clients retry RESOURCE_EXHAUSTED only without it.
pub const NO_RETRY: &str = "cumulus-no-retry";

/// Maps every error to a status. Internal failures are logged here and answered without detail.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match &e {
            StoreError::UnknownJob(_)
            | StoreError::UnknownTensor { .. }
            | StoreError::UnknownSnapshot(_) => Status::not_found(e.to_string()),
            StoreError::InvalidArgument(_)
            | StoreError::TooLarge { .. }
            | StoreError::LimitExceeded { .. } => Status::invalid_argument(e.to_string()),
            StoreError::LayoutConflict(_) | StoreError::JobExists { .. } => {
                Status::already_exists(e.to_string())
            }
            StoreError::ShardFull { .. } => {
                let mut md = tonic::metadata::MetadataMap::new();
                md.insert(
                    NO_RETRY,
                    tonic::metadata::MetadataValue::from_static("full"),
                );
                Status::with_metadata(tonic::Code::ResourceExhausted, e.to_string(), md)
            }
            StoreError::ClockTimeout { .. } => Status::deadline_exceeded(e.to_string()),
            // Not retryable: the job is over, the worker should push what it holds and return.
            StoreError::JobStopping(_) => Status::aborted(e.to_string()),
            StoreError::Overloaded(_) => Status::resource_exhausted(e.to_string()),
            StoreError::ShuttingDown | StoreError::ShardUnavailable { .. } => {
                Status::unavailable(e.to_string())
            }
            StoreError::ShardMismatch(_) => Status::failed_precondition(e.to_string()),
            StoreError::Remote { status, .. } => status.clone(),
            StoreError::Wal(_)
            | StoreError::CorruptWal { .. }
            | StoreError::Recovery { .. }
            | StoreError::ObjectStore(_)
            | StoreError::CorruptSnapshot { .. }
            | StoreError::Transport(_)
            | StoreError::Io(_) => {
                tracing::error!(error = %e, "internal error");
                Status::internal("internal error in the parameter store shard (see its log)")
            }
        }
    }
}

/// The gRPC service of one shard.
#[derive(Debug, Clone)]
pub struct ParamStoreService {
    shard: Arc<Shard>,
    permits: Arc<Semaphore>,
    max_message_bytes: usize,
}

impl ParamStoreService {
    /// Serves `shard`.
    pub fn new(shard: Arc<Shard>) -> Self {
        let cfg = shard.config();
        Self {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            max_message_bytes: cfg.max_message_bytes,
            shard,
        }
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| StoreError::Overloaded("request"))
    }

    fn check_size(&self, what: impl FnOnce() -> String, size: usize) -> Result<(), StoreError> {
        if size > self.max_message_bytes {
            return Err(StoreError::TooLarge {
                what: what(),
                size: size as u64,
                limit: self.max_message_bytes as u64,
            });
        }
        Ok(())
    }
}

fn observe<T>(op: &'static str, t0: Instant, r: Result<T, StoreError>) -> Result<T, Status> {
    metrics::histogram!(m::LATENCY, "op" => op).record(t0.elapsed().as_secs_f64());
    r.map_err(|e| {
        metrics::counter!(m::ERRORS, "op" => op).increment(1);
        Status::from(e)
    })
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::param_store_server::ParamStore for ParamStoreService {
    #[tracing::instrument(skip_all, fields(job = %req.get_ref().job_id))]
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        let req = req.into_inner();
        let r = async {
            let job = req.job_id.clone();
            self.check_size(|| format!("registration of job '{job}'"), req.encoded_len())?;
            self.shard.register(req).await
        }
        .await;
        observe("register", t0, r).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(job = %req.get_ref().job_id))]
    async fn resume(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        let req = req.into_inner();
        let r = async {
            let job = req.job_id.clone();
            self.check_size(|| format!("registration of job '{job}'"), req.encoded_len())?;
            self.shard.resume(req).await
        }
        .await;
        observe("resume", t0, r).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(job = %req.get_ref().job_id))]
    async fn unregister(
        &self,
        req: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        observe(
            "unregister",
            t0,
            self.shard.unregister(req.into_inner()).await,
        )
        .map(Response::new)
    }

    async fn layout(
        &self,
        req: Request<pb::LayoutRequest>,
    ) -> Result<Response<pb::LayoutResponse>, Status> {
        let t0 = Instant::now();
        observe("layout", t0, self.shard.layout(&req.get_ref().job_id)).map(Response::new)
    }

    type PullStream = PullStream;

    #[tracing::instrument(skip_all, fields(job = %req.get_ref().job_id))]
    async fn pull(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        let chunks = observe("pull", t0, self.shard.pull(req.get_ref()).await)?;
        let stream = tokio_stream::iter(chunks.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(job = %req.get_ref().job_id, worker = req.get_ref().worker, seq = req.get_ref().seq))]
    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        let req = req.into_inner();
        let r = async {
            let size = req.encoded_len();
            if size > self.max_message_bytes {
                let largest = req.updates.iter().max_by_key(|u| u.values.len());
                let name = largest.map_or("", |u| u.tensor.as_str()).to_owned();
                let job = req.job_id.clone();
                self.check_size(
                    || format!("push to job '{job}' (largest tensor '{name}')"),
                    size,
                )?;
            }
            self.shard.push(req).await
        }
        .await;
        observe("push", t0, r).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(job = %req.get_ref().job_id, worker = req.get_ref().worker))]
    async fn clock(
        &self,
        req: Request<pb::ClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        observe("clock", t0, self.shard.clock(req.into_inner()).await).map(Response::new)
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let t0 = Instant::now();
        let _p = self.admit()?;
        observe("stop", t0, self.shard.stop_job(req.get_ref())).map(Response::new)
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let t0 = Instant::now();
        let id = Some(req.into_inner().snapshot_id).filter(|s| !s.is_empty());
        observe("snapshot", t0, self.shard.snapshot(id).await).map(Response::new)
    }

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        let t0 = Instant::now();
        observe(
            "restore",
            t0,
            self.shard.restore(&req.get_ref().snapshot_id).await,
        )
        .map(Response::new)
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Ok(Response::new(self.shard.stats()))
    }
}
