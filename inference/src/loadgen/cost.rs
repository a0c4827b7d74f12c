//! Cost per million requests, kept deliberately simple:
//!
//! - when the server reports what it billed (Cumulus exports the monotonic gauge
//!   `cumulus_runtime_billed_gb_seconds` on `/metrics`), the billed GB-seconds of the run times
//!   `gb_second_usd`;
//! - otherwise (a peer that bills nothing) the server process tree's CPU-seconds times
//!   `vcpu_second_usd`, the price of one vCPU-second of a function (by default Lambda's: 1 vCPU
//!   comes with 1,769 MB, so 1.769 GB-s at $0.0000166667);
//!
//! plus `invocation_usd` per request either way, divided by the run's OK answers.

use serde::{Deserialize, Serialize};

use super::error::{LoadgenError, Result};

/// The Prometheus metric a Cumulus gateway reports its billed GB-seconds in.
pub const BILLED_GB_SECONDS_METRIC: &str = "cumulus_runtime_billed_gb_seconds";

/// Prices (USD) behind [`RunResult::cost_per_million_usd`](super::RunResult).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostModel {
    /// Price of one GB-second of function memory (applied to server-reported billed GB-s).
    pub gb_second_usd: f64,
    /// Price of one vCPU-second (applied to measured CPU-seconds when nothing is billed).
    pub vcpu_second_usd: f64,
    /// Price of one invocation.
    pub invocation_usd: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        let gb_second_usd = 0.000_016_666_7;
        Self {
            gb_second_usd,
            vcpu_second_usd: 1.769 * gb_second_usd,
            invocation_usd: 0.000_000_2,
        }
    }
}

/// Which measurement a cost was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostBasis {
    BilledGbSeconds,
    CpuSeconds,
}

impl CostModel {
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("gb_second_usd", self.gb_second_usd),
            ("vcpu_second_usd", self.vcpu_second_usd),
            ("invocation_usd", self.invocation_usd),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(LoadgenError::Spec(format!(
                    "cost.{key}: {v} must be a finite price >= 0"
                )));
            }
        }
        Ok(())
    }

    /// USD per million requests over `requests` OK answers, from billed GB-s when given, else
    /// from CPU-ms; `None` when there is neither or no request succeeded.
    pub fn per_million(
        &self,
        requests: u64,
        billed_gb_seconds: Option<f64>,
        cpu_ms: Option<f64>,
    ) -> Option<(f64, CostBasis)> {
        if requests == 0 {
            return None;
        }
        let (compute, basis) = match (billed_gb_seconds, cpu_ms) {
            (Some(gbs), _) => (gbs * self.gb_second_usd, CostBasis::BilledGbSeconds),
            (None, Some(ms)) => (ms / 1000.0 * self.vcpu_second_usd, CostBasis::CpuSeconds),
            (None, None) => return None,
        };
        Some((
            (compute / requests as f64 + self.invocation_usd) * 1e6,
            basis,
        ))
    }
}

/// The sum of every series of `metric` in a Prometheus text exposition (`None` if absent).
pub fn prometheus_sum(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        // The name must end here: `metric{...} v` or `metric v`, not `metric_total v`.
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Scrape `url` and sum `metric`.
pub(crate) async fn scrape(http: &reqwest::Client, url: &str, metric: &str) -> Result<Option<f64>> {
    let fail = |reason: String| LoadgenError::Metrics {
        url: url.to_string(),
        reason,
    };
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("status {}", resp.status())));
    }
    let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
    Ok(prometheus_sum(&text, metric))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_gb_seconds_win_over_cpu() {
        let c = CostModel {
            gb_second_usd: 1e-5,
            vcpu_second_usd: 2e-5,
            invocation_usd: 1e-7,
        };
        // 2 GB-s x 1e-5 $ over 1000 requests: 2e-8 $ each + 1e-7 -> 0.12 $ per million.
        let (usd, basis) = c.per_million(1000, Some(2.0), Some(99.0)).unwrap();
        assert!((usd - 0.12).abs() < 1e-9, "{usd}");
        assert_eq!(basis, CostBasis::BilledGbSeconds);
        // 500 CPU-ms over 1000 requests: 0.5 ms x 2e-5 $/s = 1e-8 $ + 1e-7 -> 0.11 $ per million.
        let (usd, basis) = c.per_million(1000, None, Some(500.0)).unwrap();
        assert!((usd - 0.11).abs() < 1e-9, "{usd}");
        assert_eq!(basis, CostBasis::CpuSeconds);
        assert!(c.per_million(0, Some(1.0), None).is_none());
        assert!(c.per_million(10, None, None).is_none());
        assert!(
            CostModel {
                invocation_usd: -1.0,
                ..c
            }
            .validate()
            .is_err()
        );
        CostModel::default().validate().unwrap();
    }

    #[test]
    fn prometheus_series_are_summed_by_exact_name() {
        let text = "# HELP cumulus_runtime_billed_gb_seconds GB-seconds billed\n\
                    # TYPE cumulus_runtime_billed_gb_seconds gauge\n\
                    cumulus_runtime_billed_gb_seconds{function=\"a\"} 1.5\n\
                    cumulus_runtime_billed_gb_seconds{function=\"b,}\"} 2\n\
                    cumulus_runtime_billed_gb_seconds_total 100\n\
                    other 7\n";
        assert_eq!(prometheus_sum(text, BILLED_GB_SECONDS_METRIC), Some(3.5));
        assert_eq!(prometheus_sum("x 1\n", BILLED_GB_SECONDS_METRIC), None);
        assert_eq!(prometheus_sum("other 7 1700000000\n", "other"), Some(7.0));
    }
}
