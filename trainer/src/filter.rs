//! The MLLess significance filter (DESIGN.md §6).
//!
//! A worker keeps one [`Accumulator`] per tensor it updates. After every local step it adds the
//! change the optimizer applied; then [`Accumulator::take_significant`] returns the entries whose
//! accumulated *relative* change is large,
//!
//! ```text
//! |acc[i]| / max(|w[i]|, eps) > v / sqrt(t + 1)
//! ```
//!
//! as `(index, acc[i])` pairs and resets them to zero. Everything else stays in the accumulator and
//! keeps growing, so no update is ever dropped: what was pushed plus what is still held always equals
//! the sum of the local changes. `eps` guards `w = 0` (MLLess divides by `w` unguarded); biases are
//! filtered like weights; `v = 0` sends every non-zero change.
//!
//! ```
//! use cumulus_trainer::filter::{Accumulator, FilterConfig};
//!
//! let cfg = FilterConfig::new(0.5, 1e-6)?;
//! let mut acc = Accumulator::new(3)?;
//! acc.add(&[0.1, 0.001, -0.5])?;
//! let weights = [1.0, 1.0, 1.0];
//! // step 0: threshold 0.5 / sqrt(1) = 0.5; no entry exceeds it (|-0.5| / 1 only equals it).
//! let (sent, stats) = acc.take_significant(&weights, &cfg, 0)?;
//! assert!(sent.is_empty());
//! assert_eq!(stats.considered, 3);
//! // step 3: threshold 0.25, so the third entry goes and the other two keep accumulating.
//! let (sent, _) = acc.take_significant(&weights, &cfg, 3)?;
//! assert_eq!(sent.indices, vec![2]);
//! assert_eq!(sent.values, vec![-0.5]);
//! assert_eq!(acc.residual(), &[0.1, 0.001, 0.0]);
//! # Ok::<(), cumulus_trainer::filter::FilterError>(())
//! ```

/// Bytes per entry of pushing a tensor whole (a dense update: one `f32` per entry) — what the
/// filter's savings are measured against.
pub const DENSE_BYTES_PER_ENTRY: u64 = 4;

/// Why a filter call was refused. Nothing in the accumulator changes when one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("significance threshold v must be finite and >= 0, got {0}")]
    Threshold(f32),
    #[error("eps must be finite and > 0, got {0}")]
    Epsilon(f32),
    #[error("a tensor of {0} entries cannot be addressed by u32 indices")]
    TooLarge(usize),
    #[error("length mismatch: the accumulator holds {expected} entries, got {got}")]
    Length { expected: usize, got: usize },
    #[error("change at index {index} is not finite ({value})")]
    NotFinite { index: usize, value: f32 },
}

/// The filter's two knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterConfig {
    v: f32,
    eps: f32,
}

impl FilterConfig {
    /// `v` is the significance threshold (0 sends everything), `eps` the floor of `|w|`.
    pub fn new(v: f32, eps: f32) -> Result<Self, FilterError> {
        if !v.is_finite() || v < 0.0 {
            return Err(FilterError::Threshold(v));
        }
        if !eps.is_finite() || eps <= 0.0 {
            return Err(FilterError::Epsilon(eps));
        }
        Ok(Self { v, eps })
    }

    pub fn v(&self) -> f32 {
        self.v
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// The relative-change threshold at local step `step`: `v / sqrt(step + 1)`.
    pub fn threshold(&self, step: u64) -> f32 {
        // f64 keeps sqrt exact enough for any realistic step count.
        (f64::from(self.v) / ((step as f64) + 1.0).sqrt()) as f32
    }
}

/// Entries of one tensor to push: parallel index and value lists, indices increasing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseDelta {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseDelta {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// What one filter call looked at and let through, for the per-step report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Entries examined (the tensor's length).
    pub considered: u64,
    /// Entries sent.
    pub sent: u64,
}

impl std::ops::AddAssign for FilterStats {
    fn add_assign(&mut self, rhs: Self) {
        self.considered += rhs.considered;
        self.sent += rhs.sent;
    }
}

/// A worker-local accumulator of not-yet-sent changes for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    acc: Vec<f32>,
}

impl Accumulator {
    /// An empty (all-zero) accumulator for a tensor of `len` entries.
    pub fn new(len: usize) -> Result<Self, FilterError> {
        if u32::try_from(len).is_err() {
            return Err(FilterError::TooLarge(len));
        }
        Ok(Self {
            acc: vec![0.0; len],
        })
    }

    pub fn len(&self) -> usize {
        self.acc.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acc.is_empty()
    }

    /// What is held and not yet sent.
    pub fn residual(&self) -> &[f32] {
        &self.acc
    }

