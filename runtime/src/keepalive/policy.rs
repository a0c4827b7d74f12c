//! Keep-alive policies: a fixed TTL, and the hybrid histogram policy of "Serverless in the Wild"
//! (Shahrad et al., ATC'20). Both are pure: they see idle times handed to them and never read a
//! clock, so the platform and the trace simulator drive them alike.
//!
//! After each invocation ends at time `e`, the policy's [`Windows`] say when to load the instance
//! again and for how long to keep it: loaded during `[e + prewarm, e + prewarm + keep_alive]`; with
//! `prewarm > 0` the instance is unloaded at `e` and pre-warmed at `e + prewarm`.
//!
//! ```
//! use std::time::Duration;
//! use cumulus_runtime::keepalive::{HybridHistogram, HybridParams, KeepAlivePolicy};
//! let mut p = HybridHistogram::new(HybridParams::default());
//! for _ in 0..30 { p.observe_idle(Duration::from_secs(30 * 60 + 10)); } // every 30 minutes
//! let w = p.windows();
//! assert!(w.prewarm >= Duration::from_secs(26 * 60) && w.prewarm < Duration::from_secs(30 * 60));
//! assert!(w.prewarm + w.keep_alive >= Duration::from_secs(31 * 60));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When to pre-warm and how long to keep an instance after an invocation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Delay from the end of an invocation to (re)loading the instance; 0 = keep it loaded.
    pub prewarm: Duration,
    /// How long the instance stays loaded once (re)loaded.
    pub keep_alive: Duration,
}

/// A per-function keep-alive policy, fed with idle times; time is injected, never read.
pub trait KeepAlivePolicy: Send + Sync + fmt::Debug {
    /// An invocation arrived `idle` after the previous invocation of the function ended.
    fn observe_idle(&mut self, idle: Duration);
    /// The windows to apply from the end of the invocation that just finished.
    fn windows(&self) -> Windows;
}

/// `keep_alive` of a function in `cumulus.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeepAliveConfig {
    /// Keep every idle instance for `ttl_ms`, then stop it (AWS Lambda, OpenWhisk: 10 minutes).
    Fixed {
        /// Time to live of an idle instance, ms.
        ttl_ms: u64,
    },
    /// The hybrid histogram policy.
    Hybrid(HybridParams),
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig::Fixed { ttl_ms: 600_000 }
    }
}

impl KeepAliveConfig {
    /// Checks ranges; the error starts with the key (below `keep_alive.`).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            KeepAliveConfig::Fixed { ttl_ms } if *ttl_ms > 86_400_000 => {
                Err(format!("ttl_ms: {ttl_ms} exceeds one day"))
            }
            KeepAliveConfig::Fixed { .. } => Ok(()),
            KeepAliveConfig::Hybrid(p) => p.validate(),
        }
    }

    /// A fresh policy of this configuration, for one function.
    pub fn build(&self) -> Box<dyn KeepAlivePolicy> {
        match self {
            KeepAliveConfig::Fixed { ttl_ms } => Box::new(FixedTtl {
                ttl: Duration::from_millis(*ttl_ms),
            }),
            KeepAliveConfig::Hybrid(p) => Box::new(HybridHistogram::new(p.clone())),
        }
    }
}

/// Fixed keep-alive: never pre-warm, keep for `ttl`.
#[derive(Debug, Clone)]
pub struct FixedTtl {
    /// How long an idle instance is kept.
    pub ttl: Duration,
}

impl KeepAlivePolicy for FixedTtl {
    fn observe_idle(&mut self, _idle: Duration) {}
    fn windows(&self) -> Windows {
        Windows {
            prewarm: Duration::ZERO,
            keep_alive: self.ttl,
        }
    }
}

