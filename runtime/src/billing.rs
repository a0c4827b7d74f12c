//! The billing meter: one [`BillingRecord`] per invocation, priced like AWS Lambda, aggregated per
//! function and per job.
//!
//! Billed duration is the invocation's duration rounded up to 1 ms (Lambda since December 2020),
//! charged at `memory_mb / 1024` GB, plus a fixed fee per invocation. Cold-start initialization is
//! not billed (Lambda's behaviour for managed runtimes until 2025).
//!
//! ```
//! use std::time::Duration;
//! use cumulus_runtime::billing::Pricing;
//! let p = Pricing::default();
//! let (billed_ms, gb_s, cost) = p.bill(1024, 0, Duration::from_micros(99_001));
//! assert_eq!(billed_ms, 100);
//! assert!((gb_s - 0.1).abs() < 1e-12);
//! assert!((cost - (0.1 * p.gb_second_usd + p.invocation_usd)).abs() < 1e-15);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[pricing]`. Defaults are AWS Lambda's public on-demand prices (x86, us-east-1, first tier):
/// $0.0000166667 per GB-second and $0.20 per million requests. Lambda has no GPUs; the default GPU
/// price is an NVIDIA A10G (AWS g5.xlarge on demand, $1.006 per hour) per second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Pricing {
    /// Price of one GB-second of function memory, in USD.
    pub gb_second_usd: f64,
    /// Price of one invocation, in USD.
    pub invocation_usd: f64,
    /// Price of one GPU-second, in USD.
    pub gpu_second_usd: f64,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            gb_second_usd: 0.000_016_666_7,
            invocation_usd: 0.000_000_2,
            gpu_second_usd: 1.006 / 3600.0,
        }
    }
}

impl Pricing {
    /// Checks that every price is finite and not negative; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("gb_second_usd", self.gb_second_usd),
            ("invocation_usd", self.invocation_usd),
            ("gpu_second_usd", self.gpu_second_usd),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("pricing.{key}: {v} must be a finite price >= 0"));
            }
        }
        Ok(())
    }

    /// Bills one invocation: `(billed_ms, gb_seconds, cost_usd)`. Durations are rounded up to whole
    /// milliseconds, at least 1 ms.
    pub fn bill(&self, memory_mb: u32, gpu_ms: u64, duration: Duration) -> (u64, f64, f64) {
        let billed_ms = u64::try_from(duration.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        let gb_seconds = f64::from(memory_mb) / 1024.0 * billed_ms as f64 / 1000.0;
        let cost = gb_seconds * self.gb_second_usd
            + self.invocation_usd
            + gpu_ms as f64 / 1000.0 * self.gpu_second_usd;
        (billed_ms, gb_seconds, cost)
    }
}

/// The bill of one invocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BillingRecord {
    /// The function invoked.
    pub function: String,
    /// The job it was invoked for, if any.
    pub job: Option<String>,
    /// The request id sent to the instance.
    pub request_id: String,
    /// Memory tier, MB.
    pub memory_mb: u32,
    /// Measured duration, µs.
    pub duration_us: u64,
    /// Billed duration, ms (rounded up).
    pub billed_ms: u64,
    /// GB-seconds billed.
    pub gb_seconds: f64,
    /// Total price, USD.
    pub cost_usd: f64,
    /// `ok` or the failure's outcome label.
    pub outcome: String,
}

/// Running totals of many records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BillingTotals {
    /// Invocations billed.
    pub invocations: u64,
    /// Billed milliseconds.
    pub billed_ms: u64,
    /// GB-seconds.
    pub gb_seconds: f64,
    /// USD.
    pub cost_usd: f64,
}

impl BillingTotals {
    fn add(&mut self, r: &BillingRecord) {
        self.invocations += 1;
        self.billed_ms = self.billed_ms.saturating_add(r.billed_ms);
        self.gb_seconds += r.gb_seconds;
        self.cost_usd += r.cost_usd;
    }
}

/// Aggregates of every record seen: overall, per function and per job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Meter {
    /// Everything.
    pub total: BillingTotals,
    /// By function name.
    pub per_function: BTreeMap<String, BillingTotals>,
    /// By job id.
    pub per_job: BTreeMap<String, BillingTotals>,
}

impl Meter {
    /// Adds one record to the aggregates.
    pub fn record(&mut self, r: &BillingRecord) {
        self.total.add(r);
        self.per_function
            .entry(r.function.clone())
            .or_default()
            .add(r);
        if let Some(job) = &r.job {
            self.per_job.entry(job.clone()).or_default().add(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_one_ms_and_charges_tier() {
        let p = Pricing::default();
        assert_eq!(p.bill(128, 0, Duration::ZERO).0, 1);
        assert_eq!(p.bill(128, 0, Duration::from_nanos(1_000_001)).0, 2);
        let (_, gb_s, _) = p.bill(2048, 0, Duration::from_secs(1));
        assert!((gb_s - 2.0).abs() < 1e-12);
    }

    #[test]
    fn meter_aggregates_per_function_and_job() {
        let mut m = Meter::default();
        let rec = |f: &str, job: Option<&str>| BillingRecord {
            function: f.into(),
            job: job.map(Into::into),
            request_id: "r".into(),
            memory_mb: 1024,
            duration_us: 1000,
            billed_ms: 1,
            gb_seconds: 0.001,
            cost_usd: 1.0,
            outcome: "ok".into(),
        };
        m.record(&rec("a", Some("j1")));
        m.record(&rec("a", None));
        m.record(&rec("b", Some("j1")));
        assert_eq!(m.total.invocations, 3);
        assert_eq!(m.per_function["a"].invocations, 2);
        assert_eq!(m.per_job["j1"].invocations, 2);
    }
}
