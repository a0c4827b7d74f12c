//! [`Platform`]: invoke a function by name; it goes to a warm instance, a new one (cold start), the
//! bounded queue, or a remote URL (HTTP backend), and is billed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cumulus_runtime::RuntimeError> {
//! use std::time::Duration;
//! use cumulus_runtime::{CumulusConfig, Platform};
//! let platform = Platform::new(CumulusConfig::default())?;
//! let out = platform.invoke("builtin-echo", "hi".into(), Duration::from_secs(5)).await?;
//! assert_eq!(&out.output[..], b"hi");
//! platform.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::billing::{BillingRecord, Meter};
use crate::call::{self, CallError, CallHeaders};
use crate::config::{CumulusConfig, FunctionSpec, valid_function_name};
use crate::error::{InstanceExit, RuntimeError};
use crate::local::{LocalBackend, LocalInstance};
use crate::metrics::{self as m, StartMetric};
use crate::pool::{Acquire, PoolState, PoolStats};

mod deploy;
mod reaper;
pub use deploy::Capacity;
use reaper::reaper;
use tokio_util::sync::CancellationToken;

/// How long to wait for a dead instance's exit status before reporting it.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// One invocation to run.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// The function's name.
    pub function: String,
    /// The payload, passed unchanged.
    pub payload: Bytes,
    /// Deadline from now; the function's `timeout_ms` when None.
    pub deadline: Option<Duration>,
    /// The job billed for it.
    pub job: Option<String>,
    /// Cancelling it abandons the invocation while it waits for an instance (queued, or its
    /// instance still starting); once it runs on an instance it runs to its end.
    pub cancel: Option<CancellationToken>,
}

/// How the invocation found its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartKind {
    /// It started a new instance.
    Cold,
    /// A running instance served it.
    Warm,
    /// A remote backend served it (Knative, OpenFaaS decide themselves).
    Remote,
}

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function's answer.
    pub output: Bytes,
    /// Cold or warm.
    pub start: StartKind,
    /// Spawn-to-ready latency, for cold starts.
    pub start_latency: Option<Duration>,
    /// The bill.
    pub billing: BillingRecord,
}

/// The function platform. Cheap to clone; every clone is the same platform.
#[derive(Clone, Debug)]
pub struct Platform {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CumulusConfig,
    epoch: Instant,
    backend: LocalBackend,
    client: reqwest::Client,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    meter: Mutex<Meter>,
    closed: std::sync::atomic::AtomicBool,
    request_seq: AtomicU64,
    instance_seq: AtomicU64,
}

