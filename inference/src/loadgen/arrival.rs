//! Arrival processes: when each request of an open-loop run is due, drawn once from a seed before
//! the run starts, so the load does not depend on how the server answers.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};

use super::error::LoadgenError;

/// How requests arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// Poisson arrivals at `rate` per second: independent, exponential gaps of mean `1 / rate`.
    Poisson { rate: f64 },
    /// Exactly `rate` per second, evenly spaced (what wrk2 and oha `-q` send).
    Constant { rate: f64 },
    /// A two-state Markov-modulated Poisson process: "on" periods (exponential, mean `mean_on_s`)
    /// at `rate_on`, alternating with "off" periods (exponential, mean `mean_off_s`) at
    /// `rate_off` (often 0). The run starts in an "on" period.
    OnOff {
        rate_on: f64,
        rate_off: f64,
        mean_on_s: f64,
        mean_off_s: f64,
    },
}

impl Arrival {
    /// An on/off process of long-run mean `mean_rate` whose "on" rate is `peak_to_mean` times the
    /// mean; the "off" rate is whatever keeps the mean (0 when `peak_to_mean = (on + off) / on`).
    pub fn bursty(
        mean_rate: f64,
        peak_to_mean: f64,
        mean_on_s: f64,
        mean_off_s: f64,
    ) -> Result<Self, LoadgenError> {
        let rate_on = mean_rate * peak_to_mean;
        let rate_off = (mean_rate * (mean_on_s + mean_off_s) - rate_on * mean_on_s) / mean_off_s;
        // Rounding can leave -1e-12 where the caller asked for exactly zero.
        let rate_off = if rate_off.abs() < 1e-9 * mean_rate.max(1.0) {
            0.0
        } else {
            rate_off
        };
        let arrival = Self::OnOff {
            rate_on,
            rate_off,
            mean_on_s,
            mean_off_s,
        };
        arrival.validate()?;
        Ok(arrival)
    }

    /// The long-run mean rate, requests per second.
    pub fn mean_rate(&self) -> f64 {
        match *self {
            Self::Poisson { rate } | Self::Constant { rate } => rate,
            Self::OnOff {
                rate_on,
                rate_off,
                mean_on_s,
                mean_off_s,
            } => (rate_on * mean_on_s + rate_off * mean_off_s) / (mean_on_s + mean_off_s),
        }
    }

    /// The same process at mean rate `rate`: every rate is scaled, the period lengths are kept.
    pub fn at_rate(&self, rate: f64) -> Self {
        let factor = rate / self.mean_rate();
        match *self {
            Self::Poisson { .. } => Self::Poisson { rate },
            Self::Constant { .. } => Self::Constant { rate },
            Self::OnOff {
                rate_on,
                rate_off,
                mean_on_s,
                mean_off_s,
            } => Self::OnOff {
                rate_on: rate_on * factor,
                rate_off: rate_off * factor,
                mean_on_s,
                mean_off_s,
            },
        }
    }

