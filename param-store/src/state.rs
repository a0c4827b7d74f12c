//! The in-memory state of one shard: jobs, their chunks behind one lock per sub-shard, versions,
//! clocks and the per-worker deduplication windows. No transport, no durability: [`crate::shard`]
//! puts the write-ahead log in front of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use cumulus_proto::paramstore::v1 as pb;

pub use crate::chunk::Chunk;
use crate::chunk::{ValueEncoding, decode_indices, decode_values, put_values};
use crate::clock::ClockTable;
use crate::error::{Result, StoreError};
use crate::init::fill_initial;
use crate::layout::{JobLayout, chunk_owner, chunk_sub_shard};

/// How many recent sequence numbers per worker are remembered exactly; older ones count as seen.
pub const DEDUPE_WINDOW: u64 = 4096;

/// One lock's worth of chunks (PERSIA's sharded holder, indexed by checked lookups).
#[derive(Debug, Default)]
pub struct SubShard {
    /// Chunks in insertion order; [`JobState`] maps (tensor, chunk) to a position here.
    pub chunks: Vec<Chunk>,
}

/// Sequence numbers already applied for one worker.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SeqWindow {
    /// Highest applied sequence number.
    pub high: u64,
    /// Applied sequence numbers in `(high - DEDUPE_WINDOW, high]`.
    pub recent: BTreeSet<u64>,
    /// Whether any push was applied.
    pub any: bool,
}

impl SeqWindow {
    /// True when `seq` was applied (or is too old to tell, which counts as applied).
    pub fn seen(&self, seq: u64) -> bool {
        self.any && (self.recent.contains(&seq) || seq.saturating_add(DEDUPE_WINDOW) <= self.high)
    }

    /// Records `seq` as applied.
    pub fn insert(&mut self, seq: u64) {
        self.any = true;
        self.high = self.high.max(seq);
        self.recent.insert(seq);
        let floor = self.high.saturating_sub(DEDUPE_WINDOW);
        while self.recent.first().is_some_and(|&s| s <= floor) {
            self.recent.pop_first();
        }
    }
}

/// Tracks versions handed to in-flight pushes, so that a pull can report a version at which every
/// push at or below it is completely applied.
#[derive(Debug, Default)]
struct Versions {
    next: u64,
    in_flight: BTreeSet<u64>,
}

/// What a shard knows about a job besides its layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobMeta {
    /// Digest of the registration request (layout and initializers): the same request again, on
    /// a job nothing has touched yet, is a retry of that registration. `None` for jobs restored
    /// from snapshots written before digests were kept.
    pub digest: Option<u64>,
    /// Estimated bytes the job holds on this shard ([`crate::limits::JobFootprint`]).
    pub bytes: u64,
}

