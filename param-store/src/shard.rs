//! One shard as a service core: the in-memory [`ShardState`] behind the write-ahead log and the
//! snapshot store. Every mutation is logged (and durable) before it is applied; a snapshot holds
//! the gate exclusively just long enough to rotate the log and copy the chunks.
//!
//! Transport-agnostic: [`crate::grpc`] translates requests and errors.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cumulus_proto::paramstore::v1 as pb;
use pb::wal_record::Record;
use prost::Message;
use tokio::sync::{RwLock, watch};

use crate::config::ShardConfig;
use crate::error::{Result, StoreError};
use crate::init::validate_inits;
use crate::layout::JobLayout;
use crate::metrics as m;
use crate::snapshot::{JobManifest, Manifest, SnapshotStore, by_tensor, validate_snapshot_id};
use crate::state::ShardState;
use crate::wal::Wal;

/// A running shard's core.
#[derive(Debug)]
pub struct Shard {
    state: ShardState,
    wal: Wal,
    /// Pushes, clocks and registrations hold it shared across "log, then apply"; a snapshot holds
    /// it exclusively, so its copy reflects exactly the records in the segments it retires.
    gate: RwLock<()>,
    snapshots: SnapshotStore,
    config: ShardConfig,
    shutdown: watch::Receiver<bool>,
    last_snapshot: std::sync::Mutex<String>,
    /// The last changed-since answer: ((job, since, except worker, encoding, watermark), chunks).
    pull_cache: std::sync::Mutex<Option<PullCacheEntry>>,
}

type PullCacheEntry = (
    (String, u64, Option<u32>, pb::ValueEncoding, u64),
    Arc<std::sync::OnceLock<Option<Arc<Vec<pb::PullChunk>>>>>,
);

fn incarnation(dir: &std::path::Path) -> Result<u64> {
    let path = dir.join("incarnation");
    let prev = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(StoreError::Wal(e)),
    };
    let next = prev + 1;
    let tmp = dir.join("incarnation.tmp");
    std::fs::write(&tmp, next.to_string()).map_err(StoreError::Wal)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::Wal)?;
    std::fs::rename(&tmp, &path).map_err(StoreError::Wal)?;
    Ok(next)
}

