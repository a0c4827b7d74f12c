//! Start-up of a shard: pick the snapshot to start from, verify and install it, replay the
//! write-ahead log onto it. Damage is noticed, never silently repaired:
//!
//! - the newest snapshot failing its checksums (or missing a part) falls back to what the shard
//!   ran from when it wrote that snapshot — an older snapshot, or the empty state — plus the log
//!   since, which the shard keeps until its next snapshot; with nothing to fall back to, start-up
//!   is refused naming the file;
//! - a damaged log is refused with its file and byte offset, unless `salvage` (see [`crate::wal`]);
//! - a logged registration (or a snapshot's job) over this shard's limits is refused naming the
//!   record, instead of being allocated: a data directory written with larger limits cannot abort
//!   the process on every restart. With `salvage` such a job is skipped, with all its records.

use std::collections::HashSet;

use cumulus_proto::paramstore::v1 as pb;
use pb::wal_record::Record;
use prost::Message;

use crate::config::ShardConfig;
use crate::error::{Result, StoreError};
use crate::layout::JobLayout;
use crate::limits::Limits;
use crate::snapshot::{Fallback, Loaded, SnapshotStore, by_tensor};
use crate::state::{JobMeta, ShardState};
use crate::wal::{Recovery, Replayed, Wal};

/// The state a shard's log replays onto: a snapshot (or the empty state) and the first log
/// segment after it. It is also what the shard's next snapshot falls back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// A snapshot id, or the empty state; never [`Fallback::None`].
    pub source: Fallback,
    /// First log segment it does not cover.
    pub wal_from: u64,
}

/// A shard's state after start-up.
#[derive(Debug)]
pub struct Recovered {
    /// The jobs.
    pub state: ShardState,
    /// The log, ready for appends.
    pub wal: Wal,
    /// What the log replayed onto.
    pub base: Base,
    /// What reading the log found (torn tail, salvage).
    pub log: Recovery,
    /// Jobs left out by salvage (over the limits).
    pub skipped: Vec<String>,
}

/// The digest a job keeps of its registration request: the same request again is a retry.
pub fn request_digest(req: &pb::RegisterRequest) -> u64 {
    let bytes = req.encode_to_vec();
    (u64::from(crc32fast::hash(&bytes)) << 32) | (bytes.len() as u64 & 0xffff_ffff)
}

/// Restores the newest usable snapshot and replays the log.
pub async fn recover(
    config: &ShardConfig,
    snapshots: &SnapshotStore,
    base_version: u64,
) -> Result<Recovered> {
    let (i, n) = (config.shard_index, config.shard_count);
    let limits = Limits::of(config);
    let state = ShardState::new(i, n, config.sub_shards, base_version);
    let mut skipped = HashSet::new();
    let base = match snapshots.latest(i, n).await? {
        None => Base {
            source: Fallback::Empty,
            wal_from: 0,
        },
        Some(pointer) => match snapshots.load(&pointer.newest, Some((i, n))).await {
            Ok(loaded) => {
                let wal_from = loaded.manifests.first().map_or(0, |m| m.wal_from);
                install(&state, &limits, loaded, config.salvage, &mut skipped)?;
                tracing::info!(snapshot = %pointer.newest, wal_from, "restored snapshot");
                Base {
                    source: Fallback::Snapshot(pointer.newest),
                    wal_from,
                }
            }
            Err(damage @ (StoreError::CorruptSnapshot { .. } | StoreError::UnknownSnapshot(_))) => {
                tracing::error!(
                    snapshot = %pointer.newest,
                    error = %damage,
                    fallback = ?pointer.fallback,
                    "the newest snapshot is damaged; falling back to the state it was taken from plus the log since"
                );
                let refuse = |why: String| StoreError::Recovery {
                    what: damage.to_string(),
                    reason: format!("{why}; refusing to start"),
                };
                match &pointer.fallback {
                    Fallback::Snapshot(older) => {
                        let loaded = snapshots.load(older, Some((i, n))).await.map_err(|e| {
                            refuse(format!(
                                "its fallback, snapshot '{older}', is unusable too: {e}"
                            ))
                        })?;
                        let wal_from = loaded.manifests.first().map_or(0, |m| m.wal_from);
                        install(&state, &limits, loaded, config.salvage, &mut skipped)?;
                        tracing::warn!(snapshot = %older, wal_from, "restored the older snapshot");
                        Base {
                            source: Fallback::Snapshot(older.clone()),
                            wal_from,
                        }
                    }
                    Fallback::Empty => Base {
                        source: Fallback::Empty,
                        wal_from: 0,
                    },
                    Fallback::None => {
                        return Err(refuse(
                            "there is no older complete snapshot to fall back to".into(),
                        ));
                    }
                }
            }
            Err(e) => return Err(e),
        },
    };
    let (wal, log) = Wal::open(
        &config.data_dir.join("wal"),
        base.wal_from,
        config.wal_fsync,
        config.salvage,
        |rec| {
            replay(
                &state,
                &limits,
                &rec,
                config.allow_non_finite,
                config.salvage,
                &mut skipped,
            )
        },
    )?;
    let mut skipped: Vec<_> = skipped.into_iter().collect();
    skipped.sort();
    Ok(Recovered {
        state,
        wal,
        base,
        log,
        skipped,
    })
}

