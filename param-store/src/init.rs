//! Initial values of a tensor's chunks: a constant, seeded uniform/normal, or explicit values.
//!
//! Random initializers are seeded per chunk from `(seed, tensor, chunk)`, so a tensor's initial
//! values do not depend on how many shards hold it.

use cumulus_proto::paramstore::v1 as pb;
use pb::initializer::Kind;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::error::{Result, StoreError};
use crate::layout::{JobLayout, TensorMeta, chunk_hash};

/// Checks the initializers of a registration against its layout.
pub fn validate_inits(layout: &JobLayout, specs: &[pb::TensorSpec]) -> Result<()> {
    for (meta, spec) in layout.tensors.iter().zip(specs) {
        let bad = |why: String| {
            StoreError::invalid(format!(
                "job '{}' tensor '{}': {why}",
                layout.job_id, meta.name
            ))
        };
        match spec.init.as_ref().and_then(|i| i.kind.as_ref()) {
            None => {}
            Some(Kind::Constant(c)) if !c.is_finite() => {
                return Err(bad(format!("constant initializer {c} is not finite")));
            }
            Some(Kind::Constant(_)) => {}
            Some(Kind::Uniform(u))
                if !(u.low.is_finite() && u.high.is_finite() && u.low < u.high) =>
            {
                return Err(bad(format!(
                    "uniform initializer needs finite low < high, got {}..{}",
                    u.low, u.high
                )));
            }
            Some(Kind::Normal(n)) if !(n.mean.is_finite() && n.std.is_finite() && n.std >= 0.0) => {
                return Err(bad(format!(
                    "normal initializer needs a finite mean and std >= 0, got {} and {}",
                    n.mean, n.std
                )));
            }
            Some(Kind::Uniform(_) | Kind::Normal(_)) => {}
            Some(Kind::Values(v)) => {
                if v.values.len() as u64 != meta.len {
                    return Err(bad(format!(
                        "{} initial values for {} elements",
                        v.values.len(),
                        meta.len
                    )));
                }
                if let Some(i) = v.values.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!("initial value #{i} is not finite")));
                }
            }
        }
    }
    Ok(())
}

/// The initial values of elements `[start, end)` (chunk `chunk`) of a tensor.
pub fn fill_initial(
    job: &str,
    meta: &TensorMeta,
    init: Option<&pb::Initializer>,
    chunk: u32,
    start: u64,
    end: u64,
) -> Result<Vec<f32>> {
    let n = usize::try_from(end.saturating_sub(start))
        .map_err(|_| StoreError::invalid(format!("tensor '{}' chunk too large", meta.name)))?;
    let seeded =
        |seed: u64| rand::rngs::StdRng::seed_from_u64(seed ^ chunk_hash(job, &meta.name, chunk));
    Ok(match init.and_then(|i| i.kind.as_ref()) {
        None => vec![0.0; n],
        Some(Kind::Constant(c)) => vec![*c; n],
        Some(Kind::Uniform(u)) => {
            let mut rng = seeded(u.seed);
            (0..n).map(|_| rng.random_range(u.low..u.high)).collect()
        }
        Some(Kind::Normal(p)) => {
            let mut rng = seeded(p.seed);
            let dist = Normal::new(p.mean, p.std)
                .map_err(|e| StoreError::invalid(format!("tensor '{}': {e}", meta.name)))?;
            (0..n).map(|_| dist.sample(&mut rng)).collect()
        }
        Some(Kind::Values(v)) => {
            let (s, e) = (start as usize, end as usize);
            v.values
                .get(s..e)
                .ok_or_else(|| {
                    StoreError::invalid(format!("tensor '{}': too few initial values", meta.name))
                })?
                .to_vec()
        }
    })
}