/// Parameters of the hybrid histogram policy; the defaults are the paper's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HybridParams {
    /// Histogram range, minutes (paper: 4 hours).
    pub range_minutes: u32,
    /// Bin width, minutes (paper: 1 minute).
    pub bin_minutes: u32,
    /// Percentile of idle times that sets the pre-warm window (paper: 5).
    pub head_percentile: f64,
    /// Percentile of idle times that sets the end of the keep-alive window (paper: 99).
    pub tail_percentile: f64,
    /// Margin taken off the head and added to the tail (paper: 10%).
    pub margin: f64,
    /// Fewer in-range idle times than this: the histogram is not representative.
    pub min_samples: u64,
    /// Coefficient of variation of the bin counts below this: not representative (paper: 2).
    pub cv_threshold: f64,
    /// Keep-alive used while the histogram is not representative, ms (paper: the histogram range;
    /// our default is 10 minutes, see the crate docs).
    pub fallback_keep_alive_ms: u64,
    /// Share of idle times beyond the range above which the time-series path is used (paper: "many").
    pub oob_share: f64,
    /// Margin of the time-series path: pre-warm at `(1 - m)` of the predicted idle time and keep to
    /// `(1 + m)` (paper: 15%).
    pub oob_margin: f64,
}

impl Default for HybridParams {
    fn default() -> Self {
        Self {
            range_minutes: 240,
            bin_minutes: 1,
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.10,
            min_samples: 10,
            cv_threshold: 2.0,
            fallback_keep_alive_ms: 600_000,
            oob_share: 0.5,
            oob_margin: 0.15,
        }
    }
}

impl HybridParams {
    fn validate(&self) -> Result<(), String> {
        if self.bin_minutes == 0
            || self.range_minutes < self.bin_minutes
            || self.range_minutes > 7 * 24 * 60
        {
            return Err(
                "range_minutes/bin_minutes: need 1 <= bin_minutes <= range_minutes <= 10080".into(),
            );
        }
        let pct_ok = |p: f64| p.is_finite() && (0.0..=100.0).contains(&p);
        if !pct_ok(self.head_percentile)
            || !pct_ok(self.tail_percentile)
            || self.head_percentile > self.tail_percentile
        {
            return Err("head_percentile/tail_percentile: need 0 <= head <= tail <= 100".into());
        }
        for (k, v) in [
            ("margin", self.margin),
            ("oob_share", self.oob_share),
            ("oob_margin", self.oob_margin),
        ] {
            if !v.is_finite() || !(0.0..1.0).contains(&v) {
                return Err(format!("{k}: {v} must be in [0, 1)"));
            }
        }
        if !self.cv_threshold.is_finite() || self.cv_threshold < 0.0 {
            return Err("cv_threshold: must be finite and >= 0".into());
        }
        if self.fallback_keep_alive_ms > 86_400_000 {
            return Err("fallback_keep_alive_ms: exceeds one day".into());
        }
        Ok(())
    }
}

/// Recent idle times kept for the out-of-range predictor.
const RECENT_IDLE_TIMES: usize = 16;

/// The hybrid histogram policy: a per-function histogram of idle times (1-minute bins over 4
/// hours). Pre-warm at the 5th percentile less 10%, keep alive until the 99th percentile plus 10%.
/// Not representative (too few samples, or bin counts too uniform): a fixed window. Mostly
/// out-of-range idle times: predict the next idle time from recent ones (the paper fits ARIMA; we
/// use the mean of the recent idle times, which is what ARIMA(0,0,0) predicts) and load the
/// instance within ±15% of it.
#[derive(Debug, Clone)]
pub struct HybridHistogram {
    params: HybridParams,
    bins: Vec<u64>,
    in_range: u64,
    out_of_range: u64,
    recent: VecDeque<Duration>,
}

impl HybridHistogram {
    /// An empty histogram.
    pub fn new(params: HybridParams) -> Self {
        let n = (params.range_minutes / params.bin_minutes.max(1)).max(1) as usize;
        Self {
            params,
            bins: vec![0; n],
            in_range: 0,
            out_of_range: 0,
            recent: VecDeque::new(),
        }
    }

    fn bin_width(&self) -> Duration {
        Duration::from_secs(u64::from(self.params.bin_minutes) * 60)
    }

    /// Coefficient of variation of the bin counts.
    fn bin_cv(&self) -> f64 {
        let n = self.bins.len() as f64;
        let mean = self.in_range as f64 / n;
        if mean == 0.0 {
            return 0.0;
        }
        let var = self
            .bins
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        var.sqrt() / mean
    }

