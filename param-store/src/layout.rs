//! A job's model layout, its synchronization mode, and where each chunk of each tensor lives.
//!
//! Tensors are flat f32 buffers cut into chunks of `chunk_size` elements. Chunk `c` of tensor `t`
//! of job `j` lives on shard `fnv1a(j, t, c) % shard_count` and, inside that shard, in sub-shard
//! `fnv1a(..) / shard_count % sub_shards`. The hash is spelled out here (not `std`'s hasher) so
//! that clients and shards of any build agree on it.
//!
//! ```
//! use cumulus_param_store::layout::{chunk_owner, SyncMode};
//! assert_eq!("ssp:3".parse::<SyncMode>().unwrap(), SyncMode::Ssp(3));
//! let shard = chunk_owner("job", "w", 0, 4);
//! assert!(shard < 4);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use cumulus_proto::paramstore::v1 as pb;

use crate::error::{Result, StoreError};

/// Elements per chunk when a job does not say.
pub const DEFAULT_CHUNK_SIZE: u32 = 65_536;
/// Largest tensor accepted, in elements (4 GiB of f32).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 30;
/// Most tensors in one job.
pub const MAX_TENSORS: usize = 100_000;
/// Most workers in one job.
pub const MAX_WORKERS: u32 = 100_000;
/// Most chunks in one job, all tensors together: every shard keeps a slot per chunk of the
/// layout, and placing a job hashes each chunk once (a larger `chunk_size` means fewer chunks).
pub const MAX_CHUNKS_PER_JOB: u64 = 1 << 20;

/// How a job's workers are kept in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Bulk-synchronous: a worker pulling for clock `c` waits until every worker reached `c`.
    Bsp,
    /// Stale-synchronous: a worker pulling for clock `c` waits until the slowest reached `c - k`.
    Ssp(u64),
    /// Asynchronous: nobody waits.
    Asp,
}

impl SyncMode {
    /// The clock the slowest worker must have reached before a worker may run `clock`, if any.
    pub fn required_min_clock(self, clock: u64) -> Option<u64> {
        match self {
            SyncMode::Bsp => Some(clock),
            SyncMode::Ssp(k) => Some(clock.saturating_sub(k)),
            SyncMode::Asp => None,
        }
    }
}

impl FromStr for SyncMode {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bsp" => Ok(SyncMode::Bsp),
            "asp" => Ok(SyncMode::Asp),
            other => match other.strip_prefix("ssp:").map(str::parse::<u64>) {
                Some(Ok(k)) => Ok(SyncMode::Ssp(k)),
                _ => Err(StoreError::invalid(format!(
                    "sync mode '{s}' is not one of bsp, ssp:K (K a non-negative integer), asp"
                ))),
            },
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncMode::Bsp => f.write_str("bsp"),
            SyncMode::Ssp(k) => write!(f, "ssp:{k}"),
            SyncMode::Asp => f.write_str("asp"),
        }
    }
}

/// One tensor of a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    /// Parameter name (the checkpoint key).
    pub name: String,
    /// Shape; the product is `len`.
    pub shape: Vec<u64>,
    /// Element count.
    pub len: u64,
}

/// A validated job layout.
#[derive(Debug, Clone)]
pub struct JobLayout {
    /// Job id.
    pub job_id: String,
    /// Tensors in registration order.
    pub tensors: Vec<TensorMeta>,
    /// Synchronization mode.
    pub sync: SyncMode,
    /// Workers taking part in the clock.
    pub workers: u32,
    /// Elements per chunk.
    pub chunk_size: u32,
    by_name: HashMap<String, usize>,
}

impl JobLayout {
    /// Validates a registration (or layout) message.
    pub fn from_request(req: &pb::RegisterRequest) -> Result<Self> {
        let specs: Vec<(String, Vec<u64>)> = req
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        Self::new(&req.job_id, specs, &req.sync, req.workers, req.chunk_size)
    }