/// Builds the jobs of a loaded snapshot into `state`, keeping only the chunks `state` owns; each
/// job is held to `limits` first.
pub fn install(
    state: &ShardState,
    limits: &Limits,
    loaded: Loaded,
    salvage: bool,
    skipped: &mut HashSet<String>,
) -> Result<()> {
    for manifest in &loaded.manifests {
        for jm in &manifest.jobs {
            if skipped.contains(&jm.job_id) {
                continue;
            }
            if let Some(job) = state.find(&jm.job_id) {
                // Parts of a re-chunked snapshot each list every job (and count the pushes that
                // reached their shard).
                job.pushes
                    .fetch_max(jm.pushes, std::sync::atomic::Ordering::Relaxed);
                merge_windows(&job, &jm.dedupe)?;
                continue;
            }
            let layout = JobLayout::new(
                &jm.job_id,
                jm.tensors.clone(),
                &jm.sync,
                jm.workers,
                jm.chunk_size,
            )?;
            let footprint = match limits.admit(&layout, state.held_bytes()) {
                Ok(f) => f,
                Err(e) if salvage => {
                    tracing::error!(job = %jm.job_id, snapshot = %manifest.snapshot_id, error = %e, "salvage: skipping a job over this shard's limits");
                    skipped.insert(jm.job_id.clone());
                    continue;
                }
                Err(e) => {
                    return Err(StoreError::Recovery {
                        what: format!("snapshot '{}'", manifest.snapshot_id),
                        reason: format!(
                            "{e}; raise the limit, or start with --salvage to leave the job out"
                        ),
                    });
                }
            };
            let meta = JobMeta {
                digest: jm.digest,
                bytes: footprint.bytes,
            };
            let job = state.register(layout, &[], meta)?;
            job.clocks.restore(&jm.clocks);
            job.pushes
                .fetch_add(jm.pushes, std::sync::atomic::Ordering::Relaxed);
            merge_windows(&job, &jm.dedupe)?;
        }
    }
    for ((job_id, tensor), parts) in by_tensor(loaded.chunks) {
        if skipped.contains(&job_id) {
            continue;
        }
        let job = state.job(&job_id)?;
        let t = job.layout.tensor_index(&tensor)?;
        for (start, values) in parts {
            job.import_range(t, start, &values);
        }
    }
    Ok(())
}

/// Parts of a re-chunked snapshot each saw part of a worker's pushes: merge their windows.
fn merge_windows(job: &crate::state::JobState, windows: &[crate::state::SeqWindow]) -> Result<()> {
    for (dst, src) in job.dedupe.iter().zip(windows) {
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
    Ok(())
}

/// Applies one log record during start-up; an error names the record.
fn replay(
    state: &ShardState,
    limits: &Limits,
    rec: &Replayed<'_>,
    allow_non_finite: bool,
    salvage: bool,
    skipped: &mut HashSet<String>,
) -> Result<()> {
    let at = || {
        format!(
            "write-ahead log {} (byte {})",
            rec.path.display(),
            rec.offset
        )
    };
    let fail = |e: StoreError| StoreError::Recovery {
        what: at(),
        reason: e.to_string(),
    };
    let rec_msg = pb::WalRecord::decode(rec.payload).map_err(|e| StoreError::CorruptWal {
        path: rec.path.display().to_string(),
        offset: rec.offset,
        reason: format!("the record passes its checksum but does not decode: {e}"),
    })?;
    match rec_msg.record {
        Some(Record::Register(req)) => {
            if state.find(&req.job_id).is_some() {
                // Logs written before registrations were serialized may hold a duplicate.
                return Ok(());
            }
            skipped.remove(&req.job_id);
            let layout = JobLayout::from_request(&req).map_err(fail)?;
            let footprint = match limits.admit(&layout, state.held_bytes()) {
                Ok(f) => f,
                Err(e) if salvage => {
                    tracing::error!(job = %req.job_id, record = %at(), error = %e, "salvage: skipping a logged job over this shard's limits, and every record of it");
                    skipped.insert(req.job_id.clone());
                    return Ok(());
                }
                Err(e) => {
                    return Err(StoreError::Recovery {
                        what: at(),
                        reason: format!(
                            "the logged registration of job '{}' is over this shard's limits: {e}; raise the limit, or start with --salvage to leave the job out",
                            req.job_id
                        ),
                    });
                }
            };
            let meta = JobMeta {
                digest: Some(request_digest(&req)),
                bytes: footprint.bytes,
            };
            let inits: Vec<_> = req.tensors.iter().map(|t| t.init.clone()).collect();
            state.register(layout, &inits, meta).map_err(fail)?;
        }
        Some(Record::Push(req)) => {
            if skipped.contains(&req.job_id) {
                return Ok(());
            }
            let job = state.job(&req.job_id).map_err(fail)?;
            let valid = job.validate_push(&req, allow_non_finite).map_err(fail)?;
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
            if skipped.contains(&req.job_id) {
                return Ok(());
            }
            state
                .job(&req.job_id)
                .and_then(|j| j.clocks.advance(req.worker, req.clock, req.leave))
                .map_err(fail)?;
        }
        Some(Record::Unregister(req)) => {
            skipped.remove(&req.job_id);
            state.remove(&req.job_id);
        }
        None => {}
    }
    Ok(())
}