    /// Index of the bin holding the `p`-th percentile of in-range idle times.
    fn percentile_bin(&self, p: f64) -> usize {
        let target = ((p / 100.0) * self.in_range as f64).ceil().max(1.0) as u64;
        let mut cum = 0;
        for (i, &c) in self.bins.iter().enumerate() {
            cum += c;
            if cum >= target {
                return i;
            }
        }
        self.bins.len() - 1
    }
}

impl KeepAlivePolicy for HybridHistogram {
    fn observe_idle(&mut self, idle: Duration) {
        let bin = (idle.as_secs() / self.bin_width().as_secs().max(1)) as usize;
        match self.bins.get_mut(bin) {
            Some(c) => {
                *c += 1;
                self.in_range += 1;
            }
            None => self.out_of_range += 1,
        }
        if self.recent.len() == RECENT_IDLE_TIMES {
            self.recent.pop_front();
        }
        self.recent.push_back(idle);
    }

    fn windows(&self) -> Windows {
        let p = &self.params;
        let total = self.in_range + self.out_of_range;
        if total > 0 && self.out_of_range as f64 / total as f64 > p.oob_share {
            let n = self.recent.len().max(1) as u32;
            let predicted = self.recent.iter().sum::<Duration>() / n;
            let prewarm = predicted.mul_f64(1.0 - p.oob_margin);
            return Windows {
                prewarm,
                keep_alive: predicted.mul_f64(2.0 * p.oob_margin),
            };
        }
        if self.in_range < p.min_samples || self.bin_cv() < p.cv_threshold {
            return Windows {
                prewarm: Duration::ZERO,
                keep_alive: Duration::from_millis(p.fallback_keep_alive_ms),
            };
        }
        let width = self.bin_width();
        let head = width * self.percentile_bin(p.head_percentile) as u32;
        let tail = width * (self.percentile_bin(p.tail_percentile) as u32 + 1);
        let prewarm = head.mul_f64(1.0 - p.margin);
        let until = tail.mul_f64(1.0 + p.margin);
        Windows {
            prewarm,
            keep_alive: until.saturating_sub(prewarm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn fixed_never_prewarms() {
        let p = KeepAliveConfig::Fixed { ttl_ms: 200 }.build();
        assert_eq!(
            p.windows(),
            Windows {
                prewarm: Duration::ZERO,
                keep_alive: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn too_few_samples_fall_back() {
        let mut p = HybridHistogram::new(HybridParams::default());
        for _ in 0..3 {
            p.observe_idle(MIN * 20);
        }
        assert_eq!(p.windows().prewarm, Duration::ZERO);
        assert_eq!(p.windows().keep_alive, Duration::from_millis(600_000));
    }

    #[test]
    fn uniform_idle_times_are_not_representative() {
        let mut p = HybridHistogram::new(HybridParams::default());
        for m in 0..240 {
            p.observe_idle(MIN * m + Duration::from_secs(1));
        }
        assert!(p.bin_cv() < 2.0);
        assert_eq!(p.windows().prewarm, Duration::ZERO);
    }

    #[test]
    fn periodic_function_gets_prewarm_and_tight_keep_alive() {
        let mut p = HybridHistogram::new(HybridParams::default());
        for _ in 0..50 {
            p.observe_idle(MIN * 45 + Duration::from_secs(20));
        }
        let w = p.windows();
        assert_eq!(w.prewarm, (MIN * 45).mul_f64(0.9));
        assert_eq!(w.prewarm + w.keep_alive, (MIN * 46).mul_f64(1.1));
    }

    #[test]
    fn out_of_range_idle_times_use_the_predictor() {
        let mut p = HybridHistogram::new(HybridParams::default());
        for _ in 0..5 {
            p.observe_idle(MIN * 600);
        }
        let w = p.windows();
        assert_eq!(w.prewarm, (MIN * 600).mul_f64(0.85));
        assert_eq!(w.keep_alive, (MIN * 600).mul_f64(0.30));
    }
}
