//! Computation off the async runtime (STYLE.md §3): model building, training steps, evaluation,
//! saving and plotting run on Tokio's blocking threads, so the in-process parameter-store shard,
//! the job API and a function instance's HTTP server keep answering while a job computes.

use crate::TrainerError;

/// Runs `f` on a blocking thread; `what` names it if the thread panics.
pub(crate) async fn run<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, TrainerError> + Send + 'static,
) -> Result<T, TrainerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TrainerError::Compute(format!("{what}: {e}")))?
}
