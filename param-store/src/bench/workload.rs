//! The benchmark's workload: per worker and round, one sparse update of a given density over a
//! flat model, encoded the same way for both systems (a `paramstore.v1.TensorUpdate`).

use cumulus_proto::paramstore::v1 as pb;
use hdrhistogram::Histogram;
use prost::Message;

use crate::client::SparseUpdate;
use rand::{Rng, SeedableRng};

/// Name of the single tensor holding the benchmark model.
pub const TENSOR: &str = "model";

/// One worker's update of one round: sorted distinct indices, values uniform in [-1, 1) with full
/// f32 precision, as gradients are (values that happen to be exact f16 would travel in 2 bytes).
pub fn make_update(params: u64, density: f64, worker: usize, round: usize) -> SparseUpdate {
    let mut rng = rand::rngs::StdRng::seed_from_u64(((worker as u64) << 32) ^ round as u64);
    let value = |rng: &mut rand::rngs::StdRng| rng.random_range(-1.0f32..1.0);
    if density >= 1.0 {
        let values = (0..params).map(|_| value(&mut rng)).collect();
        return SparseUpdate {
            tensor: TENSOR.into(),
            indices: (0..params).collect(),
            values,
            dense_start: None,
        };
    }
    let k = ((params as f64 * density).round() as u64).max(1);
    let mut indices: Vec<u64> = (0..k).map(|_| rng.random_range(0..params)).collect();
    indices.sort_unstable();
    indices.dedup();
    let values = indices.iter().map(|_| value(&mut rng)).collect();
    SparseUpdate {
        tensor: TENSOR.into(),
        indices,
        values,
        dense_start: None,
    }
}

/// Encodes an update for Redis.
pub fn encode(update: SparseUpdate) -> Vec<u8> {
    pb::TensorUpdate::from(update).encode_to_vec()
}

/// Latency histogram in microseconds (1 µs .. 10 min, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records a duration in a histogram (saturating at its top).
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 600_000_000);
    h.saturating_record(us);
}