    /// Builds and validates a layout.
    pub fn new(
        job_id: &str,
        specs: Vec<(String, Vec<u64>)>,
        sync: &str,
        workers: u32,
        chunk_size: u32,
    ) -> Result<Self> {
        validate_job_id(job_id)?;
        let sync: SyncMode = sync.parse()?;
        if workers == 0 || workers > MAX_WORKERS {
            return Err(StoreError::invalid(format!(
                "job '{job_id}': workers must be in 1..={MAX_WORKERS}, got {workers}"
            )));
        }
        let chunk_size = if chunk_size == 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            chunk_size
        };
        if specs.is_empty() || specs.len() > MAX_TENSORS {
            return Err(StoreError::invalid(format!(
                "job '{job_id}': a layout needs 1..={MAX_TENSORS} tensors, got {}",
                specs.len()
            )));
        }
        let mut tensors = Vec::with_capacity(specs.len());
        let mut by_name = HashMap::with_capacity(specs.len());
        for (name, shape) in specs {
            if name.is_empty() || name.len() > 512 {
                return Err(StoreError::invalid(format!(
                    "job '{job_id}': tensor names must be 1..=512 bytes"
                )));
            }
            let len = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0 && n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    StoreError::invalid(format!(
                        "job '{job_id}': tensor '{name}' has shape {shape:?}: element count must be 1..={MAX_TENSOR_ELEMENTS}"
                    ))
                })?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(StoreError::invalid(format!(
                    "job '{job_id}': tensor '{name}' is listed twice"
                )));
            }
            tensors.push(TensorMeta { name, shape, len });
        }
        Ok(Self {
            job_id: job_id.to_owned(),
            tensors,
            sync,
            workers,
            chunk_size,
            by_name,
        })
    }

    /// Index of a tensor by name, or `UnknownTensor`.
    pub fn tensor_index(&self, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| StoreError::UnknownTensor {
                job: self.job_id.clone(),
                tensor: name.to_owned(),
            })
    }

    /// Elements of every tensor together.
    pub fn total_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// Chunks of every tensor together.
    pub fn total_chunks(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.len.div_ceil(u64::from(self.chunk_size.max(1))))
            .sum()
    }

    /// The chunks and elements shard `shard_index` of `shard_count` owns. Hashes every chunk
    /// once: callers check [`Self::total_chunks`] against [`MAX_CHUNKS_PER_JOB`] first.
    pub fn owned(&self, shard_index: u32, shard_count: u32) -> (u64, u64) {
        let (mut chunks, mut elements) = (0u64, 0u64);
        for (t, meta) in self.tensors.iter().enumerate() {
            for c in 0..self.chunk_count(t) {
                if chunk_owner(&self.job_id, &meta.name, c, shard_count) == shard_index {
                    let (start, end) = self.chunk_range(t, c);
                    chunks += 1;
                    elements += end - start;
                }
            }
        }
        (chunks, elements)
    }

    /// Number of chunks of tensor `t`.
    pub fn chunk_count(&self, t: usize) -> u32 {
        self.tensors
            .get(t)
            .map_or(0, |m| chunk_count(m.len, self.chunk_size))
    }

    /// Element range `[start, end)` of chunk `c` of tensor `t`.
    pub fn chunk_range(&self, t: usize, c: u32) -> (u64, u64) {
        let len = self.tensors.get(t).map_or(0, |m| m.len);
        let start = u64::from(c) * u64::from(self.chunk_size);
        (
            start.min(len),
            (start + u64::from(self.chunk_size)).min(len),
        )
    }

    /// True when two layouts describe the same job (used for idempotent registration).
    pub fn same_as(&self, other: &JobLayout) -> bool {
        self.job_id == other.job_id
            && self.tensors == other.tensors
            && self.sync == other.sync
            && self.workers == other.workers
            && self.chunk_size == other.chunk_size
    }

    /// The layout as a `LayoutResponse`.
    pub fn to_response(&self) -> pb::LayoutResponse {
        pb::LayoutResponse {
            job_id: self.job_id.clone(),
            tensors: self
                .tensors
                .iter()
                .map(|t| pb::TensorSpec {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    init: None,
                })
                .collect(),
            sync: self.sync.to_string(),
            workers: self.workers,
            chunk_size: self.chunk_size,
        }
    }

    /// Rebuilds a layout from a `LayoutResponse`.
    pub fn from_response(resp: &pb::LayoutResponse) -> Result<Self> {
        let specs = resp
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        Self::new(
            &resp.job_id,
            specs,
            &resp.sync,
            resp.workers,
            resp.chunk_size,
        )
    }
}

