//! The keep-alive task: every `reap_interval_ms`, stop expired idle instances (never below
//! `min_instances`), pre-warm where the policy says so, and start instances for queued callers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Inner, Pool, stop_all};
use crate::metrics::{self as m, StartMetric};

/// Enforces keep-alive, pre-warming and `min_instances` every `interval`, until the platform is gone.
pub(super) async fn reaper(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let pools: Vec<Arc<Pool>> = {
            let pools = inner
                .pools
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pools
                .values()
                .filter(|p| p.remote.is_none())
                .cloned()
                .collect()
        };
        for pool in pools {
            let plan = pool.lock().reap(&pool.spec, inner.now());
            let stopped = !plan.stop.is_empty();
            for i in &plan.stop {
                i.kill();
            }
            for keep_until in plan.start {
                tokio::spawn(prestart(inner.clone(), pool.clone(), keep_until));
            }
            if stopped {
                inner.report_alive(&pool);
            }
        }
    }
}

/// Starts an instance ahead of invocations (pre-warm, min_instances, queued callers).
async fn prestart(inner: Arc<Inner>, pool: Arc<Pool>, keep_until: Duration) {
    let id = inner.instance_seq.fetch_add(1, Ordering::Relaxed);
    match inner.backend.start(&pool.name, &pool.spec, id).await {
        Ok((instance, latency)) => {
            m::start(&pool.label, StartMetric::Prewarm, Some(latency));
            pool.lock().started(Arc::new(instance), false, keep_until);
            if inner.closed.load(Ordering::Acquire) || pool.retired.load(Ordering::Acquire) {
                let instances = pool.lock().drain();
                stop_all(instances).await;
            }
            inner.report_alive(&pool);
        }
        Err(e) => {
            pool.lock().start_failed(false);
            tracing::warn!(error = %e, "pre-start failed");
        }
    }
}