/// One registered job on one shard.
#[derive(Debug)]
pub struct JobState {
    /// Its registration digest and footprint.
    pub meta: JobMeta,
    /// The validated layout (every shard holds all of it).
    pub layout: JobLayout,
    /// Worker clocks.
    pub clocks: ClockTable,
    /// (sub-shard, position) of each owned chunk, per tensor, per chunk; `None`: another shard's.
    slots: Vec<Vec<Option<(usize, usize)>>>,
    subs: Vec<Mutex<SubShard>>,
    versions: Mutex<Versions>,
    /// Per-worker deduplication windows; the async lock also serializes one worker's pushes.
    pub dedupe: Vec<tokio::sync::Mutex<SeqWindow>>,
    /// Pushes applied (not counting duplicates).
    pub pushes: AtomicU64,
    shard_count: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Chunk updates are element-wise adds: a panic mid-update cannot break an invariant that later
    // readers rely on, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One tensor's part of a validated push, decoded.
#[derive(Debug)]
pub struct ValidUpdate {
    tensor: usize,
    dense_start: Option<u64>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// A push checked against the layout, ready to apply.
#[derive(Debug)]
pub struct ValidPush {
    worker: u32,
    updates: Vec<ValidUpdate>,
}

/// Adds one run of a sparse push (indices all inside `chunk`) and logs the changes.
fn add_run(chunk: &mut Chunk, indices: &[u32], values: &[f32], version: u64, worker: u32) {
    let base = chunk.start;
    // A run touching much of the chunk replaces its log instead of flooding it.
    let logged = indices.len() <= chunk.batch_limit();
    let mut offsets = Vec::with_capacity(if logged { indices.len() } else { 0 });
    for (&idx, &val) in indices.iter().zip(values) {
        let off = (u64::from(idx) - base) as usize;
        if let Some(x) = chunk.values.get_mut(off) {
            *x += val;
            if logged {
                offsets.push(off as u32);
            }
        }
    }
    if logged {
        chunk.log_batch(version, worker, offsets);
    } else {
        chunk.reset_log(version);
    }
}

impl JobState {
    /// Creates the chunks this shard owns, filled by their initializers.
    pub fn new(
        layout: JobLayout,
        inits: &[Option<pb::Initializer>],
        meta: JobMeta,
        shard: &ShardState,
    ) -> Result<Self> {
        let (shard_index, shard_count, sub_shards, base_version) = (
            shard.shard_index,
            shard.shard_count,
            shard.sub_shards,
            shard.base_version,
        );
        let subs_n = sub_shards.max(1);
        let mut subs: Vec<SubShard> = (0..subs_n).map(|_| SubShard::default()).collect();
        let mut slots = Vec::with_capacity(layout.tensors.len());
        for (t, meta) in layout.tensors.iter().enumerate() {
            let n = layout.chunk_count(t);
            let mut tslots = Vec::with_capacity(n as usize);
            for c in 0..n {
                if chunk_owner(&layout.job_id, &meta.name, c, shard_count) != shard_index {
                    tslots.push(None);
                    continue;
                }
                let (start, end) = layout.chunk_range(t, c);
                let values = fill_initial(
                    &layout.job_id,
                    meta,
                    inits.get(t).and_then(Option::as_ref),
                    c,
                    start,
                    end,
                )?;
                let s = chunk_sub_shard(&layout.job_id, &meta.name, c, shard_count, subs_n);
                let sub = subs
                    .get_mut(s)
                    .ok_or_else(|| StoreError::invalid("sub-shard index"))?;
                tslots.push(Some((s, sub.chunks.len())));
                sub.chunks.push(Chunk::new(
                    u32::try_from(t).unwrap_or(u32::MAX),
                    c,
                    start,
                    values,
                    base_version,
                ));
            }
            slots.push(tslots);
        }
        let clocks = ClockTable::new(&layout.job_id, layout.sync, layout.workers);
        let dedupe = (0..layout.workers)
            .map(|_| tokio::sync::Mutex::default())
            .collect();
        Ok(Self {
            meta,
            layout,
            clocks,
            slots,
            subs: subs.into_iter().map(Mutex::new).collect(),
            versions: Mutex::new(Versions {
                next: base_version,
                in_flight: BTreeSet::new(),
            }),
            dedupe,
            pushes: AtomicU64::new(0),
            shard_count,
        })
    }

    fn slot(&self, t: usize, c: u64) -> Option<(usize, usize)> {
        let c = usize::try_from(c).ok()?;
        self.slots.get(t)?.get(c).copied().flatten()
    }

    fn owner_of(&self, t: usize, c: u64) -> u32 {
        let name = self.layout.tensors.get(t).map_or("", |m| m.name.as_str());
        chunk_owner(
            &self.layout.job_id,
            name,
            u32::try_from(c).unwrap_or(u32::MAX),
            self.shard_count,
        )
    }

    /// The version at which every push at or below it is completely applied.
    pub fn watermark(&self) -> u64 {
        let v = lock(&self.versions);
        v.in_flight.first().map_or(v.next, |&f| f.saturating_sub(1))
    }