    /// `acc += change`. A change of the wrong length or with a non-finite entry is refused whole.
    pub fn add(&mut self, change: &[f32]) -> Result<(), FilterError> {
        self.check_len(change.len())?;
        if let Some((index, &value)) = change.iter().enumerate().find(|(_, c)| !c.is_finite()) {
            return Err(FilterError::NotFinite { index, value });
        }
        for (a, c) in self.acc.iter_mut().zip(change) {
            *a += c;
        }
        Ok(())
    }

    /// Removes and returns the significant entries at local step `step`, judged against the
    /// worker's current `weights` of this tensor.
    pub fn take_significant(
        &mut self,
        weights: &[f32],
        config: &FilterConfig,
        step: u64,
    ) -> Result<(SparseDelta, FilterStats), FilterError> {
        self.check_len(weights.len())?;
        let threshold = config.threshold(step);
        let mut out = SparseDelta::default();
        for (i, (a, w)) in self.acc.iter_mut().zip(weights).enumerate() {
            // |a| / max(|w|, eps) > threshold, without the division; a == 0 is never sent.
            if *a != 0.0 && a.abs() > threshold * w.abs().max(config.eps) {
                out.indices.push(index_u32(i));
                out.values.push(*a);
                *a = 0.0;
            }
        }
        let stats = FilterStats {
            considered: self.acc.len() as u64,
            sent: out.len() as u64,
        };
        Ok((out, stats))
    }

    /// Rounds `delta` (just taken from this accumulator) to values f16 holds exactly, and keeps
    /// each rounding error here — error feedback, so pushed + held still equals the sum of the
    /// local changes, exactly (`v - f16(v)` is exact in f32). Entries that round to 0 stay here
    /// whole. Leaves everything as it is and returns false when a value is past f16's range.
    pub fn round_to_f16(&mut self, delta: &mut SparseDelta) -> bool {
        let rounded: Vec<f32> = delta
            .values
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        if rounded.iter().any(|h| !h.is_finite()) {
            return false;
        }
        let mut kept = SparseDelta::default();
        for ((&i, &v), h) in delta.indices.iter().zip(&delta.values).zip(rounded) {
            if let Some(a) = self.acc.get_mut(i as usize) {
                *a += v - h;
            }
            if h != 0.0 {
                kept.indices.push(i);
                kept.values.push(h);
            }
        }
        *delta = kept;
        true
    }

    /// Removes and returns every non-zero entry: what a worker pushes before it exits.
    pub fn take_all(&mut self) -> SparseDelta {
        let mut out = SparseDelta::default();
        for (i, a) in self.acc.iter_mut().enumerate() {
            if *a != 0.0 {
                out.indices.push(index_u32(i));
                out.values.push(*a);
                *a = 0.0;
            }
        }
        out
    }

