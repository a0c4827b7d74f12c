//! The maximum sustainable rate: the highest mean arrival rate at which the server keeps p99 of
//! its OK answers within the SLO with fewer than `max_error_rate` of the requests failing.
//!
//! [`search`] steps up through the plan's rates until one fails, then bisects between the last
//! rate that held and the first that did not, until the bracket is narrower than `tolerance`
//! (relative) or `bisect_steps` runs were spent. On a shared machine a transient stall can fail
//! one run at a rate the server sustains, so with `retries > 0` a stepped rate that fails is run
//! again up to that many times and holds if any of its runs holds (bisection runs are single: they
//! only narrow a bracket that a confirmed failure opened). It takes the run as a function, so the
//! search is tested without a network; [`sweep`] plugs in [`run`](super::run).

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{LoadgenError, Result};
use super::{LoadSpec, RunResult};

/// Which rates to try and what "sustainable" means besides the spec's SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepPlan {
    /// Rates to step through (sorted ascending before use), requests per second.
    pub rates: Vec<f64>,
    /// Runs spent at most on bisection after the first failing rate (0: step only).
    pub bisect_steps: usize,
    /// Stop bisecting once `(bad - good) / bad` is below this.
    pub tolerance: f64,
    /// A run fails with this share of errors or more (1%).
    pub max_error_rate: f64,
    /// Quiet seconds between runs, so one run's backlog does not spill into the next.
    pub pause_s: f64,
    /// Extra runs at a stepped rate that failed before it counts as failed (it holds if any
    /// holds); bisection runs are not repeated.
    pub retries: usize,
}

impl Default for SweepPlan {
    fn default() -> Self {
        Self {
            rates: Vec::new(),
            bisect_steps: 4,
            tolerance: 0.05,
            max_error_rate: 0.01,
            pause_s: 1.0,
            retries: 0,
        }
    }
}

impl SweepPlan {
    pub fn new(rates: Vec<f64>) -> Self {
        Self {
            rates,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.rates.is_empty() {
            return Err(LoadgenError::Spec(
                "sweep.rates must hold at least one rate".to_string(),
            ));
        }
        if let Some(r) = self.rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(LoadgenError::Spec(format!(
                "sweep.rates: {r} is not a finite rate > 0"
            )));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(LoadgenError::Spec(format!(
                "sweep.tolerance must be finite and >= 0, got {}",
                self.tolerance
            )));
        }
        if !(self.max_error_rate > 0.0 && self.max_error_rate <= 1.0) {
            return Err(LoadgenError::Spec(format!(
                "sweep.max_error_rate must be in (0, 1], got {}",
                self.max_error_rate
            )));
        }
        if !(self.pause_s.is_finite() && self.pause_s >= 0.0) {
            return Err(LoadgenError::Spec(format!(
                "sweep.pause_s must be finite and >= 0, got {}",
                self.pause_s
            )));
        }
        Ok(())
    }
}

/// Every run of a sweep, in the order they ran, and what they showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    pub slo_ms: f64,
    pub max_error_rate: f64,
    pub runs: Vec<RunResult>,
    /// The highest rate that held (`None`: not even the lowest tried did).
    pub max_sustainable_rate: Option<f64>,
    /// The lowest rate that failed (`None`: every rate held; the maximum is at least the last).
    pub first_unsustainable_rate: Option<f64>,
}

impl SweepResult {
    /// The runs sorted by target rate (bisection runs interleaved where they belong).
    pub fn by_rate(&self) -> Vec<&RunResult> {
        let mut runs: Vec<&RunResult> = self.runs.iter().collect();
        runs.sort_by(|a, b| a.target_rate.total_cmp(&b.target_rate));
        runs
    }

    /// A run that held at the maximum sustainable rate.
    pub fn best(&self) -> Option<&RunResult> {
        let rate = self.max_sustainable_rate?;
        self.runs
            .iter()
            .find(|r| r.target_rate == rate && sustainable(r, self.max_error_rate))
    }
}

/// Whether a run held: some OK answers, p99 within its SLO, errors below `max_error_rate`.
pub fn sustainable(run: &RunResult, max_error_rate: f64) -> bool {
    run.ok > 0 && run.latency.p99_ms <= run.slo_ms && run.error_rate < max_error_rate
}

