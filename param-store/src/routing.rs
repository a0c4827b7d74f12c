//! How a push is checked against a job's layout and cut into one request per shard.

use cumulus_proto::paramstore::v1 as pb;

use crate::client::{SparseUpdate, dense, sparse};
use crate::error::{Result, StoreError};
use crate::layout::JobLayout;

#[derive(Debug)]
pub(crate) struct Routing {
    pub(crate) layout: JobLayout,
    /// Owner shard of each chunk of each tensor.
    pub(crate) owners: Vec<Vec<u32>>,
}

/// Validates a push against the layout and cuts it into one request per shard (`None`: untouched).
pub(crate) fn split_push(
    route: &Routing,
    job: &str,
    worker: u32,
    clock: u64,
    seq: u64,
    updates: Vec<SparseUpdate>,
    shards: usize,
) -> Result<Vec<Option<pb::PushRequest>>> {
    let layout = &route.layout;
    if worker >= layout.workers {
        return Err(StoreError::invalid(format!(
            "job '{job}': worker {worker} is out of range (the job has {} workers)",
            layout.workers
        )));
    }
    let cs = u64::from(layout.chunk_size);
    let mut per_shard: Vec<Vec<SparseUpdate>> = (0..shards).map(|_| Vec::new()).collect();
    for u in updates {
        let t = layout.tensor_index(&u.tensor)?;
        let len = layout.tensors.get(t).map_or(0, |m| m.len);
        let owners = route.owners.get(t).map(Vec::as_slice).unwrap_or_default();
        let name = &u.tensor;
        if let Some(i) = u.values.iter().position(|v| !v.is_finite()) {
            return Err(StoreError::invalid(format!(
                "job '{job}' tensor '{name}': value #{i} is not finite (NaN and infinite values are refused)"
            )));
        }
        let mut parts: Vec<Option<SparseUpdate>> = (0..shards).map(|_| None).collect();
        if let Some(start) = u.dense_start {
            let end = start
                .checked_add(u.values.len() as u64)
                .filter(|&e| e <= len && u.indices.is_empty());
            let Some(end) = end else {
                return Err(StoreError::invalid(format!(
                    "job '{job}' tensor '{name}': dense update {start}+{} out of range (length {len}) or with indices",
                    u.values.len()
                )));
            };
            // One dense piece per chunk, each sent to its owner.
            let mut pos = start;
            while pos < end {
                let c = pos / cs;
                let stop = ((c + 1) * cs).min(end);
                let owner = owners.get(c as usize).copied().unwrap_or(0) as usize;
                let from = (pos - start) as usize;
                let to = (stop - start) as usize;
                let values = u.values.get(from..to).unwrap_or_default().to_vec();
                if let Some(list) = per_shard.get_mut(owner) {
                    list.push(dense(name, pos, values));
                }
                pos = stop;
            }
            continue;
        }
        if u.indices.len() != u.values.len() {
            return Err(StoreError::invalid(format!(
                "job '{job}' tensor '{name}': {} indices but {} values",
                u.indices.len(),
                u.values.len()
            )));
        }
        if shards == 1 {
            if let Some(&bad) = u.indices.iter().find(|&&i| i >= len) {
                return Err(StoreError::invalid(format!(
                    "job '{job}' tensor '{name}': index {bad} is out of range (length {len})"
                )));
            }
            if let Some(list) = per_shard.get_mut(0) {
                list.push(u);
            }
            continue;
        }
        for (&idx, &val) in u.indices.iter().zip(&u.values) {
            if idx >= len {
                return Err(StoreError::invalid(format!(
                    "job '{job}' tensor '{name}': index {idx} is out of range (length {len})"
                )));
            }
            let owner = owners.get((idx / cs) as usize).copied().unwrap_or(0) as usize;
            if let Some(slot) = parts.get_mut(owner) {
                let p = slot.get_or_insert_with(|| sparse(name, Vec::new(), Vec::new()));
                p.indices.push(idx);
                p.values.push(val);
            }
        }
        for (shard, p) in parts.into_iter().enumerate() {
            if let (Some(p), Some(list)) = (p, per_shard.get_mut(shard)) {
                list.push(p);
            }
        }
    }
    Ok(per_shard
        .into_iter()
        .map(|updates| {
            (!updates.is_empty()).then(|| pb::PushRequest {
                job_id: job.to_owned(),
                worker,
                clock,
                seq,
                updates: updates.into_iter().map(Into::into).collect(),
            })
        })
        .collect())
}