#[derive(Debug)]
struct Pool {
    name: String,
    /// The `function` label of its metrics: its name, or for a deployment its kind (so that
    /// per-job functions do not each make new series).
    label: String,
    spec: FunctionSpec,
    state: Mutex<PoolState>,
    /// The HTTP backend's bound: permits for running calls, and a count of waiting ones.
    remote: Option<(Semaphore, AtomicUsize)>,
    /// Made by [`Platform::deploy`] (not from the config file).
    deployed: bool,
    /// Memory reserved for its instances, MB (deployments of local functions only).
    reserved_mb: u64,
    /// Undeployed: instances are stopped as soon as they are idle, nothing new starts.
    retired: std::sync::atomic::AtomicBool,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding the lock is a bug in pool.rs; keep serving with its state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Platform {
    /// Validates `config`, prepares the local backend and starts the keep-alive task. Must be called
    /// inside a Tokio runtime.
    pub fn new(config: CumulusConfig) -> Result<Self, RuntimeError> {
        config.validate().map_err(RuntimeError::InvalidConfig)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| RuntimeError::io("building the HTTP client", std::io::Error::other(e)))?;
        let backend = LocalBackend::new(&config.functions, client.clone())?;
        let inner = Arc::new(Inner {
            config,
            epoch: Instant::now(),
            backend,
            client,
            pools: Mutex::new(HashMap::new()),
            meter: Mutex::new(Meter::default()),
            closed: false.into(),
            request_seq: AtomicU64::new(0),
            instance_seq: AtomicU64::new(0),
        });
        // Pools of configured functions exist from the start, so min_instances are started now.
        for name in inner.config.functions.overrides.keys() {
            inner.pool(name)?;
        }
        let interval = Duration::from_millis(inner.config.functions.reap_interval_ms);
        runtime.spawn(reaper(Arc::downgrade(&inner), interval));
        Ok(Self { inner })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CumulusConfig {
        &self.inner.config
    }

    /// Invokes `function` with `payload`, waiting at most `deadline` (queue time included).
    pub async fn invoke(
        &self,
        function: &str,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Invocation, RuntimeError> {
        self.invoke_request(InvokeRequest {
            function: function.to_owned(),
            payload,
            deadline: Some(deadline),
            job: None,
            cancel: None,
        })
        .await
    }

    /// Invokes with every option.
    #[tracing::instrument(skip(self, request), fields(function = %request.function, job = ?request.job))]
    pub async fn invoke_request(&self, request: InvokeRequest) -> Result<Invocation, RuntimeError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let pool = inner.pool(&request.function)?;
        let limit = inner.config.functions.max_payload_bytes;
        if request.payload.len() > limit {
            return Err(RuntimeError::PayloadTooLarge {
                size: request.payload.len(),
                limit,
            });
        }
        let deadline = request.deadline.unwrap_or_else(|| pool.spec.timeout());
        let result = match pool.remote {
            Some(_) => inner.invoke_remote(&pool, &request, deadline).await,
            None => inner.invoke_local(&pool, &request, deadline).await,
        };
        if let Err(e) = &result {
            m::invocation(&pool.label, e.outcome(), Duration::ZERO, 0.0);
            tracing::debug!(error = %e, "invocation failed");
        }
        result
    }

    /// Counters of a function's pool (None when it was never invoked nor configured).
    pub fn stats(&self, function: &str) -> Option<PoolStats> {
        let pools = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.get(function).map(|p| p.lock().stats())
    }

    /// Addresses of a function's running local instances (diagnostics and benchmarks).
    pub fn instance_addrs(&self, function: &str) -> Vec<SocketAddr> {
        let pools = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools
            .get(function)
            .map(|p| p.lock().instances().iter().map(|i| i.addr).collect())
            .unwrap_or_default()
    }

    /// Stops a function's idle instances now, whatever the keep-alive says; `min_instances` are
    /// started again by the next keep-alive tick.
    pub async fn scale_to_zero(&self, function: &str) {
        let pool = {
            let pools = self
                .inner
                .pools
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pools.get(function).cloned()
        };
        if let Some(pool) = pool {
            let idle = pool.lock().take_idle();
            stop_all(idle).await;
            self.inner.report_alive(&pool);
        }
    }

    /// The billing aggregates so far.
    pub fn meter(&self) -> Meter {
        self.inner
            .meter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Refuses new invocations, stops every instance and removes their cgroups.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let pools: Vec<Arc<Pool>> = {
            let pools = self
                .inner
                .pools
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pools.values().cloned().collect()
        };
        for pool in pools {
            let instances = pool.lock().drain();
            stop_all(instances).await;
            m::alive(&pool.label, 0);
        }
    }
}

async fn stop_all(instances: Vec<Arc<LocalInstance>>) {
    for i in &instances {
        i.kill();
    }
    for i in &instances {
        i.exited(EXIT_WAIT).await;
    }
}

impl Inner {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn pool(&self, function: &str) -> Result<Arc<Pool>, RuntimeError> {
        if !valid_function_name(function) {
            return Err(RuntimeError::InvalidFunctionName(function.to_owned()));
        }
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = pools.get(function) {
            return Ok(p.clone());
        }
        let spec = self.config.functions.spec(function);
        let remote = spec.url.as_ref().map(|_| {
            (
                Semaphore::new(spec.max_instances.saturating_mul(spec.concurrency)),
                AtomicUsize::new(0),
            )
        });
        let pool = Arc::new(Pool {
            name: function.to_owned(),
            label: function.to_owned(),
            state: Mutex::new(PoolState::new(spec.keep_alive.build())),
            spec,
            remote,
            deployed: false,
            reserved_mb: 0,
            retired: false.into(),
        });
        pools.insert(function.to_owned(), pool.clone());
        Ok(pool)
    }

