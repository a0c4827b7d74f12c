//! [`ParamStoreClient`]: the routing client workers use. It knows every shard, checks at connect
//! that shard `i` of the list says it is shard `i` of `n`, sends each shard only the chunks it owns,
//! fans requests out concurrently, and retries transport failures with exponential backoff. A push
//! is validated against the layout before anything is sent, so bad input never reaches a shard
//! in part; each shard applies its part atomically and deduplicates retries by (worker, seq).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cumulus_param_store::StoreError> {
//! use cumulus_param_store::client::{sparse, ClientConfig, ParamStoreClient};
//! let client = ParamStoreClient::connect(&["127.0.0.1:7000".into()], ClientConfig::default()).await?;
//! client.push("job", 0, 1, 1, vec![sparse("w", vec![3], vec![0.5])]).await?;
//! let (changed, _since) = client.pull_changed("job", &client.no_versions(), None).await?;
//! # let _ = changed; Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cumulus_proto::paramstore::v1 as pb;
use futures::future::try_join_all;
use pb::param_store_client::ParamStoreClient as Raw;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::chunk::{decode_offsets, decode_values};

mod types;
use crate::error::{Result, StoreError};
use crate::layout::{JobLayout, chunk_owner};
use crate::routing::{Routing, split_push};
pub use types::{
    ChangedOptions, ChangedTensor, ClockState, PullClock, SparseUpdate, Versions, dense, sparse,
};

/// Retry and size settings of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// First backoff after a transport failure.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Give up on a shard after retrying this long.
    pub retry_for: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            retry_for: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug)]
struct ShardConn {
    addr: String,
    raw: Raw<Channel>,
    max_message_bytes: usize,
}

/// Client of every shard of one parameter store.
#[derive(Debug, Clone)]
pub struct ParamStoreClient {
    shards: Arc<Vec<ShardConn>>,
    config: ClientConfig,
    routes: Arc<RwLock<HashMap<String, Arc<Routing>>>>,
}

/// Transport failures and a busy shard are retried; a full shard
/// ([`NO_RETRY`](crate::grpc::NO_RETRY)) and every answer about the request itself are not.
fn is_retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => true,
        tonic::Code::ResourceExhausted => status.metadata().get(crate::grpc::NO_RETRY).is_none(),
        _ => false,
    }
}

/// What [`ParamStoreClient::resume`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// True when no shard held the job: it was registered afresh (push its initial values).
    pub created: bool,
    /// Pushes the job held, summed over shards (a push touching several shards counts on each).
    pub pushes: u64,
}

