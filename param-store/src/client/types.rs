//! The values a client sends and gets back: updates (sparse or dense) and their wire form,
//! changed entries, versions, and how a pull waits and what it leaves out.

use cumulus_proto::paramstore::v1 as pb;

/// One tensor's part of a push: sparse (indices + values) or dense (a run from `dense_start`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseUpdate {
    /// Tensor name.
    pub tensor: String,
    /// Flat indices of a sparse update (empty for a dense one).
    pub indices: Vec<u64>,
    /// Values added at `indices`, or from `dense_start` on.
    pub values: Vec<f32>,
    /// First flat index of a dense update.
    pub dense_start: Option<u64>,
}

impl SparseUpdate {
    /// Whether the indices go gap-coded: they are in non-decreasing order (as a filter's output
    /// is) and each fits a `u32`.
    fn gap_coded(&self) -> bool {
        self.indices.windows(2).all(|w| w[0] <= w[1])
            && self
                .indices
                .last()
                .is_none_or(|&i| i <= u64::from(u32::MAX))
    }

    /// Whether the values go as f16: every one of them is exactly an f16 (never a loss).
    fn half_exact(&self) -> bool {
        self.values
            .iter()
            .all(|&v| half::f16::from_f32(v).to_f32() == v)
    }

    /// Payload bytes this update takes on the wire: its indices (gap-coded varints when sorted,
    /// else 4 bytes each) and its values (2 bytes each when all are exactly f16, else 4);
    /// protobuf framing excluded.
    pub fn wire_bytes(&self) -> u64 {
        let width = if self.half_exact() { 2 } else { 4 };
        let values = width * self.values.len() as u64;
        if !self.gap_coded() {
            return values + 4 * self.indices.len() as u64;
        }
        let mut prev = 0;
        let gaps: usize = self
            .indices
            .iter()
            .map(|&i| {
                let n = prost::encoding::encoded_len_varint(i - prev);
                prev = i;
                n
            })
            .sum();
        values + gaps as u64
    }
}

/// The wire form: indices gap-coded (sorted updates) or as little-endian u32 (others), values as
/// little-endian f16 when that loses nothing, else f32. An index past `u32::MAX` becomes
/// `u32::MAX`, which no tensor holds, so the shard refuses it as out of range.
impl From<SparseUpdate> for pb::TensorUpdate {
    fn from(u: SparseUpdate) -> Self {
        let (mut indices, mut index_gaps) = (Vec::new(), Vec::new());
        if u.gap_coded() {
            index_gaps.reserve(2 * u.indices.len());
            crate::chunk::encode_gaps(u.indices.iter().map(|&i| i as u32), &mut index_gaps);
        } else {
            indices.reserve(4 * u.indices.len());
            for &i in &u.indices {
                indices.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_le_bytes());
            }
        }
        let mut values = Vec::new();
        let encoding = if u.half_exact() {
            pb::ValueEncoding::F16
        } else {
            pb::ValueEncoding::F32
        };
        let encoding = crate::chunk::put_values(encoding, &u.values, &mut values);
        pb::TensorUpdate {
            tensor: u.tensor,
            indices: indices.into(),
            index_gaps: index_gaps.into(),
            values: values.into(),
            dense_start: u.dense_start,
            encoding: encoding.into(),
        }
    }
}

/// A sparse update of `tensor`: `values[k]` is added at flat index `indices[k]`.
pub fn sparse(tensor: &str, indices: Vec<u64>, values: Vec<f32>) -> SparseUpdate {
    SparseUpdate {
        tensor: tensor.to_owned(),
        indices,
        values,
        dense_start: None,
    }
}

/// A dense update of `values.len()` elements of `tensor` from `start`.
pub fn dense(tensor: &str, start: u64, values: Vec<f32>) -> SparseUpdate {
    SparseUpdate {
        tensor: tensor.to_owned(),
        indices: Vec::new(),
        values,
        dense_start: Some(start),
    }
}

/// Entries of one tensor that changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangedTensor {
    /// Tensor name.
    pub tensor: String,
    /// Flat indices (in no particular order).
    pub indices: Vec<u64>,
    /// Current values.
    pub values: Vec<f32>,
    /// Payload bytes the answer took on the wire: 4 per value, plus the gap-coded offsets of
    /// the entries sent sparse (a dense run carries none).
    pub wire_bytes: u64,
}

/// The version of each shard a caller is up to date with (see [`ParamStoreClient::pull_changed`](super::ParamStoreClient::pull_changed)).
pub type Versions = Vec<u64>;

/// How [`ParamStoreClient::pull_changed_with`](super::ParamStoreClient::pull_changed_with) pulls.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangedOptions {
    /// Wait until the job's synchronization mode lets this worker run this clock.
    pub at: Option<PullClock>,
    /// Leave out the entries that only this worker's own pushes changed: what a worker whose
    /// replica is "the store's values plus its own changes" holds already. Entries another push
    /// changed too come back with their current values.
    pub except_worker: Option<u32>,
    /// Values as f16 (2 bytes instead of 4; the store keeps and sums f32). Chunks holding a value
    /// past f16's range come back as f32.
    pub half: bool,
}

/// Clock to wait for in a pull: the puller and the clock it pulls for.
#[derive(Debug, Clone, Copy)]
pub struct PullClock {
    /// Worker id.
    pub worker: u32,
    /// Clock the worker is about to run.
    pub clock: u64,
}

/// What a clock call answers, over all shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// The slowest active worker's clock.
    pub min_clock: u64,
    /// The job was asked to stop ([`ParamStoreClient::stop`](super::ParamStoreClient::stop)).
    pub stopping: bool,
}