    fn next_request_id(&self) -> String {
        format!(
            "{:x}-{}",
            self.epoch.elapsed().as_nanos() as u64 & 0xffff_ffff,
            self.request_seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn invoke_local(
        &self,
        pool: &Arc<Pool>,
        request: &InvokeRequest,
        deadline: Duration,
    ) -> Result<Invocation, RuntimeError> {
        let begun = Instant::now();
        let cancelled = || RuntimeError::Cancelled {
            function: pool.name.clone(),
        };
        let cancel = request.cancel.clone().unwrap_or_default();
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        if pool.retired.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let acquired = pool.lock().acquire(&pool.spec, self.now());
        let (instance, start, start_latency) = match acquired {
            Acquire::Warm(i) => (i, StartKind::Warm, None),
            Acquire::Full => {
                return Err(RuntimeError::QueueFull {
                    function: pool.name.clone(),
                    capacity: pool.spec.queue_capacity,
                });
            }
            Acquire::Cold => {
                let id = self.instance_seq.fetch_add(1, Ordering::Relaxed);
                match self.backend.start(&pool.name, &pool.spec, id).await {
                    Ok((i, latency)) => {
                        let i = Arc::new(i);
                        pool.lock().started(i.clone(), true, self.now());
                        self.report_alive(pool);
                        m::start(&pool.label, StartMetric::Cold, Some(latency));
                        (i, StartKind::Cold, Some(latency))
                    }
                    Err(e) => {
                        pool.lock().start_failed(true);
                        return Err(e);
                    }
                }
            }
            Acquire::Queued(mut rx) => {
                let waited = tokio::select! {
                    got = tokio::time::timeout(deadline, &mut rx) => match got {
                        Ok(Ok(i)) => Ok(i),
                        _ => Err(RuntimeError::Timeout {
                            function: pool.name.clone(),
                            deadline,
                            instance_killed: false,
                        }),
                    },
                    () = cancel.cancelled() => Err(cancelled()),
                };
                match waited {
                    Ok(i) => (i, StartKind::Warm, None),
                    Err(e) => {
                        // Whatever was handed over after we gave up goes back to the pool.
                        rx.close();
                        let mut st = pool.lock();
                        if let Ok(i) = rx.try_recv() {
                            st.release(&i, true, self.now());
                        } else {
                            st.abandon();
                        }
                        return Err(e);
                    }
                }
            }
        };
        if cancel.is_cancelled() {
            // Given up while its instance was starting or being handed over: the instance goes
            // back to the pool unused.
            self.release(pool, &instance, true);
            return Err(cancelled());
        }
        if start == StartKind::Warm {
            m::start(&pool.label, StartMetric::Warm, None);
        }
        let left = deadline.saturating_sub(begun.elapsed());
        let request_id = self.next_request_id();
        let headers = CallHeaders {
            function: &pool.name,
            request_id: &request_id,
            memory_mb: pool.spec.memory_mb,
        };
        let call_started = Instant::now();
        let result = call::post_invoke(
            &self.client,
            &instance.invoke_url,
            headers,
            left,
            request.payload.clone(),
        )
        .await;
        let duration = call_started.elapsed();
        let outcome: Result<Bytes, RuntimeError> = match result {
            Ok(out) => Ok(out),
            Err(CallError::Function(failure, message)) => Err(RuntimeError::Function {
                function: pool.name.clone(),
                failure,
                message,
            }),
            Err(CallError::Timeout) => {
                instance.kill();
                Err(RuntimeError::Timeout {
                    function: pool.name.clone(),
                    deadline,
                    instance_killed: true,
                })
            }
            Err(CallError::Transport(reason)) => Err(match instance.exited(EXIT_WAIT).await {
                Some(InstanceExit::OutOfMemory { limit_mb }) => RuntimeError::OutOfMemory {
                    function: pool.name.clone(),
                    limit_mb,
                },
                Some(exit) => RuntimeError::InstanceDied {
                    function: pool.name.clone(),
                    exit,
                },
                None => {
                    instance.kill();
                    RuntimeError::Transport {
                        function: pool.name.clone(),
                        reason,
                    }
                }
            }),
        };
        let healthy = instance.is_alive()
            && !matches!(
                &outcome,
                Err(RuntimeError::Timeout { .. } | RuntimeError::Transport { .. })
            );
        self.release(pool, &instance, healthy);
        let label = outcome
            .as_ref()
            .map_or_else(RuntimeError::outcome, |_| "ok");
        let billing = self.bill(pool, request, request_id, duration, label);
        outcome.map(|output| Invocation {
            output,
            start,
            start_latency,
            billing,
        })
    }

    async fn invoke_remote(
        &self,
        pool: &Arc<Pool>,
        request: &InvokeRequest,
        deadline: Duration,
    ) -> Result<Invocation, RuntimeError> {
        let Some((permits, waiting)) = &pool.remote else {
            return Err(RuntimeError::InvalidConfig(format!(
                "function {} has no url",
                pool.name
            )));
        };
        let url = pool
            .spec
            .url
            .as_deref()
            .map(|u| format!("{}/invoke", u.trim_end_matches('/')))
            .unwrap_or_default();
        let begun = Instant::now();
        let timeout = || RuntimeError::Timeout {
            function: pool.name.clone(),
            deadline,
            instance_killed: false,
        };
        let _permit = match permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if waiting.fetch_add(1, Ordering::AcqRel) >= pool.spec.queue_capacity {
                    waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(RuntimeError::QueueFull {
                        function: pool.name.clone(),
                        capacity: pool.spec.queue_capacity,
                    });
                }
                let cancel = request.cancel.clone().unwrap_or_default();
                let got = tokio::select! {
                    got = tokio::time::timeout(deadline, permits.acquire()) => Some(got),
                    () = cancel.cancelled() => None,
                };
                waiting.fetch_sub(1, Ordering::AcqRel);
                match got {
                    Some(Ok(Ok(p))) => p,
                    Some(Ok(Err(_))) => return Err(RuntimeError::ShuttingDown),
                    Some(Err(_)) => return Err(timeout()),
                    None => {
                        return Err(RuntimeError::Cancelled {
                            function: pool.name.clone(),
                        });
                    }
                }
            }
        };
        let request_id = self.next_request_id();
        let headers = CallHeaders {
            function: &pool.name,
            request_id: &request_id,
            memory_mb: pool.spec.memory_mb,
        };
        let left = deadline.saturating_sub(begun.elapsed());
        let call_started = Instant::now();
        let result =
            call::post_invoke(&self.client, &url, headers, left, request.payload.clone()).await;
        let duration = call_started.elapsed();
        let outcome = result.map_err(|e| match e {
            CallError::Function(failure, message) => RuntimeError::Function {
                function: pool.name.clone(),
                failure,
                message,
            },
            CallError::Timeout => timeout(),
            CallError::Transport(reason) => RuntimeError::Transport {
                function: pool.name.clone(),
                reason,
            },
        });
        let label = outcome
            .as_ref()
            .map_or_else(RuntimeError::outcome, |_| "ok");
        let billing = self.bill(pool, request, request_id, duration, label);
        outcome.map(|output| Invocation {
            output,
            start: StartKind::Remote,
            start_latency: None,
            billing,
        })
    }

    fn bill(
        &self,
        pool: &Pool,
        request: &InvokeRequest,
        request_id: String,
        duration: Duration,
        outcome: &'static str,
    ) -> BillingRecord {
        let (billed_ms, gb_seconds, cost_usd) =
            self.config.pricing.bill(pool.spec.memory_mb, 0, duration);
        let record = BillingRecord {
            function: pool.name.clone(),
            job: request.job.clone(),
            request_id,
            memory_mb: pool.spec.memory_mb,
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            billed_ms,
            gb_seconds,
            cost_usd,
            outcome: outcome.to_owned(),
        };
        self.meter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(&record);
        if outcome == "ok" {
            m::invocation(&pool.label, outcome, duration, gb_seconds);
        } else {
            metrics::gauge!(m::BILLED_GB_SECONDS, "function" => pool.label.clone())
                .increment(gb_seconds);
        }
        record
    }
}
