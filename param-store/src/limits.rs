//! What a job costs a shard, and the limits a registration must stay under. Both are computed
//! from the layout alone, before the registration is logged or anything is allocated: a 35-byte
//! request for a 2^30-element tensor is refused with its size and the limit, and since it never
//! reaches the log, a restart never replays it.
//!
//! ```
//! use cumulus_param_store::layout::JobLayout;
//! use cumulus_param_store::limits::Limits;
//!
//! let layout = JobLayout::new("j", vec![("w".into(), vec![1 << 30])], "asp", 1, 0)?;
//! let limits = Limits { max_tensor_elements: 1 << 20, ..Limits::unbounded(0, 1) };
//! let err = limits.admit(&layout, 0).unwrap_err().to_string();
//! assert!(err.contains("1073741824 elements, over the limit of 1048576"), "{err}");
//! # Ok::<(), cumulus_param_store::StoreError>(())
//! ```

use crate::config::ShardConfig;
use crate::error::{Result, StoreError};
use crate::layout::{JobLayout, MAX_CHUNKS_PER_JOB, MAX_TENSOR_ELEMENTS};
use crate::state::DEDUPE_WINDOW;

/// Bytes per owned element: the f32 value and its change log, which holds at most as many
/// offsets as the chunk has values (see [`crate::chunk::Chunk::log_limit`]).
const ELEMENT_BYTES: u64 = 8;
/// Bytes per owned chunk besides its values: the chunk, its log's batches, the lock's share.
const OWNED_CHUNK_BYTES: u64 = 256;
/// Bytes per chunk of the layout, owned or not: its slot in the job's placement table.
const SLOT_BYTES: u64 = 24;
/// Bytes per worker: its clock and a full de-duplication window of sequence numbers.
const WORKER_BYTES: u64 = DEDUPE_WINDOW * 24 + 512;
/// Bytes per tensor: its name, shape and lookup entry.
const TENSOR_BYTES: u64 = 1024;

/// The estimated cost of one job on one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobFootprint {
    /// Chunks this shard owns.
    pub owned_chunks: u64,
    /// Elements this shard owns.
    pub owned_elements: u64,
    /// Estimated bytes this shard holds for the job at most.
    pub bytes: u64,
}

impl JobFootprint {
    /// The footprint of `layout` on shard `shard_index` of `shard_count` (the layout's chunk
    /// count must already be bounded: every chunk is hashed once).
    pub fn of(layout: &JobLayout, shard_index: u32, shard_count: u32) -> Self {
        let (owned_chunks, owned_elements) = layout.owned(shard_index, shard_count);
        let bytes = [
            owned_elements.saturating_mul(ELEMENT_BYTES),
            owned_chunks.saturating_mul(OWNED_CHUNK_BYTES),
            layout.total_chunks().saturating_mul(SLOT_BYTES),
            u64::from(layout.workers).saturating_mul(WORKER_BYTES),
            (layout.tensors.len() as u64).saturating_mul(TENSOR_BYTES),
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b));
        Self {
            owned_chunks,
            owned_elements,
            bytes,
        }
    }
}