impl Shard {
    /// Opens the data directory: restores the latest complete snapshot, replays the log.
    pub async fn open(config: ShardConfig, shutdown: watch::Receiver<bool>) -> Result<Arc<Shard>> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        // Versions of this incarnation start above every version of the previous ones.
        let base_version = incarnation(&config.data_dir)? << 40;
        let snapshots = SnapshotStore::open(
            config.store_url.as_deref(),
            &config.data_dir.join("objects"),
        )?;
        let state = ShardState::new(
            config.shard_index,
            config.shard_count,
            config.sub_shards,
            base_version,
        );
        let mut wal_from = 0;
        let mut last_snapshot = String::new();
        if let Some(id) = snapshots
            .latest(config.shard_index, config.shard_count)
            .await?
        {
            let loaded = snapshots
                .load(&id, Some((config.shard_index, config.shard_count)))
                .await?;
            wal_from = loaded.manifests.first().map_or(0, |m| m.wal_from);
            install(&state, loaded)?;
            tracing::info!(snapshot = %id, wal_from, "restored snapshot");
            last_snapshot = id;
        }
        let (wal, records) = Wal::open(&config.data_dir.join("wal"), wal_from, config.wal_fsync)?;
        let replayed = records.len();
        for rec in records {
            replay(&state, &rec.payload, config.allow_non_finite)?;
        }
        tracing::info!(
            records = replayed,
            jobs = state.jobs().len(),
            "replayed write-ahead log"
        );
        Ok(Arc::new(Shard {
            state,
            wal,
            gate: RwLock::new(()),
            snapshots,
            config,
            shutdown,
            last_snapshot: std::sync::Mutex::new(last_snapshot),
            pull_cache: std::sync::Mutex::new(None),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Registers a job layout; `Ok(false)` when the same layout already exists.
    pub async fn register(&self, req: pb::RegisterRequest) -> Result<bool> {
        let layout = JobLayout::from_request(&req)?;
        validate_inits(&layout, &req.tensors)?;
        let _gate = self.gate.read().await;
        if !self.state.check_register(&layout)? {
            // The same job again (a coordinator starting over): it is not stopping any more.
            self.state.job(&layout.job_id)?.clocks.resume();
            return Ok(false);
        }
        let inits: Vec<_> = req.tensors.iter().map(|t| t.init.clone()).collect();
        self.log(Record::Register(req)).await?;
        self.state.register(layout, &inits)?;
        Ok(true)
    }

    /// A job's layout.
    pub fn layout(&self, job: &str) -> Result<pb::LayoutResponse> {
        Ok(self.state.job(job)?.layout.to_response())
    }

    async fn log(&self, record: Record) -> Result<()> {
        let bytes = pb::WalRecord {
            record: Some(record),
        }
        .encode_to_vec();
        self.wal.append(bytes).await?;
        metrics::gauge!(m::WAL_BYTES).set(self.wal.bytes() as f64);
        Ok(())
    }

    /// Applies a push: validate, deduplicate, log durably, apply.
    pub async fn push(&self, req: pb::PushRequest) -> Result<pb::PushResponse> {
        let job = self.state.job(&req.job_id)?;
        let valid = job.validate_push(&req, self.config.allow_non_finite)?;
        let bytes: usize = req
            .updates
            .iter()
            .map(|u| u.indices.len() + u.values.len())
            .sum();
        let _gate = self.gate.read().await;
        let window = job
            .dedupe
            .get(req.worker as usize)
            .ok_or_else(|| StoreError::invalid("worker"))?;
        // One worker's pushes go one at a time: a retry waits for its original to finish.
        let mut window = window.lock().await;
        if window.seen(req.seq) {
            metrics::counter!(m::PUSH_DUPLICATES).increment(1);
            return Ok(pb::PushResponse {
                version: job.watermark(),
                duplicate: true,
            });
        }
        let (worker, clock, seq) = (req.worker, req.clock, req.seq);
        let record = pb::WalRecord {
            record: Some(Record::Push(req)),
        };
        self.wal.append(record.encode_to_vec()).await?;
        let version = job.apply_push(&valid);
        window.insert(seq);
        drop(window);
        metrics::counter!(m::PUSHES).increment(1);
        metrics::counter!(m::PUSH_BYTES).increment(bytes as u64);
        metrics::gauge!(m::WAL_BYTES).set(self.wal.bytes() as f64);
        let min = job.clocks.min_clock();
        metrics::histogram!(m::STALENESS).record(clock.saturating_sub(min.min(clock)) as f64);
        tracing::trace!(worker, seq, version, "push applied");
        Ok(pb::PushResponse {
            version,
            duplicate: false,
        })
    }

    fn max_wait(&self, ms: u64) -> Duration {
        if ms == 0 {
            self.config.max_clock_wait
        } else {
            Duration::from_millis(ms).min(self.config.max_clock_wait)
        }
    }

    /// Values for a pull, after waiting for the job's synchronization mode when a clock is given.
    pub async fn pull(&self, req: &pb::PullRequest) -> Result<Vec<pb::PullChunk>> {
        let job = self.state.job(&req.job_id)?;
        if let (Some(worker), Some(clock)) = (req.worker, req.clock) {
            let t0 = Instant::now();
            job.clocks
                .wait_for(
                    worker,
                    clock,
                    self.max_wait(req.max_wait_ms),
                    self.shutdown.clone(),
                )
                .await?;
            metrics::histogram!(m::CLOCK_WAIT).record(t0.elapsed().as_secs_f64());
        }
        let chunks = self.pull_cached(&job, req)?;
        let bytes: usize = chunks
            .iter()
            .map(|c| c.values.len() + c.offsets.len())
            .sum();
        metrics::counter!(m::PULLS).increment(1);
        metrics::counter!(m::PULL_BYTES).increment(bytes as u64);
        Ok(chunks)
    }

    /// Workers of a job typically pull "everything since the last round" at the same moment: the
    /// answer for one (job, since) at one watermark is computed once — concurrent callers wait for
    /// the first one's computation instead of repeating it — and reused until a push completes.
    /// Reuse is exact: pushes in flight all have versions above the watermark, so the caller's
    /// next pull (since that watermark) sees them.
    fn pull_cached(
        &self,
        job: &crate::state::JobState,
        req: &pb::PullRequest,
    ) -> Result<Vec<pb::PullChunk>> {
        let except = req.except_worker;
        if let Some(w) = except {
            job.clocks.check_worker(w)?;
        }
        let enc = crate::chunk::value_encoding(req.encoding).map_err(StoreError::invalid)?;
        let Some(since) = req.since_version.filter(|_| req.ranges.is_empty()) else {
            return job.pull(&req.ranges, req.since_version, except, enc);
        };
        let key = (
            job.layout.job_id.clone(),
            since,
            except,
            enc,
            job.watermark(),
        );
        let cell = {
            let mut cache = self
                .pull_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match cache.as_ref() {
                Some((k, cell)) if *k == key => cell.clone(),
                _ => {
                    let cell = Arc::new(std::sync::OnceLock::new());
                    *cache = Some((key.clone(), cell.clone()));
                    cell
                }
            }
        };
        let mut mine = None;
        let cached = cell.get_or_init(|| match job.pull(&[], Some(since), except, enc) {
            // Only an answer whose reported version is the key's watermark may be reused.
            Ok(chunks) if chunks.iter().all(|c| c.version == key.4) => Some(Arc::new(chunks)),
            other => {
                mine = Some(other);
                None
            }
        });
        if let Some(chunks) = cached {
            return Ok(chunks.as_ref().clone());
        }
        let mut cache = self
            .pull_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.as_ref().is_some_and(|(k, _)| *k == key) {
            *cache = None;
        }
        drop(cache);
        // Either this caller's answer could not be shared (a push completed meanwhile), or it
        // waited on such an answer and computes its own.
        mine.unwrap_or_else(|| job.pull(&[], Some(since), except, enc))
    }

    /// Advances a worker's clock (durably) and optionally waits for the synchronization mode.
    pub async fn clock(&self, req: pb::ClockRequest) -> Result<pb::ClockResponse> {
        let job = self.state.job(&req.job_id)?;
        job.clocks.check_worker(req.worker)?;
        let (worker, clock, wait, max_wait) = (req.worker, req.clock, req.wait, req.max_wait_ms);
        {
            let _gate = self.gate.read().await;
            self.log(Record::Clock(req.clone())).await?;
            job.clocks.advance(req.worker, req.clock, req.leave)?;
        }
        let id = job.layout.job_id.clone();
        metrics::gauge!(m::CLOCK, "job" => id.clone(), "stat" => "min")
            .set(job.clocks.min_clock() as f64);
        metrics::gauge!(m::CLOCK, "job" => id, "stat" => "max").set(job.clocks.max_clock() as f64);
        let min_clock = if wait {
            let t0 = Instant::now();
            let waited = job
                .clocks
                .wait_for(
                    worker,
                    clock,
                    self.max_wait(max_wait),
                    self.shutdown.clone(),
                )
                .await;
            metrics::histogram!(m::CLOCK_WAIT).record(t0.elapsed().as_secs_f64());
            match waited {
                Ok(min) => min,
                // The answer says `stopping`: the worker drains and returns.
                Err(StoreError::JobStopping(_)) => job.clocks.min_clock(),
                Err(e) => return Err(e),
            }
        } else {
            job.clocks.min_clock()
        };
        Ok(pb::ClockResponse {
            min_clock,
            stopping: job.clocks.is_stopping(),
        })
    }

    /// Asks a job's workers to finish: clock answers say `stopping` from now on.
    pub fn stop_job(&self, req: &pb::StopRequest) -> Result<pb::StopResponse> {
        let job = self.state.job(&req.job_id)?;
        job.clocks.stop();
        tracing::info!(job = %req.job_id, "job asked to stop");
        Ok(pb::StopResponse {})
    }

    /// Writes a snapshot and truncates the log; returns its id and size.
    pub async fn snapshot(&self, id: Option<String>) -> Result<pb::SnapshotResponse> {
        let id = match id {
            Some(id) => {
                validate_snapshot_id(&id)?;
                id
            }
            None => new_snapshot_id(),
        };
        let t0 = Instant::now();
        let (mut manifest, chunks) = {
            let _gate = self.gate.write().await;
            self.capture(&id).await?
        };
        let bytes = self.snapshots.write(&mut manifest, &chunks).await?;
        self.wal.remove_before(manifest.wal_from)?;
        metrics::gauge!(m::SNAPSHOT_BYTES).set(bytes as f64);
        metrics::gauge!(m::WAL_BYTES).set(self.wal.bytes() as f64);
        metrics::histogram!(m::SNAPSHOT_DURATION).record(t0.elapsed().as_secs_f64());
        *self
            .last_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id.clone();
        tracing::info!(snapshot = %id, bytes, "snapshot written");
        Ok(pb::SnapshotResponse {
            snapshot_id: id,
            bytes,
        })
    }

    /// Rotates the log and copies the state; the caller holds the gate exclusively.
    async fn capture(&self, id: &str) -> Result<(Manifest, Vec<crate::snapshot::LoadedChunk>)> {
        let wal_from = self.wal.rotate().await?;
        let mut jobs = Vec::new();
        let mut chunks = Vec::new();
        for job in self.state.jobs() {
            let l = &job.layout;
            let mut dedupe = Vec::with_capacity(job.dedupe.len());
            for w in &job.dedupe {
                dedupe.push(w.lock().await.clone());
            }
            jobs.push(JobManifest {
                job_id: l.job_id.clone(),
                tensors: l
                    .tensors
                    .iter()
                    .map(|t| (t.name.clone(), t.shape.clone()))
                    .collect(),
                sync: l.sync.to_string(),
                workers: l.workers,
                chunk_size: l.chunk_size,
                clocks: job.clocks.snapshot(),
                dedupe,
            });
            for (t, start, values) in job.export_chunks() {
                let name = l.tensors.get(t).map_or(String::new(), |m| m.name.clone());
                chunks.push((l.job_id.clone(), name, start, values));
            }
        }
        let manifest = Manifest {
            snapshot_id: id.to_owned(),
            shard_index: self.state.shard_index,
            shard_count: self.state.shard_count,
            wal_from,
            jobs,
            data_bytes: 0,
        };
        Ok((manifest, chunks))
    }

    /// Replaces the state by snapshot `id` (any shard count), then snapshots it as this shard's own.
    pub async fn restore(&self, id: &str) -> Result<pb::RestoreResponse> {
        let loaded = self.snapshots.load(id, None).await?;
        let own_id = format!(
            "{}-restored-{}",
            id.chars().take(64).collect::<String>(),
            new_snapshot_id()
        );
        let (mut manifest, chunks, jobs) = {
            let _gate = self.gate.write().await;
            let fresh = ShardState::new(
                self.state.shard_index,
                self.state.shard_count,
                self.state.sub_shards,
                self.state.base_version,
            );
            install(&fresh, loaded)?;
            let jobs = fresh.jobs();
            let n = jobs.len() as u64;
            self.state.replace_all(jobs);
            *self
                .pull_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            let (m, c) = self.capture(&own_id).await?;
            (m, c, n)
        };
        self.snapshots.write(&mut manifest, &chunks).await?;
        self.wal.remove_before(manifest.wal_from)?;
        *self
            .last_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = own_id;
        Ok(pb::RestoreResponse { jobs })
    }

    /// Shard identity and counters.
    pub fn stats(&self) -> pb::StatsResponse {
        let jobs = self
            .state
            .jobs()
            .iter()
            .map(|j| {
                let (chunks, elements) = j.sizes();
                pb::JobStats {
                    job_id: j.layout.job_id.clone(),
                    version: j.watermark(),
                    min_clock: j.clocks.min_clock(),
                    max_clock: j.clocks.max_clock(),
                    pushes: j.pushes.load(Ordering::Relaxed),
                    chunks,
                    elements,
                }
            })
            .collect();
        pb::StatsResponse {
            shard_index: self.state.shard_index,
            shard_count: self.state.shard_count,
            jobs,
            wal_bytes: self.wal.bytes(),
            last_snapshot: self
                .last_snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            max_message_bytes: self.config.max_message_bytes as u64,
        }
    }

    /// Bytes in the write-ahead log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes()
    }
}

/// A sortable id from the wall clock.
pub fn new_snapshot_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:020}")
}

