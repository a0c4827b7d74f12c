//! What one run records: HDR histograms in microseconds and the counts, shared by the request
//! tasks behind one mutex (a completion holds it for well under a microsecond).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::transport::Failure;

/// Highest recordable latency, 1 hour in microseconds (longer values are clamped to it).
const MAX_US: u64 = 3_600_000_000;

/// Percentiles of a latency distribution, in milliseconds (1 µs resolution, 3 significant digits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// The summary of a histogram of microseconds (all zeros when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("1 µs .. 1 h at 3 digits is a valid range")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Counts and histograms of the measured (post-warm-up) requests.
pub(crate) struct Recorder {
    slo: Duration,
    /// Latency of OK answers, from the scheduled send time to the end of the answer.
    pub latency: Histogram<u64>,
    /// How late the dispatcher sent each request after its scheduled time.
    pub send_lag: Histogram<u64>,
    pub sent: u64,
    pub dropped: u64,
    pub completed: u64,
    pub ok: u64,
    pub ok_within_slo: u64,
    pub overloaded: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new(slo: Duration) -> Self {
        Self {
            slo,
            latency: histogram(),
            send_lag: histogram(),
            sent: 0,
            dropped: 0,
            completed: 0,
            ok: 0,
            ok_within_slo: 0,
            overloaded: 0,
            errors: BTreeMap::new(),
        }
    }

    pub fn sent(&mut self, lag: Duration) {
        self.sent += 1;
        self.send_lag.saturating_record(micros(lag));
    }

    pub fn dropped(&mut self) {
        self.dropped += 1;
        self.fail(&Failure::Dropped);
    }

    fn fail(&mut self, failure: &Failure) {
        if failure.is_overload() {
            self.overloaded += 1;
        }
        *self.errors.entry(failure.key()).or_default() += 1;
    }

    /// One answer (or timeout), `latency` counted from the scheduled send time.
    pub fn completed(&mut self, latency: Duration, outcome: &Result<(), Failure>) {
        self.completed += 1;
        match outcome {
            Ok(()) => {
                self.ok += 1;
                if latency <= self.slo {
                    self.ok_within_slo += 1;
                }
                self.latency.saturating_record(micros(latency));
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// Every request that did not end OK: failed answers, timeouts and drops.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_splits_ok_slo_and_failures() {
        let mut r = Recorder::new(Duration::from_millis(25));
        r.sent(Duration::from_micros(10));
        r.completed(Duration::from_millis(5), &Ok(()));
        r.completed(Duration::from_millis(30), &Ok(()));
        r.completed(Duration::from_millis(1), &Err(Failure::Http(429)));
        r.completed(Duration::from_millis(1), &Err(Failure::Http(500)));
        r.completed(Duration::from_secs(9), &Err(Failure::Timeout));
        r.dropped();
        assert_eq!((r.ok, r.ok_within_slo, r.completed), (2, 1, 5));
        assert_eq!(r.overloaded, 1);
        assert_eq!(r.error_total(), 4);
        assert_eq!(r.errors["http_429"], 1);
        assert_eq!(r.errors["dropped"], 1);
        let s = LatencySummary::of(&r.latency);
        assert_eq!(s.count, 2);
        assert!((s.max_ms - 30.0).abs() < 0.05, "{s:?}");
        assert!((s.min_ms - 5.0).abs() < 0.01, "{s:?}");
        assert_eq!(LatencySummary::of(&histogram()), LatencySummary::default());
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            h.record(us * 10).unwrap(); // 10 µs .. 100 ms, uniform
        }
        let s = LatencySummary::of(&h);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.p999_ms - 99.9).abs() < 0.1, "{s:?}");
        assert!((s.mean_ms - 50.005).abs() < 0.05, "{s:?}");
    }
}