    /// Rates finite and positive (the off rate may be 0), period means finite and positive.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(LoadgenError::Spec(format!(
                    "arrival.{field} must be finite and > 0, got {v}"
                )))
            }
        };
        match *self {
            Self::Poisson { rate } | Self::Constant { rate } => positive("rate", rate),
            Self::OnOff {
                rate_on,
                rate_off,
                mean_on_s,
                mean_off_s,
            } => {
                positive("rate_on", rate_on)?;
                if !(rate_off.is_finite() && rate_off >= 0.0) {
                    return Err(LoadgenError::Spec(format!(
                        "arrival.rate_off must be finite and >= 0, got {rate_off} (a peak-to-mean \
                         ratio above (on + off) / on would need a negative off rate)"
                    )));
                }
                positive("mean_on_s", mean_on_s)?;
                positive("mean_off_s", mean_off_s)
            }
        }
    }

    /// Send offsets from the start of the run, ascending, every one in `[0, horizon)`.
    pub fn schedule(&self, horizon: Duration, seed: u64) -> Result<Vec<Duration>, LoadgenError> {
        self.validate()?;
        let end = horizon.as_secs_f64();
        let expected = self.mean_rate() * end;
        if expected > MAX_SCHEDULED as f64 {
            return Err(LoadgenError::Spec(format!(
                "{expected:.0} requests expected (rate x duration); at most {MAX_SCHEDULED} per run"
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(expected.ceil() as usize + 16);
        match *self {
            Self::Constant { rate } => {
                let mut i = 0u64;
                loop {
                    // Division rather than i x gap keeps offsets like 50 / 200 = 0.25 exact.
                    let t = i as f64 / rate;
                    if t >= end {
                        break;
                    }
                    out.push(Duration::from_secs_f64(t));
                    i += 1;
                }
            }
            Self::Poisson { rate } => {
                let gap = exp(rate)?;
                let mut t = gap.sample(&mut rng);
                while t < end {
                    out.push(Duration::from_secs_f64(t));
                    t += gap.sample(&mut rng);
                }
            }
            Self::OnOff {
                rate_on,
                rate_off,
                mean_on_s,
                mean_off_s,
            } => {
                let on_len = exp(1.0 / mean_on_s)?;
                let off_len = exp(1.0 / mean_off_s)?;
                let (mut t, mut on) = (0.0, true);
                while t < end {
                    let (len, rate) = if on {
                        (on_len.sample(&mut rng), rate_on)
                    } else {
                        (off_len.sample(&mut rng), rate_off)
                    };
                    let period_end = (t + len).min(end);
                    // Poisson within the period; memorylessness makes restarting at each
                    // boundary exact.
                    if rate > 0.0 {
                        let gap = exp(rate)?;
                        let mut s = t + gap.sample(&mut rng);
                        while s < period_end {
                            out.push(Duration::from_secs_f64(s));
                            s += gap.sample(&mut rng);
                        }
                    }
                    t += len;
                    on = !on;
                }
            }
        }
        Ok(out)
    }
}

/// Most requests one run may schedule (the schedule is held in memory: 16 bytes each).
pub const MAX_SCHEDULED: usize = 50_000_000;

fn exp(rate: f64) -> Result<Exp<f64>, LoadgenError> {
    Exp::new(rate).map_err(|e| LoadgenError::Spec(format!("exponential of rate {rate}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(offsets: &[Duration]) -> Vec<f64> {
        offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect()
    }

    #[test]
    fn poisson_has_the_mean_rate_and_exponential_gaps() {
        let rate = 500.0;
        let offsets = Arrival::Poisson { rate }
            .schedule(Duration::from_secs(200), 7)
            .expect("valid process");
        // 100,000 expected; a Poisson count has sd ~316, so 2% is > 6 sd.
        let n = offsets.len() as f64;
        assert!((n / 200.0 - rate).abs() < 0.02 * rate, "{n} arrivals");
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "ascending");
        assert!(offsets.iter().all(|t| *t < Duration::from_secs(200)));

        let g = gaps(&offsets);
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        assert!((mean * rate - 1.0).abs() < 0.02, "mean gap {mean}");
        // Exponential: sd equals the mean (coefficient of variation 1) ...
        let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.03, "coefficient of variation {cv}");
        // ... and the empirical CDF follows 1 - exp(-rate x) (Kolmogorov-Smirnov distance; the
        // 1% critical value at this n is ~0.005).
        let mut sorted = g.clone();
        sorted.sort_by(f64::total_cmp);
        let m = sorted.len() as f64;
        let ks = sorted
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let cdf = 1.0 - (-rate * x).exp();
                ((i as f64 + 1.0) / m - cdf)
                    .abs()
                    .max((i as f64 / m - cdf).abs())
            })
            .fold(0.0, f64::max);
        assert!(ks < 0.01, "KS distance {ks}");
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let p = Arrival::Poisson { rate: 100.0 };
        let h = Duration::from_secs(5);
        assert_eq!(p.schedule(h, 1).unwrap(), p.schedule(h, 1).unwrap());
        assert_ne!(p.schedule(h, 1).unwrap(), p.schedule(h, 2).unwrap());
    }

    #[test]
    fn constant_is_evenly_spaced() {
        let offsets = Arrival::Constant { rate: 250.0 }
            .schedule(Duration::from_secs(2), 0)
            .unwrap();
        assert_eq!(offsets.len(), 500);
        assert!(gaps(&offsets).iter().all(|g| (g - 0.004).abs() < 1e-9));
    }

    #[test]
    fn bursty_keeps_the_mean_and_is_burstier_than_poisson() {
        // Peak 4x the mean, on 0.25 s / off 0.75 s: the off rate is exactly 0.
        let arrival = Arrival::bursty(200.0, 4.0, 0.25, 0.75).unwrap();
        let Arrival::OnOff { rate_off, .. } = arrival else {
            panic!("bursty is on/off")
        };
        assert_eq!(rate_off, 0.0);
        assert!((arrival.mean_rate() - 200.0).abs() < 1e-9);
        let h = 400.0;
        let offsets = arrival.schedule(Duration::from_secs_f64(h), 3).unwrap();
        let rate = offsets.len() as f64 / h;
        // ~400 on/off cycles: the count's sd is ~3% of the mean here, so allow 10%.
        assert!((rate - 200.0).abs() < 20.0, "rate {rate}");
        // Counts per 100 ms window are over-dispersed (Poisson would give variance = mean).
        let mut counts = vec![0f64; (h * 10.0) as usize];
        for t in &offsets {
            counts[(t.as_secs_f64() * 10.0) as usize] += 1.0;
        }
        let mean = counts.iter().sum::<f64>() / counts.len() as f64;
        let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / counts.len() as f64;
        assert!(var > 3.0 * mean, "index of dispersion {}", var / mean);
    }

    #[test]
    fn at_rate_scales_every_rate() {
        let a = Arrival::bursty(100.0, 2.0, 1.0, 1.0).unwrap();
        let b = a.at_rate(300.0);
        assert!((b.mean_rate() - 300.0).abs() < 1e-9);
        assert_eq!(
            Arrival::Poisson { rate: 1.0 }.at_rate(5.0),
            Arrival::Poisson { rate: 5.0 }
        );
    }

    #[test]
    fn bad_processes_are_refused_with_the_field() {
        let err = Arrival::Poisson { rate: 0.0 }
            .schedule(Duration::from_secs(1), 0)
            .unwrap_err();
        assert!(err.to_string().contains("arrival.rate"), "{err}");
        let err = Arrival::bursty(100.0, 10.0, 0.5, 0.5).unwrap_err();
        assert!(err.to_string().contains("rate_off"), "{err}");
        let err = Arrival::Poisson { rate: 1e9 }
            .schedule(Duration::from_secs(3600), 0)
            .unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
