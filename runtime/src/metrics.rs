//! The platform's metrics, through the `metrics` facade. Labels: `function` (configured names) and
//! `outcome` (the closed set of [`crate::RuntimeError::outcome`] plus `ok`).

use std::time::Duration;

/// Cold starts (an invocation had to start an instance).
pub const COLD_STARTS: &str = "cumulus_runtime_cold_starts_total";
/// Warm starts (an invocation found an idle instance).
pub const WARM_STARTS: &str = "cumulus_runtime_warm_starts_total";
/// Instances started ahead of invocations (pre-warm, `min_instances`, queued callers).
pub const PREWARM_STARTS: &str = "cumulus_runtime_prewarm_starts_total";
/// Spawn-to-ready latency of instances, seconds.
pub const START_DURATION: &str = "cumulus_runtime_start_duration_seconds";
/// Invocations by outcome.
pub const INVOCATIONS: &str = "cumulus_runtime_invocations_total";
/// Invocation duration as billed, seconds.
pub const INVOKE_DURATION: &str = "cumulus_runtime_invoke_duration_seconds";
/// Instances alive now.
pub const INSTANCES_ALIVE: &str = "cumulus_runtime_instances_alive";
/// GB-seconds billed so far (only increases).
pub const BILLED_GB_SECONDS: &str = "cumulus_runtime_billed_gb_seconds";

/// Describes every metric to the installed recorder; call once at startup.
pub fn describe() {
    metrics::describe_counter!(COLD_STARTS, "Invocations that had to start an instance");
    metrics::describe_counter!(
        WARM_STARTS,
        "Invocations served by an already running instance"
    );
    metrics::describe_counter!(PREWARM_STARTS, "Instances started ahead of invocations");
    metrics::describe_histogram!(
        START_DURATION,
        metrics::Unit::Seconds,
        "Instance spawn-to-ready latency"
    );
    metrics::describe_counter!(INVOCATIONS, "Invocations by outcome");
    metrics::describe_histogram!(
        INVOKE_DURATION,
        metrics::Unit::Seconds,
        "Invocation duration"
    );
    metrics::describe_gauge!(INSTANCES_ALIVE, "Function instances alive");
    metrics::describe_gauge!(BILLED_GB_SECONDS, "GB-seconds billed (monotonic)");
}

pub(crate) fn start(function: &str, kind: StartMetric, latency: Option<Duration>) {
    let name = match kind {
        StartMetric::Cold => COLD_STARTS,
        StartMetric::Warm => WARM_STARTS,
        StartMetric::Prewarm => PREWARM_STARTS,
    };
    metrics::counter!(name, "function" => function.to_owned()).increment(1);
    if let Some(l) = latency {
        metrics::histogram!(START_DURATION, "function" => function.to_owned())
            .record(l.as_secs_f64());
    }
}

pub(crate) enum StartMetric {
    Cold,
    Warm,
    Prewarm,
}

pub(crate) fn invocation(
    function: &str,
    outcome: &'static str,
    duration: Duration,
    gb_seconds: f64,
) {
    metrics::counter!(INVOCATIONS, "function" => function.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(INVOKE_DURATION, "function" => function.to_owned())
        .record(duration.as_secs_f64());
    metrics::gauge!(BILLED_GB_SECONDS, "function" => function.to_owned()).increment(gb_seconds);
}

pub(crate) fn alive(function: &str, n: usize) {
    metrics::gauge!(INSTANCES_ALIVE, "function" => function.to_owned()).set(n as f64);
}