/// Job ids are short, printable names (they appear in paths and metric labels).
pub fn validate_job_id(job_id: &str) -> Result<()> {
    let ok = !job_id.is_empty()
        && job_id.len() <= 128
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "job id '{job_id}' must be 1..=128 characters of [A-Za-z0-9._-]"
        )))
    }
}

/// Chunks of a tensor of `len` elements.
pub fn chunk_count(len: u64, chunk_size: u32) -> u32 {
    u32::try_from(len.div_ceil(u64::from(chunk_size.max(1)))).unwrap_or(u32::MAX)
}

/// FNV-1a over the job id, tensor name and chunk index: the placement hash.
pub fn chunk_hash(job: &str, tensor: &str, chunk: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    feed(job.as_bytes());
    feed(&[0xff]);
    feed(tensor.as_bytes());
    feed(&[0xff]);
    feed(&chunk.to_le_bytes());
    // Finalize (splitmix64) so that consecutive chunks spread evenly.
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard that owns a chunk.
pub fn chunk_owner(job: &str, tensor: &str, chunk: u32, shard_count: u32) -> u32 {
    let n = u64::from(shard_count.max(1));
    u32::try_from(chunk_hash(job, tensor, chunk) % n).unwrap_or(0)
}

/// The sub-shard (lock) of a chunk inside its shard.
pub fn chunk_sub_shard(
    job: &str,
    tensor: &str,
    chunk: u32,
    shard_count: u32,
    subs: usize,
) -> usize {
    let h = chunk_hash(job, tensor, chunk) / u64::from(shard_count.max(1));
    usize::try_from(h % subs.max(1) as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_parse_and_print() {
        for s in ["bsp", "asp", "ssp:0", "ssp:7"] {
            assert_eq!(s.parse::<SyncMode>().unwrap().to_string(), s);
        }
        for bad in ["", "ssp", "ssp:-1", "ssp:x", "BSP"] {
            assert!(bad.parse::<SyncMode>().is_err(), "{bad}");
        }
        assert_eq!(SyncMode::Ssp(2).required_min_clock(1), Some(0));
        assert_eq!(SyncMode::Bsp.required_min_clock(5), Some(5));
        assert_eq!(SyncMode::Asp.required_min_clock(5), None);
    }

    #[test]
    fn chunks_spread_over_shards() {
        let mut counts = [0u32; 4];
        for c in 0..4000 {
            counts[chunk_owner("j", "w", c, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
    }

    #[test]
    fn bad_layouts_are_refused() {
        let ok = |shape: Vec<u64>| JobLayout::new("j", vec![("w".into(), shape)], "asp", 1, 0);
        assert!(ok(vec![3, 4]).is_ok());
        assert!(ok(vec![0]).is_err());
        assert!(ok(vec![u64::MAX, 2]).is_err());
        assert!(JobLayout::new("bad id", vec![("w".into(), vec![1])], "asp", 1, 0).is_err());
        let dup = vec![("w".into(), vec![1]), ("w".into(), vec![2])];
        assert!(JobLayout::new("j", dup, "asp", 1, 0).is_err());
    }
}