    /// Checks a push against the layout before anything is applied (on error nothing changes)
    /// and decodes it for [`Self::apply_push`].
    pub fn validate_push(
        &self,
        req: &pb::PushRequest,
        allow_non_finite: bool,
    ) -> Result<ValidPush> {
        self.clocks.check_worker(req.worker)?;
        let job = &self.layout.job_id;
        let cs = u64::from(self.layout.chunk_size);
        let mut out = ValidPush {
            worker: req.worker,
            updates: Vec::with_capacity(req.updates.len()),
        };
        for u in &req.updates {
            let t = self.layout.tensor_index(&u.tensor)?;
            let len = self.layout.tensors.get(t).map_or(0, |m| m.len);
            let name = &u.tensor;
            let malformed = |reason: String| {
                StoreError::invalid(format!("job '{job}' tensor '{name}': {reason}"))
            };
            let values = decode_values(&u.values, u.encoding, "values").map_err(malformed)?;
            let indices = decode_indices(u).map_err(malformed)?;
            if !allow_non_finite && let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(StoreError::invalid(format!(
                    "job '{job}' tensor '{name}': value #{i} is {} (NaN and infinite values are refused)",
                    values.get(i).copied().unwrap_or(f32::NAN)
                )));
            }
            let not_owned = |idx: u64| {
                StoreError::invalid(format!(
                    "job '{job}' tensor '{name}': index {idx} belongs to shard {} of {}, not this one (client and shards disagree on the shard count?)",
                    self.owner_of(t, idx / cs),
                    self.shard_count
                ))
            };
            if let Some(start) = u.dense_start {
                if !indices.is_empty() {
                    return Err(StoreError::invalid(format!(
                        "job '{job}' tensor '{name}': a dense update carries no indices"
                    )));
                }
                let end = start.checked_add(values.len() as u64).filter(|&e| e <= len);
                let Some(end) = end else {
                    return Err(StoreError::invalid(format!(
                        "job '{job}' tensor '{name}': dense range {start}..{start}+{} is out of range (length {len})",
                        values.len()
                    )));
                };
                let mut c = start / cs;
                while c * cs < end {
                    if self.slot(t, c).is_none() {
                        return Err(not_owned(c * cs));
                    }
                    c += 1;
                }
            } else {
                if indices.len() != values.len() {
                    return Err(StoreError::invalid(format!(
                        "job '{job}' tensor '{name}': {} indices but {} values",
                        indices.len(),
                        values.len()
                    )));
                }
                let mut last_chunk = u64::MAX;
                for &idx in &indices {
                    let idx = u64::from(idx);
                    if idx >= len {
                        return Err(StoreError::invalid(format!(
                            "job '{job}' tensor '{name}': index {idx} is out of range (length {len})"
                        )));
                    }
                    let c = idx / cs;
                    if c != last_chunk {
                        if self.slot(t, c).is_none() {
                            return Err(not_owned(idx));
                        }
                        last_chunk = c;
                    }
                }
            }
            out.updates.push(ValidUpdate {
                tensor: t,
                dense_start: u.dense_start,
                indices,
                values,
            });
        }
        Ok(out)
    }

    /// Adds a validated push's values (deltas) and returns the version it was applied at.
    pub fn apply_push(&self, push: &ValidPush) -> u64 {
        let version = {
            let mut v = lock(&self.versions);
            v.next += 1;
            let n = v.next;
            v.in_flight.insert(n);
            n
        };
        let cs = u64::from(self.layout.chunk_size);
        for u in &push.updates {
            let t = u.tensor;
            if let Some(start) = u.dense_start {
                self.apply_dense(t, start, &u.values, version, push.worker);
                continue;
            }
            // Runs of indices in the same chunk share one lock acquisition.
            let (indices, values) = (u.indices.as_slice(), u.values.as_slice());
            let mut i = 0;
            while let Some(&first) = indices.get(i) {
                let c = u64::from(first) / cs;
                let (lo, hi) = (c * cs, (c + 1) * cs);
                let run = indices
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|&&x| u64::from(x) >= lo && u64::from(x) < hi)
                    .count();
                let j = i + run;
                let (Some(idx), Some(vals)) = (indices.get(i..j), values.get(i..j)) else {
                    break;
                };
                if let Some((s, pos)) = self.slot(t, c)
                    && let Some(sub) = self.subs.get(s)
                {
                    let mut sub = lock(sub);
                    if let Some(chunk) = sub.chunks.get_mut(pos) {
                        add_run(chunk, idx, vals, version, push.worker);
                    }
                }
                i = j;
            }
        }
        self.pushes.fetch_add(1, Ordering::Relaxed);
        lock(&self.versions).in_flight.remove(&version);
        version
    }

    fn apply_dense(&self, t: usize, start: u64, values: &[f32], version: u64, worker: u32) {
        self.for_each_owned_run(t, start, values, |chunk, from, dst_src| {
            let (dst, src) = dst_src;
            for (d, s) in dst.iter_mut().zip(src) {
                *d += *s;
            }
            let to = from + src.len();
            if to - from > chunk.batch_limit() {
                chunk.reset_log(version);
            } else {
                chunk.log_batch(version, worker, (from as u32..to as u32).collect());
            }
        });
    }