/// Step up through `plan.rates`, then bisect; `probe(rate)` runs the load at `rate`.
pub async fn search<F, Fut>(plan: &SweepPlan, slo_ms: f64, mut probe: F) -> Result<SweepResult>
where
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<RunResult>>,
{
    plan.validate()?;
    let mut rates = plan.rates.clone();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let mut runs = Vec::new();
    // Run `rate`, again up to `plan.retries` times while it fails; whether any run held.
    let mut attempt = async |rate: f64, runs: &mut Vec<RunResult>| -> Result<bool> {
        for attempt in 0..=plan.retries {
            let run = probe(rate).await?;
            let held = sustainable(&run, plan.max_error_rate);
            tracing::info!(
                rate,
                attempt,
                held,
                p99_ms = run.latency.p99_ms,
                error_rate = run.error_rate,
                "sweep run"
            );
            runs.push(run);
            if held {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
    for rate in rates {
        let held = attempt(rate, &mut runs).await?;
        if held {
            good = Some(rate);
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let Some(mut hi) = bad {
        // Below the lowest rate tried the bracket starts at 0 (a rate that trivially holds).
        let mut lo = good.unwrap_or(0.0);
        for _ in 0..plan.bisect_steps {
            if (hi - lo) / hi <= plan.tolerance {
                break;
            }
            let mid = (lo + hi) / 2.0;
            let run = probe(mid).await?;
            let held = sustainable(&run, plan.max_error_rate);
            tracing::info!(
                rate = mid,
                held,
                p99_ms = run.latency.p99_ms,
                "sweep bisection"
            );
            runs.push(run);
            if held {
                lo = mid;
                good = Some(mid);
            } else {
                hi = mid;
            }
        }
        bad = Some(hi);
    }
    Ok(SweepResult {
        slo_ms,
        max_error_rate: plan.max_error_rate,
        runs,
        max_sustainable_rate: good,
        first_unsustainable_rate: bad,
    })
}

/// Sweep `spec` (its arrival process rescaled to each rate) over `plan`.
pub async fn sweep(spec: &LoadSpec, plan: &SweepPlan) -> Result<SweepResult> {
    spec.validate()?;
    let pause = Duration::from_secs_f64(plan.pause_s);
    let mut first = true;
    search(plan, spec.slo_ms, |rate| {
        let spec = spec.at_rate(rate);
        let wait = if std::mem::take(&mut first) {
            Duration::ZERO
        } else {
            pause
        };
        async move {
            tokio::time::sleep(wait).await;
            super::run(&spec).await
        }
    })
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::stats::LatencySummary;
    use super::super::{Arrival, Transport};
    use super::*;

    /// A run at `rate` whose p99 and error rate are given.
    pub(crate) fn fake_run(rate: f64, p99_ms: f64, error_rate: f64) -> RunResult {
        RunResult {
            transport: Transport::RestJson,
            arrival: Arrival::Poisson { rate },
            target_rate: rate,
            duration_s: 10.0,
            warmup_s: 1.0,
            slo_ms: 25.0,
            scheduled: 1000,
            sent: 1000,
            dropped: 0,
            completed: 1000,
            ok: 1000,
            ok_within_slo: 1000,
            errors: (error_rate * 1000.0) as u64,
            overloaded: 0,
            error_counts: Default::default(),
            error_rate,
            achieved_send_rate: rate,
            throughput_rps: rate,
            goodput_rps: rate,
            latency: LatencySummary {
                count: 1000,
                p50_ms: p99_ms / 3.0,
                p99_ms,
                ..Default::default()
            },
            send_lag: LatencySummary::default(),
            server_cpu_ms_per_request: None,
            server_cpu_ms: None,
            server_processes: None,
            client_cpu_ms_per_request: None,
            billed_gb_seconds: None,
            cost_per_million_usd: None,
            cost_basis: None,
        }
    }

    /// A server that holds p99 at 5 ms up to `capacity` and then queues without bound.
    fn server(capacity: f64) -> impl FnMut(f64) -> std::future::Ready<Result<RunResult>> {
        move |rate| {
            let p99 = if rate <= capacity { 5.0 } else { 500.0 };
            std::future::ready(Ok(fake_run(rate, p99, 0.0)))
        }
    }

    async fn searched(plan: &SweepPlan, capacity: f64) -> SweepResult {
        search(plan, 25.0, server(capacity)).await.unwrap()
    }

    #[tokio::test]
    async fn steps_then_bisects_to_the_capacity() {
        let plan = SweepPlan {
            bisect_steps: 10,
            tolerance: 0.01,
            ..SweepPlan::new(vec![800.0, 100.0, 200.0, 400.0, 1600.0])
        };
        let r = searched(&plan, 730.0).await;
        let best = r.max_sustainable_rate.unwrap();
        let bad = r.first_unsustainable_rate.unwrap();
        assert!(best <= 730.0 && bad > 730.0, "{best} .. {bad}");
        assert!((bad - best) / bad <= 0.01, "{best} .. {bad}");
        // Steps in ascending order, stopping at the first failure (1600 never ran).
        let stepped: Vec<f64> = r.runs.iter().take(4).map(|x| x.target_rate).collect();
        assert_eq!(stepped, vec![100.0, 200.0, 400.0, 800.0]);
        assert!(r.runs.iter().all(|x| x.target_rate < 1600.0));
        assert_eq!(r.best().unwrap().target_rate, best);
        let sorted: Vec<f64> = r.by_rate().iter().map(|x| x.target_rate).collect();
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    }

    #[tokio::test]
    async fn every_rate_holding_has_no_upper_bound() {
        let r = searched(&SweepPlan::new(vec![10.0, 20.0]), 1e9).await;
        assert_eq!(r.max_sustainable_rate, Some(20.0));
        assert_eq!(r.first_unsustainable_rate, None);
        assert_eq!(r.runs.len(), 2);
    }

    #[tokio::test]
    async fn a_failing_first_rate_bisects_towards_zero() {
        let plan = SweepPlan {
            bisect_steps: 3,
            ..SweepPlan::new(vec![100.0, 200.0])
        };
        let r = searched(&plan, 30.0).await;
        // 50 (bad), 25 (good), 37.5 (bad): three bisection runs, then the budget is spent.
        let rates: Vec<f64> = r.runs.iter().map(|x| x.target_rate).collect();
        assert_eq!(rates, vec![100.0, 50.0, 25.0, 37.5]);
        assert_eq!(r.max_sustainable_rate, Some(25.0));
        assert_eq!(r.first_unsustainable_rate, Some(37.5));
        let never = searched(&SweepPlan::new(vec![100.0]), 0.0).await;
        assert_eq!(never.max_sustainable_rate, None);
        assert_eq!(
            never.first_unsustainable_rate.map(|r| r <= 100.0),
            Some(true)
        );
    }

    #[tokio::test]
    async fn errors_alone_make_a_rate_unsustainable() {
        let plan = SweepPlan {
            bisect_steps: 0,
            ..SweepPlan::new(vec![10.0, 20.0, 40.0])
        };
        let r = search(&plan, 25.0, |rate| {
            std::future::ready(Ok(fake_run(
                rate,
                1.0,
                if rate > 15.0 { 0.01 } else { 0.0 },
            )))
        })
        .await
        .unwrap();
        // 1% errors is not "< 1%".
        assert_eq!(r.max_sustainable_rate, Some(10.0));
        assert_eq!(r.first_unsustainable_rate, Some(20.0));
        assert!(!sustainable(&fake_run(1.0, 26.0, 0.0), 0.01));
        assert!(sustainable(&fake_run(1.0, 25.0, 0.009), 0.01));
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_and_a_lasting_one_is_not_hidden() {
        // Capacity 500, but the first run at 200 stalls (p99 300 ms) once.
        let mut calls_at_200 = 0;
        let plan = SweepPlan {
            bisect_steps: 0,
            retries: 1,
            ..SweepPlan::new(vec![100.0, 200.0, 400.0, 800.0])
        };
        let r = search(&plan, 25.0, |rate| {
            let p99 = if rate == 200.0 && {
                calls_at_200 += 1;
                calls_at_200 == 1
            } {
                300.0
            } else if rate <= 500.0 {
                5.0
            } else {
                500.0
            };
            std::future::ready(Ok(fake_run(rate, p99, 0.0)))
        })
        .await
        .unwrap();
        let rates: Vec<f64> = r.runs.iter().map(|x| x.target_rate).collect();
        // 200 failed, was retried and held; 800 failed twice.
        assert_eq!(rates, vec![100.0, 200.0, 200.0, 400.0, 800.0, 800.0]);
        assert_eq!(r.max_sustainable_rate, Some(400.0));
        assert_eq!(r.first_unsustainable_rate, Some(800.0));
        assert!(sustainable(r.best().unwrap(), 0.01));
    }

    #[tokio::test]
    async fn bad_plans_and_probe_errors_are_reported() {
        for plan in [
            SweepPlan::new(vec![]),
            SweepPlan::new(vec![10.0, -1.0]),
            SweepPlan {
                max_error_rate: 0.0,
                ..SweepPlan::new(vec![1.0])
            },
        ] {
            assert!(matches!(
                search(&plan, 25.0, server(1.0)).await,
                Err(LoadgenError::Spec(_))
            ));
        }
        let failing = search(&SweepPlan::new(vec![1.0]), 25.0, |_| {
            std::future::ready(Err(LoadgenError::Dispatcher("boom".into())))
        })
        .await;
        assert!(matches!(failing, Err(LoadgenError::Dispatcher(_))));
    }
}
