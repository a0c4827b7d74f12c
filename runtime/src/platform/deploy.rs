//! Functions deployed at run time ([`Platform::deploy`]), as Knative creates a Service: a
//! training job's workers get a function of their own, sized from the job, that reserves its
//! instances' memory out of the platform's capacity (`functions.capacity_mb`) for as long as it
//! is deployed. A reservation that does not fit is refused, so a job is never started with
//! workers the platform cannot run at once — and two jobs never compete for the same instances.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{Inner, Platform, Pool, stop_all};
use crate::config::{FunctionSpec, valid_function_name};
use crate::error::RuntimeError;
use crate::local::LocalInstance;
use crate::metrics as m;
use crate::pool::PoolState;

/// The platform's memory for local instances, MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// `functions.capacity_mb`, or the machine's memory.
    pub capacity_mb: u64,
    /// Reserved by deployed functions.
    pub reserved_mb: u64,
    /// Used by live instances of configured (unreserved) functions.
    pub unreserved_in_use_mb: u64,
    /// What a new deployment may still reserve.
    pub free_mb: u64,
}

impl Platform {
    /// Deploys `name` with `spec` (validated like a configured function). A local function
    /// reserves `max_instances × memory_mb`; [`RuntimeError::CapacityExceeded`] when that is more
    /// than is free. Undo with [`Platform::undeploy`].
    pub fn deploy(&self, name: &str, spec: FunctionSpec) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        if !valid_function_name(name) {
            return Err(RuntimeError::InvalidFunctionName(name.to_owned()));
        }
        inner
            .config
            .functions
            .check_spec(&format!("function {name}"), &spec)
            .map_err(RuntimeError::InvalidConfig)?;
        let needed_mb = if spec.url.is_some() {
            0
        } else {
            spec.max_instances as u64 * u64::from(spec.memory_mb)
        };
        let mut pools = inner
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pools.contains_key(name) || inner.config.functions.overrides.contains_key(name) {
            return Err(RuntimeError::AlreadyExists(name.to_owned()));
        }
        let capacity = capacity_of(inner, pools.values());
        if needed_mb > capacity.free_mb {
            return Err(RuntimeError::CapacityExceeded {
                function: name.to_owned(),
                needed_mb,
                free_mb: capacity.free_mb,
                capacity_mb: capacity.capacity_mb,
            });
        }
        let remote = spec.url.as_ref().map(|_| {
            (
                tokio::sync::Semaphore::new(spec.max_instances.saturating_mul(spec.concurrency)),
                std::sync::atomic::AtomicUsize::new(0),
            )
        });
        let label = spec.kind.clone().unwrap_or_else(|| name.to_owned());
        pools.insert(
            name.to_owned(),
            Arc::new(Pool {
                name: name.to_owned(),
                label,
                state: Mutex::new(PoolState::new(spec.keep_alive.build())),
                spec,
                remote,
                deployed: true,
                reserved_mb: needed_mb,
                retired: false.into(),
            }),
        );
        tracing::info!(
            function = name,
            reserved_mb = needed_mb,
            "function deployed"
        );
        Ok(())
    }

    /// Removes a deployed function: its idle instances stop now, busy ones when their
    /// invocation returns, and its reservation is released. False when `name` is not deployed.
    pub async fn undeploy(&self, name: &str) -> bool {
        let pool = {
            let mut pools = self
                .inner
                .pools
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match pools.get(name) {
                Some(p) if p.deployed => pools.remove(name),
                _ => None,
            }
        };
        let Some(pool) = pool else {
            return false;
        };
        pool.retired.store(true, Ordering::Release);
        let idle = pool.lock().take_idle();
        stop_all(idle).await;
        self.inner.report_alive(&pool);
        tracing::info!(function = name, "function undeployed");
        true
    }

    /// The platform's memory: capacity, reserved, in use, free.
    pub fn capacity(&self) -> Capacity {
        let pools = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        capacity_of(&self.inner, pools.values())
    }
}

fn capacity_of<'a>(inner: &Inner, pools: impl Iterator<Item = &'a Arc<Pool>>) -> Capacity {
    let capacity_mb = inner.config.functions.capacity();
    let (mut reserved_mb, mut unreserved_in_use_mb) = (0u64, 0u64);
    for p in pools {
        if p.deployed {
            reserved_mb = reserved_mb.saturating_add(p.reserved_mb);
        } else if p.remote.is_none() {
            let alive = p.lock().stats().alive as u64;
            unreserved_in_use_mb =
                unreserved_in_use_mb.saturating_add(alive * u64::from(p.spec.memory_mb));
        }
    }
    Capacity {
        capacity_mb,
        reserved_mb,
        unreserved_in_use_mb,
        free_mb: capacity_mb.saturating_sub(reserved_mb.saturating_add(unreserved_in_use_mb)),
    }
}

impl Inner {
    /// An invocation on `instance` ended; `healthy` = it can serve again. A retired pool's
    /// instances stop as soon as they are idle.
    pub(super) fn release(&self, pool: &Arc<Pool>, instance: &Arc<LocalInstance>, healthy: bool) {
        let idle = {
            let mut st = pool.lock();
            st.release(instance, healthy, self.now());
            if pool.retired.load(Ordering::Acquire) {
                st.take_idle()
            } else {
                Vec::new()
            }
        };
        for i in &idle {
            i.kill();
        }
        self.report_alive(pool);
    }

    /// Sets the alive gauge of `pool`'s label: the sum over every pool with that label.
    pub(super) fn report_alive(&self, pool: &Pool) {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut alive: usize = pools
            .values()
            .filter(|p| p.label == pool.label && !std::ptr::eq(p.as_ref(), pool))
            .map(|p| p.lock().stats().alive)
            .sum();
        alive += pool.lock().stats().alive;
        m::alive(&pool.label, alive);
    }
}