    /// Calls `f(chunk, offset in chunk, (chunk values, source values))` for each owned chunk that
    /// `[start, start + values.len())` of tensor `t` touches, with the chunk's sub-shard locked.
    /// Chunks owned by other shards are skipped.
    fn for_each_owned_run(
        &self,
        t: usize,
        start: u64,
        values: &[f32],
        mut f: impl FnMut(&mut Chunk, usize, (&mut [f32], &[f32])),
    ) {
        let cs = u64::from(self.layout.chunk_size);
        let end = start + values.len() as u64;
        let mut pos = start;
        while pos < end {
            let c = pos / cs;
            let chunk_end = ((c + 1) * cs).min(end);
            if let Some((s, p)) = self.slot(t, c)
                && let Some(sub) = self.subs.get(s)
            {
                let mut sub = lock(sub);
                if let Some(chunk) = sub.chunks.get_mut(p) {
                    let from = (pos - chunk.start) as usize;
                    let to = (chunk_end - chunk.start) as usize;
                    let src = values.get((pos - start) as usize..(chunk_end - start) as usize);
                    // The values are moved out for the call so `f` may also touch the chunk's log.
                    let mut dst = std::mem::take(&mut chunk.values);
                    if let (Some(d), Some(src)) = (dst.get_mut(from..to), src) {
                        f(chunk, from, (d, src));
                    }
                    chunk.values = dst;
                }
            }
            pos = chunk_end;
        }
    }