/// The limits one shard holds registrations to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most elements of one tensor.
    pub max_tensor_elements: u64,
    /// Most elements of one job.
    pub max_job_elements: u64,
    /// Most estimated bytes of all jobs together.
    pub max_shard_bytes: u64,
    /// This shard's index.
    pub shard_index: u32,
    /// Number of shards.
    pub shard_count: u32,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &ShardConfig) -> Self {
        Self {
            max_tensor_elements: config.max_tensor_elements,
            max_job_elements: config.max_job_elements,
            max_shard_bytes: config.max_shard_bytes,
            shard_index: config.shard_index,
            shard_count: config.shard_count,
        }
    }

    /// Only the protocol's own bounds (for tests and tools).
    pub fn unbounded(shard_index: u32, shard_count: u32) -> Self {
        Self {
            max_tensor_elements: MAX_TENSOR_ELEMENTS,
            max_job_elements: u64::MAX,
            max_shard_bytes: u64::MAX,
            shard_index,
            shard_count,
        }
    }

    /// Checks a layout against the tensor, job and chunk limits, then its footprint against what
    /// the shard still has room for (`held`: the footprints of the jobs it holds). Nothing is
    /// allocated; the footprint is returned for the shard's accounting.
    pub fn admit(&self, layout: &JobLayout, held: u64) -> Result<JobFootprint> {
        let job = &layout.job_id;
        for t in &layout.tensors {
            if t.len > self.max_tensor_elements {
                return Err(StoreError::LimitExceeded {
                    what: format!("job '{job}' tensor '{}'", t.name),
                    size: t.len,
                    limit: self.max_tensor_elements,
                    unit: "elements",
                    setting: "--max-tensor-elements",
                });
            }
        }
        let elements = layout.total_elements();
        if elements > self.max_job_elements {
            return Err(StoreError::LimitExceeded {
                what: format!("job '{job}'"),
                size: elements,
                limit: self.max_job_elements,
                unit: "elements",
                setting: "--max-job-elements",
            });
        }
        let chunks = layout.total_chunks();
        if chunks > MAX_CHUNKS_PER_JOB {
            return Err(StoreError::LimitExceeded {
                what: format!("job '{job}' at chunk_size {}", layout.chunk_size),
                size: chunks,
                limit: MAX_CHUNKS_PER_JOB,
                unit: "chunks",
                setting: "a larger chunk_size",
            });
        }
        let footprint = JobFootprint::of(layout, self.shard_index, self.shard_count);
        if held.saturating_add(footprint.bytes) > self.max_shard_bytes {
            return Err(StoreError::ShardFull {
                job: job.clone(),
                shard: self.shard_index,
                needed: footprint.bytes,
                held,
                limit: self.max_shard_bytes,
            });
        }
        Ok(footprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tensors: &[(&str, u64)], chunk_size: u32) -> JobLayout {
        let specs = tensors
            .iter()
            .map(|(n, len)| ((*n).to_owned(), vec![*len]))
            .collect();
        JobLayout::new("j", specs, "asp", 2, chunk_size).expect("a valid layout")
    }

    #[test]
    fn each_limit_names_the_size_the_limit_and_its_setting() {
        let limits = Limits {
            max_tensor_elements: 1000,
            max_job_elements: 1500,
            max_shard_bytes: 1 << 20,
            ..Limits::unbounded(0, 1)
        };
        let err = limits.admit(&layout(&[("w", 1001)], 0), 0).unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("tensor 'w' has 1001 elements, over the limit of 1000"),
            "{msg}"
        );
        assert!(msg.contains("--max-tensor-elements"), "{msg}");
        let msg = limits
            .admit(&layout(&[("a", 800), ("b", 800)], 0), 0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("job 'j' has 1600 elements"), "{msg}");
        let msg = limits
            .admit(&layout(&[("a", 600)], 0), (1 << 20) - 1000)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("--max-shard-bytes"), "{msg}");
        assert!(limits.admit(&layout(&[("a", 600)], 0), 0).is_ok());
    }

    #[test]
    fn tiny_chunks_are_refused_before_every_chunk_is_placed() {
        let err = Limits::unbounded(0, 1)
            .admit(&layout(&[("w", 1 << 30)], 1), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunks, over the limit"), "{err}");
    }

    #[test]
    fn the_footprint_counts_only_the_owned_part_of_the_values() {
        let l = layout(&[("w", 1 << 24)], 0);
        let whole = JobFootprint::of(&l, 0, 1);
        assert_eq!(whole.owned_elements, 1 << 24);
        assert!(whole.bytes >= 8 << 24);
        let parts: Vec<_> = (0..4).map(|i| JobFootprint::of(&l, i, 4)).collect();
        assert_eq!(parts.iter().map(|p| p.owned_elements).sum::<u64>(), 1 << 24);
        assert!(parts.iter().all(|p| p.bytes < whole.bytes));
    }
}
