//! The trainer's metrics, through the `metrics` facade (the binary installs the recorder and
//! calls [`describe`]). Labels come from closed sets: `state` is a [`crate::report::JobState`].

use std::time::Duration;

/// Jobs by state now (`queued`, `running`).
pub const JOBS: &str = "cumulus_trainer_jobs";
/// Jobs ended, by final state (`succeeded`, `failed`, `cancelled`).
pub const JOBS_ENDED: &str = "cumulus_trainer_jobs_ended_total";
/// Local steps the workers reported.
pub const STEPS: &str = "cumulus_trainer_steps_total";
/// Bytes the workers pushed (significant entries and final drains).
pub const PUSHED_BYTES: &str = "cumulus_trainer_pushed_bytes_total";
/// Worker invocations that reported.
pub const INVOCATIONS: &str = "cumulus_trainer_worker_invocations_total";
/// Worker invocations that failed and were invoked again.
pub const INVOCATION_FAILURES: &str = "cumulus_trainer_worker_invocation_failures_total";
/// Time from the last report of a round to its stop or scale-in decision.
pub const ROUND_DURATION: &str = "cumulus_trainer_round_duration_seconds";
/// Time to pull the model and measure it on the test split.
pub const EVALUATION_DURATION: &str = "cumulus_trainer_evaluation_duration_seconds";

/// Describes every metric to the installed recorder; call once at startup.
pub fn describe() {
    metrics::describe_gauge!(JOBS, "Training jobs by state (queued, running)");
    metrics::describe_counter!(JOBS_ENDED, "Training jobs ended, by final state");
    metrics::describe_counter!(STEPS, "Local training steps reported by workers");
    metrics::describe_counter!(
        PUSHED_BYTES,
        metrics::Unit::Bytes,
        "Bytes pushed by workers to the parameter store"
    );
    metrics::describe_counter!(INVOCATIONS, "Worker invocations that reported");
    metrics::describe_counter!(
        INVOCATION_FAILURES,
        "Worker invocations that failed and were invoked again"
    );
    metrics::describe_histogram!(
        ROUND_DURATION,
        metrics::Unit::Seconds,
        "Evaluation and decision at the end of a round"
    );
    metrics::describe_histogram!(
        EVALUATION_DURATION,
        metrics::Unit::Seconds,
        "Pulling the model and measuring it on the test split"
    );
}

pub(crate) fn report(steps: u64, pushed_bytes: u64) {
    metrics::counter!(INVOCATIONS).increment(1);
    metrics::counter!(STEPS).increment(steps);
    metrics::counter!(PUSHED_BYTES).increment(pushed_bytes);
}

pub(crate) fn invocation_failed() {
    metrics::counter!(INVOCATION_FAILURES).increment(1);
}

pub(crate) fn round(took: Duration) {
    metrics::histogram!(ROUND_DURATION).record(took.as_secs_f64());
}

pub(crate) fn evaluation(took: Duration) {
    metrics::histogram!(EVALUATION_DURATION).record(took.as_secs_f64());
}

pub(crate) fn jobs(queued: usize, running: usize) {
    metrics::gauge!(JOBS, "state" => "queued").set(queued as f64);
    metrics::gauge!(JOBS, "state" => "running").set(running as f64);
}

pub(crate) fn job_ended(state: &'static str) {
    metrics::counter!(JOBS_ENDED, "state" => state).increment(1);
}
