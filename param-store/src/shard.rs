//! One shard as a service core: the in-memory [`ShardState`] behind the write-ahead log and the
//! snapshot store. Every mutation is logged (and durable) before it is applied; a snapshot holds
//! the gate exclusively just long enough to rotate the log and copy the chunks.
//!
//! A job's life: [`Shard::register`] creates it (refusing an id the shard holds, and a layout
//! over the limits, before anything is logged or allocated), [`Shard::resume`] continues it on
//! purpose, [`Shard::unregister`] forgets it (logged). Start-up is [`crate::recovery`].
//!
//! Transport-agnostic: [`crate::grpc`] translates requests and errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cumulus_proto::paramstore::v1 as pb;
use pb::wal_record::Record;
use prost::Message;
use tokio::sync::{RwLock, watch};

use crate::config::ShardConfig;
use crate::error::{Result, StoreError};
use crate::init::validate_inits;
use crate::layout::JobLayout;
use crate::limits::Limits;
use crate::metrics as m;
use crate::recovery::{Base, install, recover, request_digest};
use crate::snapshot::{
    Fallback, JobManifest, Manifest, SavedChunk, SnapshotStore, validate_snapshot_id,
};
use crate::state::{JobMeta, JobState, ShardState};
use crate::wal::Wal;

/// A running shard's core.
#[derive(Debug)]
pub struct Shard {
    state: ShardState,
    wal: Wal,
    /// Pushes, clocks and registrations hold it shared across "log, then apply"; a snapshot holds
    /// it exclusively, so its copy reflects exactly the records in the segments it retires.
    gate: RwLock<()>,
    /// Registrations, resumptions, unregistrations and restores go one at a time, so that a
    /// check ("is this id held? does it fit?") still holds when its record is logged.
    admin: tokio::sync::Mutex<()>,
    /// One snapshot (or restore) at a time: each moves `base` and retires log segments.
    snapshotting: tokio::sync::Mutex<()>,
    limits: Limits,
    snapshots: SnapshotStore,
    config: ShardConfig,
    shutdown: watch::Receiver<bool>,
    last_snapshot: std::sync::Mutex<String>,
    /// What the log replays onto now; what the next snapshot falls back to.
    base: std::sync::Mutex<Base>,
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
    /// Opens the data directory: restores the newest usable snapshot and replays the log (see
    /// [`crate::recovery`]).
    pub async fn open(config: ShardConfig, shutdown: watch::Receiver<bool>) -> Result<Arc<Shard>> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        // Versions of this incarnation start above every version of the previous ones.
        let base_version = incarnation(&config.data_dir)? << 40;
        let snapshots = SnapshotStore::open(
            config.store_url.as_deref(),
            &config.data_dir.join("objects"),
        )?;
        let recovered = recover(&config, &snapshots, base_version).await?;
        let state = recovered.state;
        tracing::info!(
            records = recovered.log.records,
            jobs = state.jobs().len(),
            held_bytes = state.held_bytes(),
            "replayed write-ahead log"
        );
        if !recovered.skipped.is_empty() {
            tracing::error!(jobs = ?recovered.skipped, "salvage left these jobs out (over this shard's limits)");
        }
        let last_snapshot = match &recovered.base.source {
            Fallback::Snapshot(id) => id.clone(),
            _ => String::new(),
        };
        Ok(Arc::new(Shard {
            state,
            wal: recovered.wal,
            gate: RwLock::new(()),
            admin: tokio::sync::Mutex::new(()),
            snapshotting: tokio::sync::Mutex::new(()),
            limits: Limits::of(&config),
            snapshots,
            config,
            shutdown,
            last_snapshot: std::sync::Mutex::new(last_snapshot),
            base: std::sync::Mutex::new(recovered.base),
            pull_cache: std::sync::Mutex::new(None),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Registers a new job. An id this shard holds is refused ([`StoreError::JobExists`], or
    /// [`StoreError::LayoutConflict`] for another layout), except the very same request while the
    /// job is untouched (a retry of this registration): `created = false`. A layout over the
    /// limits is refused before it is logged, so a restart never replays it.
    pub async fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        self.register_or_resume(req, false).await
    }

    /// Continues a job this shard holds with the same layout (clocks and de-duplication windows
    /// kept, its stopping flag cleared; `pushes` says what it holds), or registers it as
    /// [`Shard::register`] does when the shard does not hold it (`created = true`).
    pub async fn resume(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        self.register_or_resume(req, true).await
    }

    async fn register_or_resume(
        &self,
        req: pb::RegisterRequest,
        resume: bool,
    ) -> Result<pb::RegisterResponse> {
        let layout = JobLayout::from_request(&req)?;
        validate_inits(&layout, &req.tensors)?;
        let digest = request_digest(&req);
        let _admin = self.admin.lock().await;
        if let Some(existing) = self.state.find(&layout.job_id) {
            let pushes = existing.push_count();
            if !existing.layout.same_as(&layout) {
                return Err(StoreError::LayoutConflict(layout.job_id));
            }
            if resume {
                existing.clocks.resume();
                tracing::info!(job = %layout.job_id, pushes, "job resumed");
                return Ok(pb::RegisterResponse {
                    created: false,
                    pushes,
                });
            }
            if existing.untouched() && existing.meta.digest == Some(digest) {
                return Ok(pb::RegisterResponse {
                    created: false,
                    pushes,
                });
            }
            return Err(StoreError::JobExists {
                job: layout.job_id,
                pushes,
            });
        }
        let footprint = self.limits.admit(&layout, self.state.held_bytes())?;
        let meta = JobMeta {
            digest: Some(digest),
            bytes: footprint.bytes,
        };
        let inits: Vec<_> = req.tensors.iter().map(|t| t.init.clone()).collect();
        let _gate = self.gate.read().await;
        self.log(Record::Register(req)).await?;
        self.state.register(layout, &inits, meta)?;
        metrics::gauge!(m::HELD_BYTES).set(self.state.held_bytes() as f64);
        Ok(pb::RegisterResponse {
            created: true,
            pushes: 0,
        })
    }

    /// Forgets a job (logged): its memory is freed and its id may be registered anew. Waiting
    /// pulls and clocks of it end as if it were stopped; pushes in flight are refused.
    pub async fn unregister(&self, req: pb::UnregisterRequest) -> Result<pb::UnregisterResponse> {
        let _admin = self.admin.lock().await;
        let Some(job) = self.state.find(&req.job_id) else {
            return Ok(pb::UnregisterResponse {
                existed: false,
                pushes: 0,
            });
        };
        let id = req.job_id.clone();
        {
            // Exclusive: no push of the job is between "logged" and "applied" now, and none logs
            // after the unregistration (each re-checks its job under the gate).
            let _gate = self.gate.write().await;
            self.log(Record::Unregister(req)).await?;
            self.state.remove(&id);
            *self
                .pull_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        job.clocks.stop();
        metrics::gauge!(m::HELD_BYTES).set(self.state.held_bytes() as f64);
        let pushes = job.push_count();
        tracing::info!(job = %id, pushes, "job unregistered");
        Ok(pb::UnregisterResponse {
            existed: true,
            pushes,
        })
    }

    /// Refuses a record for `job` when the job was unregistered (or replaced) since the caller
    /// looked it up; called under the gate, so the answer holds until the record is logged.
    fn still_registered(&self, job: &Arc<JobState>) -> Result<()> {
        match self.state.find(&job.layout.job_id) {
            Some(current) if Arc::ptr_eq(&current, job) => Ok(()),
            _ => Err(StoreError::UnknownJob(job.layout.job_id.clone())),
        }
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
        self.still_registered(&job)?;
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
    fn pull_cached(&self, job: &JobState, req: &pb::PullRequest) -> Result<Vec<pb::PullChunk>> {
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
            self.still_registered(&job)?;
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
        let _one = self.snapshotting.lock().await;
        let (mut manifest, chunks) = {
            let _gate = self.gate.write().await;
            self.capture(&id).await?
        };
        let base = self.base().clone();
        let bytes = self
            .snapshots
            .write(&mut manifest, chunks, base.source.clone())
            .await?;
        // The segments since the base stay until the next snapshot: they are what recovery
        // replays onto the base should this new snapshot turn out damaged.
        self.wal.remove_before(base.wal_from)?;
        *self.base() = Base {
            source: Fallback::Snapshot(id.clone()),
            wal_from: manifest.wal_from,
        };
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

    fn base(&self) -> std::sync::MutexGuard<'_, Base> {
        self.base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rotates the log and copies the state; the caller holds the gate exclusively.
    async fn capture(&self, id: &str) -> Result<(Manifest, Vec<SavedChunk>)> {
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
                digest: job.meta.digest,
                pushes: job.push_count(),
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
            data_crc32: None,
        };
        Ok((manifest, chunks))
    }

    /// Replaces the state by snapshot `id` (any shard count), then snapshots it as this shard's own.
    /// The restored state is held to this shard's limits.
    pub async fn restore(&self, id: &str) -> Result<pb::RestoreResponse> {
        let loaded = self.snapshots.load(id, None).await?;
        let own_id = format!(
            "{}-restored-{}",
            id.chars().take(64).collect::<String>(),
            new_snapshot_id()
        );
        let _admin = self.admin.lock().await;
        let _one = self.snapshotting.lock().await;
        let (mut manifest, chunks, jobs) = {
            let _gate = self.gate.write().await;
            let fresh = ShardState::new(
                self.state.shard_index,
                self.state.shard_count,
                self.state.sub_shards,
                self.state.base_version,
            );
            install(&fresh, &self.limits, loaded, false, &mut Default::default())?;
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
        // The log before the restore does not lead to the restored state: nothing to fall back to.
        self.snapshots
            .write(&mut manifest, chunks, Fallback::None)
            .await?;
        self.wal.remove_before(manifest.wal_from)?;
        *self.base() = Base {
            source: Fallback::Snapshot(own_id.clone()),
            wal_from: manifest.wal_from,
        };
        *self
            .last_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = own_id;
        metrics::gauge!(m::HELD_BYTES).set(self.state.held_bytes() as f64);
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
                    pushes: j.push_count(),
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

    /// Bytes in the write-ahead log, every segment kept.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes()
    }

    /// Bytes of the log the newest snapshot does not cover (what the next one would retire).
    pub fn wal_bytes_since_snapshot(&self) -> u64 {
        let from = self.base().wal_from;
        self.wal.bytes_since(from)
    }

    /// Estimated bytes of the jobs this shard holds, and its limit.
    pub fn held_bytes(&self) -> (u64, u64) {
        (self.state.held_bytes(), self.limits.max_shard_bytes)
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