impl ParamStoreClient {
    /// Connects to shards `addrs[0..n]` (`host:port` or `http://host:port`) and checks that each
    /// says it is shard `i` of `n`.
    pub async fn connect(addrs: &[String], config: ClientConfig) -> Result<Self> {
        if addrs.is_empty() {
            return Err(StoreError::invalid("at least one shard address is needed"));
        }
        let mut shards = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let uri = if addr.contains("://") {
                addr.clone()
            } else {
                format!("http://{addr}")
            };
            let endpoint = Endpoint::from_shared(uri)
                .map_err(|e| StoreError::invalid(format!("shard address '{addr}': {e}")))?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20));
            let raw = Raw::new(endpoint.connect_lazy())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            shards.push(ShardConn {
                addr: addr.clone(),
                raw,
                max_message_bytes: usize::MAX,
            });
        }
        let mut client = Self {
            shards: Arc::new(shards),
            config,
            routes: Arc::default(),
        };
        let stats = client.stats().await?;
        let n = addrs.len();
        let mut shards = Vec::with_capacity(n);
        let old = Arc::try_unwrap(client.shards)
            .map_err(|_| StoreError::invalid("client shared during connect"))?;
        for (i, (mut conn, s)) in old.into_iter().zip(&stats).enumerate() {
            if s.shard_index as usize != i || s.shard_count as usize != n {
                return Err(StoreError::ShardMismatch(format!(
                    "address #{i} ({}) is shard {}/{}, expected {i}/{n}",
                    conn.addr, s.shard_index, s.shard_count
                )));
            }
            conn.max_message_bytes = usize::try_from(s.max_message_bytes).unwrap_or(usize::MAX);
            shards.push(conn);
        }
        client.shards = Arc::new(shards);
        Ok(client)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A version vector that asks for everything.
    pub fn no_versions(&self) -> Versions {
        vec![0; self.shards.len()]
    }

    /// Calls shard `i`, retrying retryable failures with backoff for up to `retry_for`.
    async fn call<T, F, Fut>(&self, i: usize, mut f: F) -> Result<T>
    where
        F: FnMut(Raw<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let conn = self
            .shards
            .get(i)
            .ok_or_else(|| StoreError::invalid(format!("no shard {i}")))?;
        let start = Instant::now();
        let mut backoff = self.config.initial_backoff;
        loop {
            match f(conn.raw.clone()).await {
                Ok(v) => return Ok(v),
                Err(status) if is_retryable(&status) => {
                    if start.elapsed() + backoff > self.config.retry_for {
                        return Err(StoreError::ShardUnavailable {
                            shard: i,
                            addr: conn.addr.clone(),
                            reason: status.message().to_owned(),
                        });
                    }
                    tracing::debug!(shard = i, code = ?status.code(), "retrying after {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(status) => return Err(StoreError::Remote { shard: i, status }),
            }
        }
    }

    /// Calls every shard concurrently.
    async fn all<T, F, Fut>(&self, f: F) -> Result<Vec<T>>
    where
        F: Fn(usize, Raw<Channel>) -> Fut + Clone,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        try_join_all((0..self.shards.len()).map(|i| {
            let f = f.clone();
            self.call(i, move |raw| f(i, raw))
        }))
        .await
    }

    /// Identity and counters of every shard.
    pub async fn stats(&self) -> Result<Vec<pb::StatsResponse>> {
        self.all(|_, mut raw| async move { Ok(raw.stats(pb::StatsRequest {}).await?.into_inner()) })
            .await
    }

    /// Registers a new job on every shard; true when any shard created it (false: this very
    /// registration was retried and every shard already had it, untouched). A job id a shard
    /// holds is refused (`is_already_registered()` on the error, which names the job and its
    /// pushes): continue it with [`Self::resume`], or [`Self::unregister`] it first. When a shard
    /// refuses (its limits, a held id), the shards that created the job forget it again, so a
    /// refused registration leaves nothing behind.
    pub async fn register(&self, req: pb::RegisterRequest) -> Result<bool> {
        let layout = JobLayout::from_request(&req)?;
        crate::init::validate_inits(&layout, &req.tensors)?;
        self.forget_route(&req.job_id);
        let answers = self.each(|mut raw| {
            let req = req.clone();
            async move { Ok(raw.register(req).await?.into_inner()) }
        });
        let answers = answers.await;
        let created: Vec<bool> = answers
            .iter()
            .map(|a| a.as_ref().is_ok_and(|r| r.created))
            .collect();
        if let Some(err) = answers.into_iter().find_map(|a| a.err()) {
            self.roll_back(&req.job_id, &created).await;
            return Err(err);
        }
        Ok(created.into_iter().any(|c| c))
    }

    /// Continues a job every shard holds with this layout: clocks and de-duplication windows
    /// are kept and its stopping flag clears. A job no shard holds is registered afresh
    /// (`created`). A job only some shards hold is refused (`ShardMismatch`) and left as it was.
    pub async fn resume(&self, req: pb::RegisterRequest) -> Result<Resumed> {
        let layout = JobLayout::from_request(&req)?;
        crate::init::validate_inits(&layout, &req.tensors)?;
        self.forget_route(&req.job_id);
        let answers = self
            .each(|mut raw| {
                let req = req.clone();
                async move { Ok(raw.resume(req).await?.into_inner()) }
            })
            .await;
        let created: Vec<bool> = answers
            .iter()
            .map(|a| a.as_ref().is_ok_and(|r| r.created))
            .collect();
        let mut ok = Vec::with_capacity(answers.len());
        for a in answers {
            match a {
                Ok(r) => ok.push(r),
                Err(e) => {
                    self.roll_back(&req.job_id, &created).await;
                    return Err(e);
                }
            }
        }
        if created.iter().any(|&c| c) && !created.iter().all(|&c| c) {
            self.roll_back(&req.job_id, &created).await;
            let missing: Vec<usize> = (0..created.len()).filter(|&i| created[i]).collect();
            return Err(StoreError::ShardMismatch(format!(
                "job '{}' is held by some shards but not by shards {missing:?} (did they lose their data?): unregister it and start it over",
                req.job_id
            )));
        }
        Ok(Resumed {
            created: created.iter().all(|&c| c),
            pushes: ok.iter().map(|r| r.pushes).sum(),
        })
    }

    /// Forgets a job on every shard (durably): its memory is freed and its id may be registered
    /// anew. Returns the pushes it held, summed over shards (0: no shard held it).
    pub async fn unregister(&self, job: &str) -> Result<u64> {
        let req = pb::UnregisterRequest {
            job_id: job.to_owned(),
        };
        let answers = self
            .all(|_, mut raw| {
                let req = req.clone();
                async move { Ok(raw.unregister(req).await?.into_inner()) }
            })
            .await?;
        self.forget_route(job);
        Ok(answers.iter().map(|a| a.pushes).sum())
    }

    /// Calls every shard concurrently and keeps every answer.
    async fn each<T, F, Fut>(&self, f: F) -> Vec<Result<T>>
    where
        F: Fn(Raw<Channel>) -> Fut + Clone,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        futures::future::join_all((0..self.shards.len()).map(|i| {
            let f = f.clone();
            self.call(i, f)
        }))
        .await
    }

    /// Unregisters `job` from the shards whose flag in `created` is set (after a refusal
    /// elsewhere); failures are logged, the caller reports the refusal.
    async fn roll_back(&self, job: &str, created: &[bool]) {
        let req = pb::UnregisterRequest {
            job_id: job.to_owned(),
        };
        for (i, _) in created.iter().enumerate().filter(|(_, c)| **c) {
            let r = self
                .call(i, |mut raw| {
                    let req = req.clone();
                    async move { Ok(raw.unregister(req).await?.into_inner()) }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(job, shard = i, error = %e, "could not undo a partial registration");
            }
        }
    }

    fn forget_route(&self, job: &str) {
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job);
    }

    async fn routing(&self, job: &str) -> Result<Arc<Routing>> {
        if let Some(r) = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(job)
        {
            return Ok(r.clone());
        }
        let req = pb::LayoutRequest {
            job_id: job.to_owned(),
        };
        let resp = self.call(0, |mut raw| {
            let req = req.clone();
            async move { Ok(raw.layout(req).await?.into_inner()) }
        });
        let layout = JobLayout::from_response(&resp.await?)?;
        let n = u32::try_from(self.shards.len()).unwrap_or(u32::MAX);
        let owners = (0..layout.tensors.len())
            .map(|t| {
                let name = layout.tensors.get(t).map_or("", |m| m.name.as_str());
                (0..layout.chunk_count(t))
                    .map(|c| chunk_owner(job, name, c, n))
                    .collect()
            })
            .collect();
        let r = Arc::new(Routing { layout, owners });
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.to_owned(), r.clone());
        Ok(r)
    }

    /// The layout of a job.
    pub async fn layout(&self, job: &str) -> Result<JobLayout> {
        Ok(self.routing(job).await?.layout.clone())
    }

    /// Pushes a worker's update (deltas, summed into the store). Validated whole before anything
    /// is sent; each shard applies its part atomically; a retry with the same `seq` is not applied
    /// twice. Returns the version each shard reached (0 for shards the push did not touch).
    pub async fn push(
        &self,
        job: &str,
        worker: u32,
        clock: u64,
        seq: u64,
        updates: Vec<SparseUpdate>,
    ) -> Result<Versions> {
        let route = self.routing(job).await?;
        let parts = split_push(&route, job, worker, clock, seq, updates, self.shards.len())?;
        for (i, part) in parts.iter().enumerate() {
            let Some(req) = part else { continue };
            let limit = self
                .shards
                .get(i)
                .map_or(usize::MAX, |s| s.max_message_bytes);
            let size = req.encoded_len();
            if size > limit {
                let name = req
                    .updates
                    .iter()
                    .max_by_key(|u| u.values.len())
                    .map_or("", |u| u.tensor.as_str());
                return Err(StoreError::TooLarge {
                    what: format!("push of job '{job}' to shard {i} (largest tensor '{name}')"),
                    size: size as u64,
                    limit: limit as u64,
                });
            }
        }
        let parts = Arc::new(parts);
        self.all(|i, mut raw| {
            let parts = parts.clone();
            async move {
                match parts.get(i).and_then(Option::as_ref) {
                    Some(req) => Ok(raw.push(req.clone()).await?.into_inner().version),
                    None => Ok(0),
                }
            }
        })
        .await
    }

    async fn pull_raw(&self, req: pb::PullRequest) -> Result<Vec<Vec<pb::PullChunk>>> {
        self.all(|_, mut raw| {
            let req = req.clone();
            async move {
                let mut stream = raw.pull(req).await?.into_inner();
                let mut out = Vec::new();
                while let Some(chunk) = stream.message().await? {
                    out.push(chunk);
                }
                Ok(out)
            }
        })
        .await
    }

    fn pull_request(
        job: &str,
        ranges: Vec<pb::TensorRange>,
        since: Option<u64>,
        at: Option<PullClock>,
    ) -> pb::PullRequest {
        pb::PullRequest {
            job_id: job.to_owned(),
            ranges,
            since_version: since,
            worker: at.map(|a| a.worker),
            clock: at.map(|a| a.clock),
            max_wait_ms: 0,
            except_worker: None,
            encoding: pb::ValueEncoding::F32.into(),
        }
    }

    /// Pulls `[start, end)` of a tensor (`end` 0: to its end), dense. With `at`, waits until the
    /// job's synchronization mode lets that worker run that clock.
    pub async fn pull_range(
        &self,
        job: &str,
        tensor: &str,
        start: u64,
        end: u64,
        at: Option<PullClock>,
    ) -> Result<Vec<f32>> {
        let route = self.routing(job).await?;
        let t = route.layout.tensor_index(tensor)?;
        let len = route.layout.tensors.get(t).map_or(0, |m| m.len);
        let end = if end == 0 { len } else { end };
        if start >= end || end > len {
            return Err(StoreError::invalid(format!(
                "job '{job}' tensor '{tensor}': range {start}..{end} is out of range (length {len})"
            )));
        }
        let range = pb::TensorRange {
            tensor: tensor.to_owned(),
            start,
            end,
        };
        let parts = self
            .pull_raw(Self::pull_request(job, vec![range], None, at))
            .await?;
        let mut out = vec![0.0; usize::try_from(end - start).unwrap_or(0)];
        for chunk in parts.into_iter().flatten() {
            let off = usize::try_from(chunk.start.saturating_sub(start)).unwrap_or(usize::MAX);
            copy_dense(&chunk, &mut out, off)?;
        }
        Ok(out)
    }

    /// Pulls every tensor of a job, dense.
    pub async fn pull_all(
        &self,
        job: &str,
        at: Option<PullClock>,
    ) -> Result<HashMap<String, Vec<f32>>> {
        let route = self.routing(job).await?;
        let parts = self
            .pull_raw(Self::pull_request(job, Vec::new(), None, at))
            .await?;
        let mut out: HashMap<String, Vec<f32>> = route
            .layout
            .tensors
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    vec![0.0; usize::try_from(m.len).unwrap_or(0)],
                )
            })
            .collect();
        for chunk in parts.into_iter().flatten() {
            let Some(dst) = out.get_mut(&chunk.tensor) else {
                continue;
            };
            let off = usize::try_from(chunk.start).unwrap_or(usize::MAX);
            copy_dense(&chunk, dst, off)?;
        }
        Ok(out)
    }

    /// Entries changed since `since` (one version per shard; [`Self::no_versions`] for all), and
    /// the versions to pass next time. What sparse models need: only changed rows travel.
    pub async fn pull_changed(
        &self,
        job: &str,
        since: &Versions,
        at: Option<PullClock>,
    ) -> Result<(Vec<ChangedTensor>, Versions)> {
        let options = ChangedOptions {
            at,
            ..ChangedOptions::default()
        };
        self.pull_changed_with(job, since, options).await
    }

    /// [`Self::pull_changed`] with the options a training worker uses: leave out what only it
    /// changed, take values as f16.
    pub async fn pull_changed_with(
        &self,
        job: &str,
        since: &Versions,
        options: ChangedOptions,
    ) -> Result<(Vec<ChangedTensor>, Versions)> {
        let ChangedOptions {
            at,
            except_worker,
            half,
        } = options;
        let encoding = if half {
            pb::ValueEncoding::F16
        } else {
            pb::ValueEncoding::F32
        };
        if since.len() != self.shards.len() {
            return Err(StoreError::invalid(format!(
                "{} versions for {} shards",
                since.len(),
                self.shards.len()
            )));
        }
        let since = Arc::new(since.clone());
        let parts = self
            .all(|i, mut raw| {
                let since = since.clone();
                let job = job.to_owned();
                async move {
                    let v = since.get(i).copied().unwrap_or(0);
                    let mut req = Self::pull_request(&job, Vec::new(), Some(v), at);
                    req.except_worker = except_worker;
                    req.encoding = encoding.into();
                    let mut stream = raw.pull(req).await?.into_inner();
                    let mut out = Vec::new();
                    while let Some(chunk) = stream.message().await? {
                        out.push(chunk);
                    }
                    Ok(out)
                }
            })
            .await?;
        let mut next = since.as_ref().clone();
        let mut by_tensor: HashMap<String, ChangedTensor> = HashMap::new();
        for (i, chunks) in parts.into_iter().enumerate() {
            for chunk in chunks {
                if let Some(v) = next.get_mut(i) {
                    *v = (*v).max(chunk.version);
                }
                if chunk.values.is_empty() {
                    continue;
                }
                let entry =
                    by_tensor
                        .entry(chunk.tensor.clone())
                        .or_insert_with(|| ChangedTensor {
                            tensor: chunk.tensor.clone(),
                            ..Default::default()
                        });
                let values = chunk_values(&chunk)?;
                entry.wire_bytes += (chunk.values.len() + chunk.offsets.len()) as u64;
                let before = entry.values.len();
                entry.values.extend(values);
                let n = (entry.values.len() - before) as u64;
                if chunk.offsets.is_empty() {
                    // A dense run: the caller was further behind than the chunk's change log.
                    entry.indices.extend(chunk.start..chunk.start + n);
                } else {
                    let offsets = decode_offsets(&chunk.offsets, "pull answer offsets")
                        .map_err(bad_answer)?;
                    let base = entry.indices.len();
                    let start = chunk.start;
                    entry
                        .indices
                        .extend(offsets.into_iter().map(|o| start + u64::from(o)));
                    if (entry.indices.len() - base) as u64 != n {
                        return Err(bad_answer(format!(
                            "pull answer of tensor '{}': {} offsets for {n} values",
                            chunk.tensor,
                            entry.indices.len() - base
                        )));
                    }
                }
            }
        }
        let mut changed: Vec<_> = by_tensor.into_values().collect();
        changed.sort_by(|a, b| a.tensor.cmp(&b.tensor));
        Ok((changed, next))
    }

    async fn clock_all(&self, req: pb::ClockRequest) -> Result<ClockState> {
        let answers = self
            .all(|_, mut raw| {
                let req = req.clone();
                async move { Ok(raw.clock(req).await?.into_inner()) }
            })
            .await?;
        Ok(ClockState {
            min_clock: answers.iter().map(|a| a.min_clock).min().unwrap_or(0),
            stopping: answers.iter().any(|a| a.stopping),
        })
    }

    /// Reports that `worker` reached `clock`; with `wait`, returns once the synchronization mode
    /// lets it run `clock`. Returns the slowest worker's clock and whether the job was asked to
    /// stop ([`Self::stop`]).
    pub async fn clock(
        &self,
        job: &str,
        worker: u32,
        clock: u64,
        wait: bool,
    ) -> Result<ClockState> {
        let req = pb::ClockRequest {
            job_id: job.to_owned(),
            worker,
            clock,
            wait,
            leave: false,
            max_wait_ms: 0,
        };
        self.clock_all(req).await
    }

    /// Asks the job's workers to finish: their next clock answer says `stopping`, and they push
    /// what they hold and return instead of running out their invocations.
    pub async fn stop(&self, job: &str) -> Result<()> {
        let req = pb::StopRequest {
            job_id: job.to_owned(),
        };
        self.all(|_, mut raw| {
            let req = req.clone();
            async move { Ok(raw.stop(req).await?.into_inner()) }
        })
        .await?;
        Ok(())
    }

    /// `worker` leaves the job (scale-in): it no longer holds the others back.
    pub async fn leave(&self, job: &str, worker: u32) -> Result<()> {
        let req = pb::ClockRequest {
            job_id: job.to_owned(),
            worker,
            clock: 0,
            wait: false,
            leave: true,
            max_wait_ms: 0,
        };
        self.clock_all(req).await.map(|_| ())
    }

    /// Snapshots every shard under one id; returns the id.
    pub async fn snapshot(&self, id: Option<String>) -> Result<String> {
        let id = id.unwrap_or_else(crate::shard::new_snapshot_id);
        let req = pb::SnapshotRequest {
            snapshot_id: id.clone(),
        };
        self.all(|_, mut raw| {
            let req = req.clone();
            async move { Ok(raw.snapshot(req).await?.into_inner()) }
        })
        .await?;
        Ok(id)
    }

    /// Restores every shard from snapshot `id` (taken with any shard count).
    pub async fn restore(&self, id: &str) -> Result<()> {
        let req = pb::RestoreRequest {
            snapshot_id: id.to_owned(),
        };
        self.all(|_, mut raw| {
            let req = req.clone();
            async move { Ok(raw.restore(req).await?.into_inner()) }
        })
        .await?;
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(())
    }
}

/// A shard answered something that breaks the pull contract.
fn bad_answer(reason: String) -> StoreError {
    StoreError::invalid(format!("malformed answer from a shard: {reason}"))
}

/// The values of a pull answer's chunk, in the encoding it says it has.
fn chunk_values(chunk: &pb::PullChunk) -> Result<Vec<f32>> {
    decode_values(&chunk.values, chunk.encoding, "pull answer values").map_err(bad_answer)
}

/// Copies a dense pull chunk into `dst` at `off` (values past `dst`'s end are ignored).
fn copy_dense(chunk: &pb::PullChunk, dst: &mut [f32], off: usize) -> Result<()> {
    for (d, v) in dst.iter_mut().skip(off).zip(chunk_values(chunk)?) {
        *d = v;
    }
    Ok(())
}
