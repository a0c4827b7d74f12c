//! The batching decision, as pure state (no clock, no async), so every rule is unit-tested:
//! how big a batch may be, how long the oldest request may wait for it to fill, and how the
//! bound adapts to what execution really costs (DESIGN.md §6, after INFless and Clipper).
//!
//! - **Profile**: `t_exec(b)` measured at load for b = 1, 2, 4, … and kept current with every
//!   batch that runs (an exponentially weighted average per measured size; linear in between).
//! - **Adaptive**: the batch bound is the largest `b` with `t_exec(b) ≤ SLO/2`, capped by AIMD
//!   (Clipper): a batch whose slowest request missed the SLO cuts the cap by a quarter, one
//!   within it raises the cap by one. Dispatch is work-conserving: a free instance takes what is
//!   queued at once, unless the batch is expected to fill (at the measured arrival rate) before
//!   the oldest request's budget `SLO − t_exec(b) − age` runs out — then it waits for it.
//! - **Fixed** (`batch`, `wait_ms`) and **off** (every request alone) are the baselines.

use std::time::Duration;

use cumulus_runtime::{Batching, ModelServing};

/// Weight of a new measurement in the profile's average.
const PROFILE_WEIGHT: f64 = 0.2;
/// Weight of a new gap in the arrival-rate estimate.
const RATE_WEIGHT: f64 = 0.05;

/// `t_exec(b)`: the time a batch of `b` rows takes to execute, ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// (batch size, ms), sorted by size, sizes distinct.
    points: Vec<(usize, f64)>,
}

impl Profile {
    /// From measured `(batch, ms)` points; `None` without a usable one. A batch never takes
    /// less time than a smaller one: a measurement above a larger batch's (noise, a first call
    /// on a fresh instance) is lowered to it.
    pub fn new(mut points: Vec<(usize, f64)>) -> Option<Self> {
        points.retain(|&(b, ms)| b > 0 && ms.is_finite() && ms >= 0.0);
        points.sort_by_key(|&(b, _)| b);
        points.dedup_by_key(|p| p.0);
        let mut floor = f64::INFINITY;
        for p in points.iter_mut().rev() {
            floor = floor.min(p.1);
            p.1 = floor;
        }
        (!points.is_empty()).then_some(Self { points })
    }

    /// The estimate for `b` rows: linear between measured sizes, and past the largest one
    /// linear in the rows with the slope of the last two points (never below the last point).
    pub fn ms(&self, b: usize) -> f64 {
        let b = b.max(1) as f64;
        let p = &self.points;
        let (b0, t0) = (p[0].0 as f64, p[0].1);
        if p.len() == 1 {
            return t0 * (b / b0).max(1.0);
        }
        if b <= b0 {
            return t0;
        }
        for w in p.windows(2) {
            let ((x0, y0), (x1, y1)) = ((w[0].0 as f64, w[0].1), (w[1].0 as f64, w[1].1));
            if b <= x1 {
                return y0 + (y1 - y0) * (b - x0) / (x1 - x0);
            }
        }
        let n = p.len();
        let ((x0, y0), (x1, y1)) = (
            (p[n - 2].0 as f64, p[n - 2].1),
            (p[n - 1].0 as f64, p[n - 1].1),
        );
        let slope = ((y1 - y0) / (x1 - x0)).max(0.0);
        y1 + slope * (b - x1)
    }

    /// Folds a measured execution of `b` rows into the profile.
    pub fn observe(&mut self, b: usize, ms: f64) {
        if b == 0 || !ms.is_finite() || ms < 0.0 {
            return;
        }
        match self.points.binary_search_by_key(&b, |&(x, _)| x) {
            Ok(i) => {
                let t = &mut self.points[i].1;
                *t += PROFILE_WEIGHT * (ms - *t);
            }
            Err(i) => self.points.insert(i, (b, ms)),
        }
    }
}

/// What the dispatcher should do with the queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send a batch of this many rows (at most) now.
    Dispatch(usize),
    /// Wait for more rows, at most this long.
    Wait(Duration),
}

/// The batching state of one model.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: Batching,
    slo_ms: f64,
    max_batch: usize,
    fixed_batch: usize,
    fixed_wait_ms: f64,
    profile: Profile,
    /// The AIMD cap on the batch bound.
    cap: usize,
    /// Estimated arrival rate, rows per ms (0 until measured).
    rate: f64,
}

