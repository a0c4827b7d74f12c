//! The batching decision, as pure state (no clock, no async), so every rule is unit-tested:
//! how big a batch may be, how long the oldest request may wait for it to fill, and how the
//! bound adapts to what execution really costs (DESIGN.md §6, after INFless and Clipper).
//!
//! - **Profile**: `t_exec(b)` measured at load for b = 1, 2, 4, … and kept current with every
//!   batch that runs (an exponentially weighted average per measured size; linear in between).
//! - **Adaptive**: the batch bound is the largest `b` with `t_exec(b) ≤ SLO/2`, capped by AIMD
//!   (Clipper): a batch whose execution took more than half the SLO cuts the cap by a quarter, a
//!   full one within it raises the cap by one. Dispatch is work-conserving: a free instance takes what is
//!   queued at once, unless the batch is expected to fill (at the measured arrival rate) within
//!   half of the oldest request's slack, `(SLO − t_exec(b))/2 − age` — then it waits for it. The
//!   other half is the margin for queueing behind batches in flight and for jitter.
//! - **Arrival rate**: rows over the mean gap between requests, both exponentially weighted
//!   averages. (An average of `rows/gap` would be dominated by the shortest gaps — for Poisson
//!   arrivals its expectation is unbounded — and would make the batcher wait for batches that
//!   never fill.)
//! - **Fixed** (`batch`, `wait_ms`) and **off** (every request alone) are the baselines.

use std::time::Duration;

use cumulus_runtime::{Batching, ModelServing};

/// Weight of a new measurement in the profile's average.
const PROFILE_WEIGHT: f64 = 0.2;
/// Weight of a new gap (and its rows) in the arrival-rate estimate.
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
    /// Mean gap between requests, ms, and mean rows per request (0 until measured).
    mean_gap_ms: f64,
    mean_rows: f64,
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
            mean_gap_ms: 0.0,
            mean_rows: 0.0,
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
        if !gap_ms.is_finite() {
            return;
        }
        if self.mean_rows == 0.0 {
            (self.mean_gap_ms, self.mean_rows) = (gap_ms, rows as f64);
        } else {
            self.mean_gap_ms += RATE_WEIGHT * (gap_ms - self.mean_gap_ms);
            self.mean_rows += RATE_WEIGHT * (rows as f64 - self.mean_rows);
        }
    }

    /// The estimated arrival rate, rows per ms (0 until measured).
    pub fn rate(&self) -> f64 {
        if self.mean_gap_ms > 0.0 {
            self.mean_rows / self.mean_gap_ms
        } else {
            0.0
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
                let budget = (self.slo_ms - self.exec_ms(bound)) / 2.0 - age_ms;
                let missing = (bound - queued) as f64;
                let rate = self.rate();
                // Wait only for a batch that is expected to fill within the budget; otherwise
                // the free instance takes what is there (work-conserving).
                if rate > 0.0 && missing / rate <= budget {
                    missing / rate
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

    /// A batch of `rows` ran in `exec_ms`.
    pub fn ran(&mut self, rows: usize, exec_ms: f64) {
        self.profile.observe(rows, exec_ms);
        if self.mode != Batching::Adaptive {
            return;
        }
        // The batch's own execution against its half of the SLO, as Clipper's AIMD measures
        // batch latency: a request that missed the SLO by queueing behind others (overload)
        // is admission's to refuse, and smaller batches would only lower the throughput.
        if exec_ms > self.slo_ms / 2.0 {
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
        // Batches of 8 that executed past half the SLO (10 ms): the cap falls 64, 48, 36, 27.
        p.ran(8, 11.0);
        assert_eq!(p.bound(), 36, "the cap was 64; 3/4 of it is 48");
        p.ran(8, 11.0);
        assert_eq!(p.bound(), 36);
        p.ran(8, 11.0);
        assert_eq!(p.bound(), 27);
        p.ran(27, 7.75);
        assert_eq!(p.bound(), 28);
        p.ran(3, 1.75);
        assert_eq!(p.bound(), 28, "only a full batch raises the cap");
    }

    #[test]
    fn measurements_move_the_profile() {
        let mut p = Policy::new(&serving(Batching::Adaptive), linear());
        for _ in 0..50 {
            p.ran(32, 18.0);
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
        // 10 rows per ms: 33 missing rows take 3.3 ms, within (20 - 10) / 2 - 0 ms.
        p.arrived(10, Duration::from_millis(1));
        match p.decide(3, Duration::ZERO) {
            Decision::Wait(w) => assert!((w.as_secs_f64() * 1e3 - 3.3).abs() < 1e-6, "{w:?}"),
            other => panic!("{other:?}"),
        }
        // Too old to wait for it.
        assert_eq!(
            p.decide(3, Duration::from_millis(2)),
            Decision::Dispatch(36)
        );
    }

    #[test]
    fn the_arrival_rate_of_poisson_requests_is_their_mean_rate() {
        // Exponential gaps of mean 0.25 ms (4 rows per ms), from a fixed LCG.
        let mut p = Policy::new(&serving(Batching::Adaptive), linear());
        let mut x: u64 = 12345;
        let mut rates = Vec::new();
        for i in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            p.arrived(1, Duration::from_secs_f64(-u.ln() * 0.25e-3));
            if i > 1_000 {
                rates.push(p.rate());
            }
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        assert!((mean - 4.0).abs() < 0.4, "estimated {mean} rows/ms for 4");
        // A batch that would take 33 / 4 = 8.25 ms to fill is not waited for (budget 5 ms).
        assert_eq!(p.decide(3, Duration::ZERO), Decision::Dispatch(36));
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
