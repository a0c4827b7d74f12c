//! The gateway's metrics, through the `metrics` facade (the binary installs the recorder and
//! calls [`describe`]). Labels: `model` (names in the model repository) and `outcome`, a closed
//! set: `ok`, `bad_request`, `not_found`, `too_large`, `overloaded`, `unavailable`, `error`.

use std::time::Duration;

/// Time from a request's arrival to its answer, by model and outcome.
pub const REQUEST_DURATION: &str = "cumulus_inference_request_duration_seconds";
/// Requests answered, by model and outcome.
pub const REQUESTS: &str = "cumulus_inference_requests_total";
/// Time a request waited in its model's queue until its batch was sent.
pub const QUEUE_DURATION: &str = "cumulus_inference_queue_duration_seconds";
/// Time a batch took to execute (invocation of its function included).
pub const EXECUTION_DURATION: &str = "cumulus_inference_execution_duration_seconds";
/// Time the forward itself took inside the instance (the execution less the invocation).
pub const COMPUTE_DURATION: &str = "cumulus_inference_compute_duration_seconds";
/// Rows per batch.
pub const BATCH_SIZE: &str = "cumulus_inference_batch_size";
/// Batches that started an instance or loaded the model first.
pub const COLD_BATCHES: &str = "cumulus_inference_cold_batches_total";
/// Requests refused at dispatch because they could no longer meet their SLO.
pub const REFUSED_LATE: &str = "cumulus_inference_refused_late_total";
/// Time of each stage of a partitioned model, by model and stage index.
pub const STAGE_DURATION: &str = "cumulus_inference_stage_duration_seconds";
/// What the model's partition plan predicted for each stage (invocation included), by model and
/// stage index: read beside [`STAGE_DURATION`].
pub const STAGE_PREDICTED: &str = "cumulus_inference_stage_predicted_seconds";
/// Models loaded and ready.
pub const MODELS_READY: &str = "cumulus_inference_models_ready";

/// Describes every metric to the installed recorder; call once at startup.
pub fn describe() {
    use metrics::Unit;
    metrics::describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Inference request duration, by model and outcome"
    );
    metrics::describe_counter!(
        REQUESTS,
        "Inference requests answered, by model and outcome"
    );
    metrics::describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Time requests waited in their model's queue"
    );
    metrics::describe_histogram!(
        EXECUTION_DURATION,
        Unit::Seconds,
        "Batch execution time, the function's invocation included"
    );
    metrics::describe_histogram!(
        COMPUTE_DURATION,
        Unit::Seconds,
        "Time of the forward itself inside the function instance"
    );
    metrics::describe_histogram!(BATCH_SIZE, "Rows per batch");
    metrics::describe_counter!(
        COLD_BATCHES,
        "Batches that started an instance or loaded their model"
    );
    metrics::describe_counter!(
        REFUSED_LATE,
        "Requests refused at dispatch: they could no longer meet their SLO"
    );
    metrics::describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Time of each stage of a partitioned model, its invocation included"
    );
    metrics::describe_gauge!(
        STAGE_PREDICTED,
        Unit::Seconds,
        "Latency of each stage of a partitioned model as its plan predicted"
    );
    metrics::describe_gauge!(MODELS_READY, "Models loaded and ready");
}

pub(crate) fn request(model: &str, outcome: &'static str, took: Duration) {
    metrics::counter!(REQUESTS, "model" => model.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_DURATION, "model" => model.to_owned(), "outcome" => outcome)
        .record(took.as_secs_f64());
}

pub(crate) fn queued(model: &str, waited: Duration) {
    metrics::histogram!(QUEUE_DURATION, "model" => model.to_owned()).record(waited.as_secs_f64());
}

pub(crate) fn batch(model: &str, rows: usize, executed: Option<(Duration, Duration, bool)>) {
    metrics::histogram!(BATCH_SIZE, "model" => model.to_owned()).record(rows as f64);
    if let Some((took, compute, cold)) = executed {
        metrics::histogram!(EXECUTION_DURATION, "model" => model.to_owned())
            .record(took.as_secs_f64());
        metrics::histogram!(COMPUTE_DURATION, "model" => model.to_owned())
            .record(compute.as_secs_f64());
        if cold {
            metrics::counter!(COLD_BATCHES, "model" => model.to_owned()).increment(1);
        }
    }
}

pub(crate) fn refused_late(model: &str) {
    metrics::counter!(REFUSED_LATE, "model" => model.to_owned()).increment(1);
}

pub(crate) fn stage(model: &str, index: usize, took: Duration) {
    metrics::histogram!(STAGE_DURATION, "model" => model.to_owned(), "stage" => index.to_string())
        .record(took.as_secs_f64());
}

pub(crate) fn stage_predicted(model: &str, index: usize, ms: f64) {
    metrics::gauge!(STAGE_PREDICTED, "model" => model.to_owned(), "stage" => index.to_string())
        .set(ms / 1e3);
}

pub(crate) fn models_ready(n: usize) {
    metrics::gauge!(MODELS_READY).set(n as f64);
}
