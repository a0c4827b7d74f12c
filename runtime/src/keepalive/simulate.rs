//! A generated invocation trace shaped like the Azure Functions 2019 trace, and a simulator that
//! replays it against keep-alive policies without starting any process.
//!
//! The trace mixes the classes the paper describes: timer-triggered (periodic with jitter),
//! frequent (Poisson, seconds to minutes apart), bursty (short bursts separated by long gaps) and
//! rare (hours apart, mostly beyond the 4-hour histogram). As in the paper's simulator each function
//! has at most one instance; an invocation is cold when that instance is not loaded at its arrival.
//!
//! ```
//! use cumulus_runtime::keepalive::{simulate, KeepAliveConfig, TraceParams};
//! let trace = TraceParams { functions: 20, hours: 12, ..TraceParams::default() }.generate();
//! let fixed = simulate(&trace, &KeepAliveConfig::Fixed { ttl_ms: 600_000 });
//! assert_eq!(fixed.invocations, trace.invocations());
//! ```

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::Serialize;

use super::policy::KeepAliveConfig;

/// Shape of a generated trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceParams {
    /// Random seed: the same seed gives the same trace.
    pub seed: u64,
    /// Number of functions.
    pub functions: usize,
    /// Length of the trace, hours.
    pub hours: u64,
}

impl Default for TraceParams {
    fn default() -> Self {
        Self {
            seed: 2019,
            functions: 200,
            hours: 7 * 24,
        }
    }
}

/// The class a generated function belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionClass {
    /// Timer trigger: every `period` with a few seconds of jitter.
    Periodic,
    /// Poisson arrivals seconds to minutes apart.
    Frequent,
    /// Bursts of invocations separated by long gaps.
    Bursty,
    /// Hours apart.
    Rare,
}

/// One function's invocations: `(arrival, duration)`, sorted by arrival.
#[derive(Debug, Clone)]
pub struct TraceFunction {
    /// Its class.
    pub class: FunctionClass,
    /// Invocations.
    pub invocations: Vec<(Duration, Duration)>,
}

/// A generated trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Length.
    pub span: Duration,
    /// Every function.
    pub functions: Vec<TraceFunction>,
}

impl Trace {
    /// Total invocations.
    pub fn invocations(&self) -> u64 {
        self.functions
            .iter()
            .map(|f| f.invocations.len() as u64)
            .sum()
    }
}

impl TraceParams {
    /// Generates the trace; deterministic for a seed.
    pub fn generate(&self) -> Trace {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let span = Duration::from_secs(self.hours * 3600);
        let span_s = span.as_secs_f64();
        // Execution times: log-normal, median ~0.7 s (Azure: half of functions run < 1 s on average).
        let exec = LogNormal::new(-0.35, 1.0).expect("constant log-normal parameters are valid");
        let functions = (0..self.functions)
            .map(|i| {
                // Class mix after the Azure trace's shape (Shahrad et al.): most functions are
                // invoked at most once a minute, timers are the largest group, bursty ones a minority.
                let class = match i % 10 {
                    0..=3 => FunctionClass::Periodic,
                    4..=5 => FunctionClass::Frequent,
                    6 => FunctionClass::Bursty,
                    _ => FunctionClass::Rare,
                };
                let mut arrivals = Vec::new();
                let mut t = rng.random_range(0.0..600.0);
                match class {
                    FunctionClass::Periodic => {
                        let periods = [60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0];
                        let period = periods[rng.random_range(0..periods.len())];
                        while t < span_s {
                            arrivals.push(t + rng.random_range(0.0..5.0));
                            t += period;
                        }
                    }
                    FunctionClass::Frequent => {
                        let gap = Exp::new(1.0 / rng.random_range(10.0..300.0)).expect("rate > 0");
                        while t < span_s {
                            arrivals.push(t);
                            t += gap.sample(&mut rng);
                        }
                    }
                    FunctionClass::Bursty => {
                        let between =
                            Exp::new(1.0 / rng.random_range(300.0..3600.0)).expect("rate > 0");
                        let within = Exp::new(1.0 / 2.0).expect("rate > 0");
                        while t < span_s {
                            let size = rng.random_range(2..20);
                            let mut u = t;
                            for _ in 0..size {
                                arrivals.push(u);
                                u += within.sample(&mut rng);
                            }
                            t = u + between.sample(&mut rng);
                        }
                    }
                    FunctionClass::Rare if i % 2 == 0 => {
                        // Long timers (every 6, 12 or 24 hours) with minutes of jitter.
                        let periods = [6.0 * 3600.0, 12.0 * 3600.0, 24.0 * 3600.0];
                        let period = periods[rng.random_range(0..periods.len())];
                        while t < span_s {
                            arrivals.push(t + rng.random_range(0.0..300.0));
                            t += period;
                        }
                    }
                    FunctionClass::Rare => {
                        let gap = Exp::new(1.0 / rng.random_range(6.0 * 3600.0..24.0 * 3600.0))
                            .expect("rate > 0");
                        while t < span_s {
                            arrivals.push(t);
                            t += gap.sample(&mut rng);
                        }
                    }
                }
                arrivals.retain(|&a| a < span_s);
                let invocations = arrivals
                    .into_iter()
                    .map(|a| {
                        let d: f64 = exec.sample(&mut rng);
                        (
                            Duration::from_secs_f64(a),
                            Duration::from_secs_f64(d.min(600.0)),
                        )
                    })
                    .collect();
                TraceFunction { class, invocations }
            })
            .collect();
        Trace { span, functions }
    }
}