    /// Values of the owned chunks that intersect `ranges` (all tensors when empty): dense, or only
    /// the entries changed after `since` (by pushes of workers other than `except`); values in
    /// `enc` where they fit it.
    pub fn pull(
        &self,
        ranges: &[pb::TensorRange],
        since: Option<u64>,
        except: Option<u32>,
        enc: ValueEncoding,
    ) -> Result<Vec<pb::PullChunk>> {
        let mut wanted = Vec::new();
        if ranges.is_empty() {
            for (t, m) in self.layout.tensors.iter().enumerate() {
                wanted.push((t, 0, m.len));
            }
        }
        for r in ranges {
            let t = self.layout.tensor_index(&r.tensor)?;
            let len = self.layout.tensors.get(t).map_or(0, |m| m.len);
            let end = if r.end == 0 { len } else { r.end };
            if r.start >= end || end > len {
                return Err(StoreError::invalid(format!(
                    "job '{}' tensor '{}': range {}..{} is out of range (length {len})",
                    self.layout.job_id, r.tensor, r.start, end
                )));
            }
            wanted.push((t, r.start, end));
        }
        let cs = u64::from(self.layout.chunk_size);
        let mut out = Vec::new();
        // Read the watermark before any chunk: every push at or below it is in every chunk read
        // after, so it is a safe `since` for the caller's next pull.
        let version = self.watermark();
        for (t, start, end) in wanted {
            let name = self
                .layout
                .tensors
                .get(t)
                .map_or(String::new(), |m| m.name.clone());
            let mut c = start / cs;
            while c * cs < end {
                let Some((s, p)) = self.slot(t, c) else {
                    c += 1;
                    continue;
                };
                let Some(sub) = self.subs.get(s) else { break };
                let sub = lock(sub);
                let Some(chunk) = sub.chunks.get(p) else {
                    break;
                };
                let lo = start.max(chunk.start);
                let hi = end.min(chunk.start + chunk.values.len() as u64);
                let from = (lo - chunk.start) as usize;
                let to = (hi - chunk.start) as usize;
                let (mut offsets, mut values) = (Vec::new(), Vec::new());
                let used = match since {
                    None => put_values(
                        enc,
                        chunk.values.get(from..to).unwrap_or_default(),
                        &mut values,
                    ),
                    Some(since) => {
                        chunk.changed_since(since, except, enc, from, to, &mut offsets, &mut values)
                    }
                };
                drop(sub);
                if since.is_none() || !values.is_empty() {
                    out.push(pb::PullChunk {
                        tensor: name.clone(),
                        start: lo,
                        version,
                        offsets: offsets.into(),
                        values: values.into(),
                        encoding: used.into(),
                    });
                }
                c += 1;
            }
        }
        if out.is_empty() {
            // Nothing changed: still tell the caller the version it is now up to date with.
            out.push(pb::PullChunk {
                version,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// Copies every owned chunk (tensor index, chunk start, values as little-endian f32 bytes)
    /// for a snapshot: one copy, in the form it is saved in.
    pub fn export_chunks(&self) -> Vec<(usize, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in &self.subs {
            let sub = lock(sub);
            for c in &sub.chunks {
                let mut bytes = Vec::with_capacity(4 * c.values.len());
                crate::chunk::extend_le(&mut bytes, &c.values);
                out.push((c.tensor as usize, c.start, bytes));
            }
        }
        out.sort_by_key(|(t, s, _)| (*t, *s));
        out
    }

    /// Overwrites owned values in `[start, start + values.len())` of tensor `t` (snapshot load).
    pub fn import_range(&self, t: usize, start: u64, values: &[f32]) {
        self.for_each_owned_run(t, start, values, |_, _, (dst, src)| {
            dst.copy_from_slice(src)
        });
    }

    /// Pushes applied, ever (restored from snapshots too).
    pub fn push_count(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// Whether nothing has touched the job since it was registered: no push applied, no clock
    /// advanced, nobody left.
    pub fn untouched(&self) -> bool {
        let clocks = self.clocks.snapshot();
        self.push_count() == 0
            && clocks.clocks.iter().all(|&c| c == 0)
            && clocks.left.iter().all(|&l| !l)
            && self
                .dedupe
                .iter()
                .all(|w| w.try_lock().is_ok_and(|w| !w.any))
    }

    /// Owned chunks and elements.
    pub fn sizes(&self) -> (u64, u64) {
        let mut chunks = 0;
        let mut elems = 0;
        for sub in &self.subs {
            let sub = lock(sub);
            chunks += sub.chunks.len() as u64;
            elems += sub
                .chunks
                .iter()
                .map(|c| c.values.len() as u64)
                .sum::<u64>();
        }
        (chunks, elems)
    }
}

/// All jobs of a shard.
#[derive(Debug)]
pub struct ShardState {
    /// This shard's index.
    pub shard_index: u32,
    /// Number of shards.
    pub shard_count: u32,
    /// Locks per job.
    pub sub_shards: usize,
    /// Versions handed out by this incarnation start above this base, so that a client's version
    /// from before a restart always asks for everything again.
    pub base_version: u64,
    jobs: RwLock<HashMap<String, Arc<JobState>>>,
}

impl ShardState {
    /// An empty shard.
    pub fn new(shard_index: u32, shard_count: u32, sub_shards: usize, base_version: u64) -> Self {
        Self {
            shard_index,
            shard_count,
            sub_shards,
            base_version,
            jobs: RwLock::default(),
        }
    }

    /// A registered job.
    pub fn job(&self, id: &str) -> Result<Arc<JobState>> {
        let jobs = self.jobs.read().unwrap_or_else(PoisonError::into_inner);
        jobs.get(id)
            .cloned()
            .ok_or_else(|| StoreError::UnknownJob(id.to_owned()))
    }

    /// Every job, sorted by id.
    pub fn jobs(&self) -> Vec<Arc<JobState>> {
        let jobs = self.jobs.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = jobs.values().cloned().collect();
        v.sort_by(|a, b| a.layout.job_id.cmp(&b.layout.job_id));
        v
    }

    /// The job registered under `id`, if any.
    pub fn find(&self, id: &str) -> Option<Arc<JobState>> {
        let jobs = self.jobs.read().unwrap_or_else(PoisonError::into_inner);
        jobs.get(id).cloned()
    }

    /// Registers a job whose id is not registered (the caller checked, under the shard's
    /// registration lock); an existing job is kept.
    pub fn register(
        &self,
        layout: JobLayout,
        inits: &[Option<pb::Initializer>],
        meta: JobMeta,
    ) -> Result<Arc<JobState>> {
        if let Some(existing) = self.find(&layout.job_id) {
            return Ok(existing);
        }
        let id = layout.job_id.clone();
        let job = Arc::new(JobState::new(layout, inits, meta, self)?);
        let mut jobs = self.jobs.write().unwrap_or_else(PoisonError::into_inner);
        Ok(jobs.entry(id).or_insert(job).clone())
    }

    /// Forgets a job; returns it when it was registered.
    pub fn remove(&self, id: &str) -> Option<Arc<JobState>> {
        let mut jobs = self.jobs.write().unwrap_or_else(PoisonError::into_inner);
        jobs.remove(id)
    }

    /// Estimated bytes of every job this shard holds.
    pub fn held_bytes(&self) -> u64 {
        let jobs = self.jobs.read().unwrap_or_else(PoisonError::into_inner);
        jobs.values()
            .fold(0u64, |acc, j| acc.saturating_add(j.meta.bytes))
    }

    /// Replaces every job (restore from a snapshot).
    pub fn replace_all(&self, new_jobs: Vec<Arc<JobState>>) {
        let mut jobs = self.jobs.write().unwrap_or_else(PoisonError::into_inner);
        *jobs = new_jobs
            .into_iter()
            .map(|j| (j.layout.job_id.clone(), j))
            .collect();
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