impl Policy {
    pub fn new(serving: &ModelServing, profile: Profile) -> Self {
        Self {
            mode: serving.batching,
            slo_ms: serving.slo_p99_ms,
            max_batch: serving.max_batch_size,
            fixed_batch: serving.batch.unwrap_or(1).min(serving.max_batch_size),
            fixed_wait_ms: serving.wait_ms.unwrap_or(0.0),
            profile,
            cap: serving.max_batch_size,
            rate: 0.0,
        }
    }

    pub fn slo(&self) -> Duration {
        Duration::from_secs_f64(self.slo_ms / 1e3)
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The most rows a batch may have now.
    pub fn bound(&self) -> usize {
        match self.mode {
            Batching::Off => 1,
            Batching::Fixed => self.fixed_batch,
            Batching::Adaptive => {
                let half = self.slo_ms / 2.0;
                // The largest b within half the SLO (t_exec grows with b, so search up).
                let mut best = 1;
                for b in 1..=self.max_batch {
                    if self.profile.ms(b) <= half {
                        best = b;
                    } else {
                        break;
                    }
                }
                best.min(self.cap).max(1)
            }
        }
    }

    /// Expected execution time of a batch of `rows`, ms.
    pub fn exec_ms(&self, rows: usize) -> f64 {
        self.profile.ms(rows)
    }

    /// A request of `rows` rows arrived `gap` after the previous one.
    pub fn arrived(&mut self, rows: usize, gap: Duration) {
        let gap_ms = gap.as_secs_f64() * 1e3;
        if gap_ms <= 0.0 {
            return;
        }
        let sample = rows as f64 / gap_ms;
        if self.rate == 0.0 {
            self.rate = sample;
        } else {
            self.rate += RATE_WEIGHT * (sample - self.rate);
        }
    }

    /// What to do with `queued` rows whose oldest request has waited `age`, given that an
    /// instance is free (`idle_slots > 0`) — the dispatcher only asks then.
    pub fn decide(&self, queued: usize, age: Duration) -> Decision {
        let bound = self.bound();
        if queued >= bound {
            return Decision::Dispatch(bound);
        }
        let age_ms = age.as_secs_f64() * 1e3;
        let wait_ms = match self.mode {
            Batching::Off => 0.0,
            Batching::Fixed => self.fixed_wait_ms - age_ms,
            Batching::Adaptive => {
                let budget = self.slo_ms - self.exec_ms(bound) - age_ms;
                let missing = (bound - queued) as f64;
                // Wait only for a batch that is expected to fill within the budget; otherwise
                // the free instance takes what is there (work-conserving).
                if self.rate > 0.0 && missing / self.rate <= budget {
                    missing / self.rate
                } else {
                    0.0
                }
            }
        };
        if wait_ms <= 0.0 {
            Decision::Dispatch(bound)
        } else {
            Decision::Wait(Duration::from_secs_f64(wait_ms / 1e3))
        }
    }

    /// A batch of `rows` ran in `exec_ms`; its slowest request took `worst_ms` end to end.
    pub fn ran(&mut self, rows: usize, exec_ms: f64, worst_ms: f64) {
        self.profile.observe(rows, exec_ms);
        if self.mode != Batching::Adaptive {
            return;
        }
        if worst_ms > self.slo_ms {
            self.cap = (self.cap * 3 / 4).max(1);
        } else if rows >= self.cap {
            self.cap = (self.cap + 1).min(self.max_batch);
        }
    }

    /// When the request admitted now would finish, ms from now: the rows ahead of it (queued
    /// ones and the batches in flight) in rounds of `parallelism` batches of the bound.
    pub fn eta_ms(
        &self,
        queued_rows: usize,
        rows: usize,
        in_flight: usize,
        parallelism: usize,
    ) -> f64 {
        let bound = self.bound().max(1);
        let total = queued_rows + rows;
        let batches = total.div_ceil(bound) + in_flight;
        let rounds = batches.div_ceil(parallelism.max(1)).max(1);
        let batch_ms = self.exec_ms(total.min(bound));
        rounds as f64 * batch_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(mode: Batching) -> ModelServing {
        ModelServing {
            slo_p99_ms: 20.0,
            max_batch_size: 64,
            batching: mode,
            batch: (mode == Batching::Fixed).then_some(8),
            wait_ms: (mode == Batching::Fixed).then_some(4.0),
            ..ModelServing::default()
        }
    }

    /// 1 ms fixed + 0.25 ms a row.
    fn linear() -> Profile {
        Profile::new(vec![
            (1, 1.25),
            (2, 1.5),
            (4, 2.0),
            (8, 3.0),
            (16, 5.0),
            (32, 9.0),
        ])
        .unwrap()
    }

    #[test]
    fn the_profile_interpolates_and_extrapolates_linearly() {
        let p = linear();
        assert_eq!(p.ms(4), 2.0);
        assert!((p.ms(12) - 4.0).abs() < 1e-9);
        assert!((p.ms(64) - 17.0).abs() < 1e-9);
        assert_eq!(p.ms(0), 1.25);
        assert!(Profile::new(vec![(0, 1.0), (3, f64::NAN)]).is_none());
        // A noisy small batch is lowered to the larger one's time.
        let noisy = Profile::new(vec![(1, 7.0), (2, 1.0), (4, 2.0)]).unwrap();
        assert_eq!((noisy.ms(1), noisy.ms(2), noisy.ms(4)), (1.0, 1.0, 2.0));
        let one = Profile::new(vec![(4, 2.0)]).unwrap();
        assert_eq!((one.ms(2), one.ms(8)), (2.0, 4.0));
    }

    #[test]
    fn the_adaptive_bound_is_the_largest_batch_within_half_the_slo() {
        let p = Policy::new(&serving(Batching::Adaptive), linear());
        // t(b) = 1 + 0.25 b <= 10 ms  =>  b <= 36.
        assert_eq!(p.bound(), 36);
        assert_eq!(Policy::new(&serving(Batching::Off), linear()).bound(), 1);
        assert_eq!(Policy::new(&serving(Batching::Fixed), linear()).bound(), 8);
    }

    #[test]
    fn aimd_cuts_on_a_violation_and_recovers_one_at_a_time() {
        let mut p = Policy::new(&serving(Batching::Adaptive), linear());
        p.ran(36, 10.0, 25.0);
        assert_eq!(p.bound(), 36, "the cap was 64; 3/4 of it is 48");
        p.ran(36, 10.0, 25.0);
        assert_eq!(p.bound(), 36);
        p.ran(36, 10.0, 25.0);
        assert_eq!(p.bound(), 27);
        p.ran(27, 7.75, 12.0);
        assert_eq!(p.bound(), 28);
        p.ran(3, 1.75, 12.0);
        assert_eq!(p.bound(), 28, "only a full batch raises the cap");
    }

    #[test]
    fn measurements_move_the_profile() {
        let mut p = Policy::new(&serving(Batching::Adaptive), linear());
        for _ in 0..50 {
            p.ran(32, 18.0, 19.0);
        }
        // t(32) is now ~18 ms: batches of 32 no longer fit half the SLO.
        assert!(p.bound() < 32, "{}", p.bound());
    }

    #[test]
    fn a_full_batch_goes_at_once_and_a_partial_one_waits_only_if_it_will_fill() {
        let mut p = Policy::new(&serving(Batching::Adaptive), linear());
        assert_eq!(p.decide(40, Duration::ZERO), Decision::Dispatch(36));
        // Unknown arrival rate: work-conserving.
        assert_eq!(p.decide(3, Duration::ZERO), Decision::Dispatch(36));
        // 10 rows per ms: 33 missing rows take 3.3 ms, within 20 - 10 - 0 ms.
        p.arrived(10, Duration::from_millis(1));
        match p.decide(3, Duration::ZERO) {
            Decision::Wait(w) => assert!((w.as_secs_f64() * 1e3 - 3.3).abs() < 1e-6, "{w:?}"),
            other => panic!("{other:?}"),
        }
        // Too old to wait for it.
        assert_eq!(
            p.decide(3, Duration::from_millis(8)),
            Decision::Dispatch(36)
        );
    }

    #[test]
    fn fixed_waits_its_time_and_off_never_waits() {
        let p = Policy::new(&serving(Batching::Fixed), linear());
        assert_eq!(
            p.decide(3, Duration::from_millis(1)),
            Decision::Wait(Duration::from_millis(3))
        );
        assert_eq!(p.decide(3, Duration::from_millis(5)), Decision::Dispatch(8));
        assert_eq!(p.decide(9, Duration::ZERO), Decision::Dispatch(8));
        let off = Policy::new(&serving(Batching::Off), linear());
        assert_eq!(off.decide(5, Duration::ZERO), Decision::Dispatch(1));
    }

    #[test]
    fn the_eta_counts_rounds_of_batches() {
        let p = Policy::new(&serving(Batching::Fixed), linear());
        // 15 queued + 1 = 2 batches of 8, plus 2 in flight, on 2 instances: 2 rounds of t(8).
        assert_eq!(p.eta_ms(15, 1, 2, 2), 2.0 * 3.0);
        assert_eq!(p.eta_ms(0, 1, 0, 4), 1.25);
    }
}