/// Builds the jobs of a loaded snapshot into `state`, keeping only the chunks `state` owns.
fn install(state: &ShardState, loaded: crate::snapshot::Loaded) -> Result<()> {
    for manifest in &loaded.manifests {
        for jm in &manifest.jobs {
            let layout = JobLayout::new(
                &jm.job_id,
                jm.tensors.clone(),
                &jm.sync,
                jm.workers,
                jm.chunk_size,
            )?;
            let job = state.register(layout, &[])?;
            job.clocks.restore(&jm.clocks);
            // Parts of a re-chunked snapshot each saw part of a worker's pushes: merge them.
            for (dst, src) in job.dedupe.iter().zip(&jm.dedupe) {
                let mut d = dst
                    .try_lock()
                    .map_err(|_| StoreError::invalid("dedupe window busy during restore"))?;
                for &s in &src.recent {
                    d.insert(s);
                }
                if src.any {
                    d.insert(src.high);
                }
            }
        }
    }
    for ((job_id, tensor), parts) in by_tensor(loaded.chunks) {
        let job = state.job(&job_id)?;
        let t = job.layout.tensor_index(&tensor)?;
        for (start, values) in parts {
            job.import_range(t, start, &values);
        }
    }
    Ok(())
}

/// Applies one log record during start-up.
fn replay(state: &ShardState, payload: &[u8], allow_non_finite: bool) -> Result<()> {
    let rec = pb::WalRecord::decode(payload).map_err(|e| StoreError::CorruptWal {
        path: "wal".into(),
        offset: 0,
        reason: e.to_string(),
    })?;
    match rec.record {
        Some(Record::Register(req)) => {
            let layout = JobLayout::from_request(&req)?;
            let inits: Vec<_> = req.tensors.iter().map(|t| t.init.clone()).collect();
            state.register(layout, &inits)?;
        }
        Some(Record::Push(req)) => {
            let job = state.job(&req.job_id)?;
            let valid = job.validate_push(&req, allow_non_finite)?;
            let Some(window) = job.dedupe.get(req.worker as usize) else {
                return Ok(());
            };
            let mut window = window
                .try_lock()
                .map_err(|_| StoreError::invalid("dedupe window busy during replay"))?;
            if !window.seen(req.seq) {
                job.apply_push(&valid);
                window.insert(req.seq);
            }
        }
        Some(Record::Clock(req)) => {
            state
                .job(&req.job_id)?
                .clocks
                .advance(req.worker, req.clock, req.leave)?;
        }
        None => {}
    }
    Ok(())
}