/// What a policy did on a trace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimReport {
    /// The policy, as configured.
    pub policy: String,
    /// Invocations replayed.
    pub invocations: u64,
    /// Cold starts among them.
    pub cold_starts: u64,
    /// `cold_starts / invocations`.
    pub cold_start_rate: f64,
    /// Mean over functions of each function's cold-start rate.
    pub mean_function_cold_start_rate: f64,
    /// 75th percentile over functions of each function's cold-start rate (the paper's figure).
    pub p75_function_cold_start_rate: f64,
    /// Seconds instances stayed loaded without running anything (wasted memory time).
    pub idle_instance_seconds: f64,
}

/// Replays `trace` with one policy per function built from `config`.
pub fn simulate(trace: &Trace, config: &KeepAliveConfig) -> SimReport {
    let mut cold_total = 0u64;
    let mut invocations = 0u64;
    let mut idle = Duration::ZERO;
    let mut rates = Vec::new();
    for f in &trace.functions {
        if f.invocations.is_empty() {
            continue;
        }
        let mut policy = config.build();
        let mut cold = 0u64;
        // End of the previous invocation and the windows chosen then.
        let mut last: Option<(Duration, Duration, Duration)> = None;
        for &(arrival, duration) in &f.invocations {
            match last {
                None => cold += 1,
                Some((end, _, _)) if arrival <= end => {} // still running: warm, no idle time
                Some((end, prewarm, keep)) => {
                    let loaded_from = end + prewarm;
                    let loaded_to = loaded_from + keep;
                    if arrival < loaded_from {
                        cold += 1; // unloaded, not yet pre-warmed
                    } else if arrival <= loaded_to {
                        idle += arrival - loaded_from;
                    } else {
                        cold += 1;
                        idle += keep;
                    }
                    policy.observe_idle(arrival - end);
                }
            }
            let end = match last {
                Some((prev_end, _, _)) if prev_end > arrival + duration => prev_end,
                _ => arrival + duration,
            };
            let w = policy.windows();
            last = Some((end, w.prewarm, w.keep_alive));
        }
        if let Some((end, prewarm, keep)) = last {
            let from = end + prewarm;
            idle += trace.span.saturating_sub(from).min(keep);
        }
        invocations += f.invocations.len() as u64;
        cold_total += cold;
        rates.push(cold as f64 / f.invocations.len() as f64);
    }
    rates.sort_by(f64::total_cmp);
    let p75 = rates
        .get((rates.len() * 3 / 4).min(rates.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    let mean = if rates.is_empty() {
        0.0
    } else {
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    SimReport {
        policy: describe(config),
        invocations,
        cold_starts: cold_total,
        cold_start_rate: if invocations == 0 {
            0.0
        } else {
            cold_total as f64 / invocations as f64
        },
        mean_function_cold_start_rate: mean,
        p75_function_cold_start_rate: p75,
        idle_instance_seconds: idle.as_secs_f64(),
    }
}

fn describe(config: &KeepAliveConfig) -> String {
    match config {
        KeepAliveConfig::Fixed { ttl_ms } => format!("fixed {} min", *ttl_ms as f64 / 60_000.0),
        KeepAliveConfig::Hybrid(p) => format!(
            "hybrid {}h/{}min bins, p{}/p{}",
            p.range_minutes / 60,
            p.bin_minutes,
            p.head_percentile,
            p.tail_percentile
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_deterministic_for_a_seed() {
        let p = TraceParams {
            functions: 10,
            hours: 6,
            ..TraceParams::default()
        };
        assert_eq!(p.generate().invocations(), p.generate().invocations());
    }

    #[test]
    fn periodic_function_beyond_ttl_is_always_cold_under_fixed() {
        let invocations = (0..10)
            .map(|i| (Duration::from_secs(1800 * i), Duration::from_secs(1)))
            .collect();
        let trace = Trace {
            span: Duration::from_secs(1800 * 10),
            functions: vec![TraceFunction {
                class: FunctionClass::Periodic,
                invocations,
            }],
        };
        let r = simulate(&trace, &KeepAliveConfig::Fixed { ttl_ms: 600_000 });
        assert_eq!(r.cold_starts, 10);
        assert!((r.idle_instance_seconds - 6000.0).abs() < 1e-6);
    }
}