    fn check_len(&self, got: usize) -> Result<(), FilterError> {
        if got == self.acc.len() {
            Ok(())
        } else {
            Err(FilterError::Length {
                expected: self.acc.len(),
                got,
            })
        }
    }
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).expect("Accumulator::new refuses tensors longer than u32::MAX")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values that are multiples of 1/64 in [-4, 4]: any sum of a few hundred of them is exact in
    /// f32, so "pushed + held == sum of changes" can be checked for equality, not closeness.
    fn exact_value() -> impl Strategy<Value = f32> {
        (-256i32..=256).prop_map(|k| k as f32 / 64.0)
    }

    fn scatter_add(into: &mut [f32], delta: &SparseDelta) {
        for (&i, &v) in delta.indices.iter().zip(&delta.values) {
            into[i as usize] += v;
        }
    }

    proptest! {
        #[test]
        fn pushed_plus_held_equals_sum_of_changes(
            len in 1usize..40,
            steps in 1usize..30,
            v in 0.0f32..2.0,
            half in any::<bool>(),
            seed_changes in proptest::collection::vec(exact_value(), 40 * 30),
            seed_weights in proptest::collection::vec(exact_value(), 40),
        ) {
            let cfg = FilterConfig::new(v, 1e-6).unwrap();
            let mut acc = Accumulator::new(len).unwrap();
            let weights = &seed_weights[..len];
            let mut pushed = vec![0.0f32; len];
            let mut expected = vec![0.0f32; len];
            for t in 0..steps {
                let change = &seed_changes[t * len..(t + 1) * len];
                for (e, c) in expected.iter_mut().zip(change) {
                    *e += c;
                }
                acc.add(change).unwrap();
                let (mut sent, stats) = acc.take_significant(weights, &cfg, t as u64).unwrap();
                prop_assert_eq!(stats.considered, len as u64);
                prop_assert_eq!(stats.sent, sent.len() as u64);
                if half {
                    // Pushing f16: what rounding takes off stays held.
                    prop_assert!(acc.round_to_f16(&mut sent));
                    prop_assert!(sent.values.iter().all(|&x| half::f16::from_f32(x).to_f32() == x));
                }
                prop_assert!(sent.indices.windows(2).all(|w| w[0] < w[1]));
                scatter_add(&mut pushed, &sent);
            }
            let total: Vec<f32> = pushed.iter().zip(acc.residual()).map(|(p, r)| p + r).collect();
            prop_assert_eq!(total, expected.clone());
            // Draining at exit leaves nothing behind and still loses nothing.
            let rest = acc.take_all();
            scatter_add(&mut pushed, &rest);
            prop_assert!(acc.residual().iter().all(|&a| a == 0.0));
            prop_assert_eq!(pushed, expected);
        }

        #[test]
        fn sends_exactly_the_entries_above_threshold(
            entries in proptest::collection::vec((exact_value(), exact_value()), 1..60),
            v in 0.0f32..3.0,
            step in 0u64..1000,
        ) {
            let (change, weights): (Vec<f32>, Vec<f32>) = entries.into_iter().unzip();
            let cfg = FilterConfig::new(v, 1e-3).unwrap();
            let mut acc = Accumulator::new(change.len()).unwrap();
            acc.add(&change).unwrap();
            let (sent, _) = acc.take_significant(&weights, &cfg, step).unwrap();
            let thr = cfg.threshold(step);
            for (i, (&c, &w)) in change.iter().zip(&weights).enumerate() {
                let significant = c != 0.0 && c.abs() > thr * w.abs().max(1e-3);
                let was_sent = sent.indices.contains(&(i as u32));
                prop_assert_eq!(significant, was_sent, "entry {} change {} weight {}", i, c, w);
                prop_assert_eq!(acc.residual()[i], if significant { 0.0 } else { c });
            }
        }

        #[test]
        fn v_zero_sends_every_nonzero_change(
            change in proptest::collection::vec(exact_value(), 1..60),
            weights in proptest::collection::vec(exact_value(), 60),
            step in 0u64..100,
        ) {
            let cfg = FilterConfig::new(0.0, 1e-6).unwrap();
            let mut acc = Accumulator::new(change.len()).unwrap();
            acc.add(&change).unwrap();
            let (sent, _) = acc.take_significant(&weights[..change.len()], &cfg, step).unwrap();
            let nonzero: Vec<u32> = (0..change.len() as u32).filter(|&i| change[i as usize] != 0.0).collect();
            prop_assert_eq!(sent.indices, nonzero);
            prop_assert!(acc.residual().iter().all(|&a| a == 0.0));
        }
    }

    #[test]
    fn eps_guards_zero_weights() {
        let cfg = FilterConfig::new(1.0, 0.01).unwrap();
        let mut acc = Accumulator::new(2).unwrap();
        acc.add(&[0.005, 0.02]).unwrap();
        // |0.005| / 0.01 = 0.5 <= 1 is held; |0.02| / 0.01 = 2 > 1 is sent. Unguarded, both
        // would divide by zero.
        let (sent, _) = acc.take_significant(&[0.0, 0.0], &cfg, 0).unwrap();
        assert_eq!(sent.indices, vec![1]);
        assert_eq!(acc.residual(), &[0.005, 0.0]);
    }

    #[test]
    fn threshold_decays_with_the_square_root_of_the_step() {
        let cfg = FilterConfig::new(0.6, 1e-6).unwrap();
        assert_eq!(cfg.threshold(0), 0.6);
        assert!((cfg.threshold(3) - 0.3).abs() < 1e-7);
        assert!((cfg.threshold(99) - 0.06).abs() < 1e-7);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        assert_eq!(
            FilterConfig::new(-0.1, 1e-6),
            Err(FilterError::Threshold(-0.1))
        );
        assert!(matches!(
            FilterConfig::new(f32::NAN, 1e-6),
            Err(FilterError::Threshold(_))
        ));
        assert_eq!(FilterConfig::new(0.1, 0.0), Err(FilterError::Epsilon(0.0)));
        let mut acc = Accumulator::new(3).unwrap();
        acc.add(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            acc.add(&[1.0]),
            Err(FilterError::Length {
                expected: 3,
                got: 1
            })
        );
        assert_eq!(
            acc.add(&[1.0, f32::INFINITY, 0.0]),
            Err(FilterError::NotFinite {
                index: 1,
                value: f32::INFINITY
            })
        );
        let cfg = FilterConfig::new(0.1, 1e-6).unwrap();
        assert_eq!(
            acc.take_significant(&[1.0, 1.0], &cfg, 0).unwrap_err(),
            FilterError::Length {
                expected: 3,
                got: 2
            }
        );
        assert_eq!(acc.residual(), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn stats_add_up() {
        let mut total = FilterStats::default();
        total += FilterStats {
            considered: 10,
            sent: 3,
        };
        total += FilterStats {
            considered: 10,
            sent: 1,
        };
        assert_eq!(
            total,
            FilterStats {
                considered: 20,
                sent: 4
            }
        );
    }
}
