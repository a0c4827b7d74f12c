//! `cumulus bench runtime`: cold-start latency, warm invoke overhead against a direct HTTP call to
//! the same running instance, and throughput through the platform; and the keep-alive comparison
//! (fixed 10-minute TTL against the hybrid histogram) on a generated Azure-like trace.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::config::{CumulusConfig, FunctionOverride};
use crate::instance::builtin::BUILTIN_ECHO;
use crate::instance::{HEADER_DEADLINE_MS, HEADER_FUNCTION, HEADER_MEMORY_MB, HEADER_REQUEST_ID};
use crate::keepalive::{
    FunctionClass, HybridParams, KeepAliveConfig, SimReport, Trace, TraceParams, simulate,
};
use crate::{Platform, RuntimeError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct RuntimeBenchOptions {
    /// Platform configuration (the benchmark adds its own functions of kind `builtin-echo`).
    pub config: CumulusConfig,
    /// Cold starts measured.
    pub cold_samples: usize,
    /// Warm invocations measured (and as many direct calls).
    pub warm_samples: usize,
    /// Invocations of the throughput run.
    pub throughput_invocations: usize,
    /// Concurrent callers of the throughput run.
    pub throughput_callers: usize,
    /// Instances of the throughput run.
    pub throughput_instances: usize,
    /// Memory tier of the benchmark functions (1769 MB = 1 vCPU).
    pub memory_mb: u32,
    /// Payload size, bytes.
    pub payload_bytes: usize,
}

impl Default for RuntimeBenchOptions {
    fn default() -> Self {
        Self {
            config: CumulusConfig::default(),
            cold_samples: 10,
            warm_samples: 300,
            throughput_invocations: 3000,
            throughput_callers: 4,
            throughput_instances: 2,
            memory_mb: 1769,
            payload_bytes: 1024,
        }
    }
}

/// Latency summary, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pick = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |d| ms(*d))
        };
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64
        };
        Self {
            n: samples.len(),
            mean_ms: mean,
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
        }
    }
}

/// Results of the process benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeBenchReport {
    /// Spawn-to-ready latency of an instance.
    pub cold_start: Summary,
    /// Whole cold invocation (start + call).
    pub cold_invoke: Summary,
    /// A warm invocation through the platform.
    pub warm_platform: Summary,
    /// The same call sent directly to the running instance.
    pub warm_direct: Summary,
    /// `warm_platform.p50 / warm_direct.p50`.
    pub warm_overhead_ratio_p50: f64,
    /// Invocations per second through the platform.
    pub throughput_inv_per_s: f64,
    /// Callers and instances of the throughput run.
    pub throughput_callers: usize,
    /// Instances of the throughput run.
    pub throughput_instances: usize,
    /// Memory tier used.
    pub memory_mb: u32,
    /// How limits were applied (`auto`, `cgroup`, `rlimit`, `none`).
    pub limits: String,
}

/// Runs the process benchmark.
pub async fn run_runtime(options: RuntimeBenchOptions) -> Result<RuntimeBenchReport, RuntimeError> {
    let mut config = options.config.clone();
    let over = |max: usize| FunctionOverride {
        kind: Some(BUILTIN_ECHO.into()),
        memory_mb: Some(options.memory_mb),
        max_instances: Some(max),
        queue_capacity: Some(options.throughput_callers.max(1) * 2),
        keep_alive: Some(KeepAliveConfig::Fixed { ttl_ms: 600_000 }),
        ..FunctionOverride::default()
    };
    for (name, max) in [
        ("bench-cold", 1),
        ("bench-warm", 1),
        ("bench-tput", options.throughput_instances.max(1)),
    ] {
        config.functions.overrides.insert(name.into(), over(max));
    }
    let limits = format!("{:?}", config.functions.limits).to_lowercase();
    let platform = Platform::new(config)?;
    let result = measure(&platform, &options).await;
    platform.shutdown().await;
    let (cold_start, cold_invoke, warm_platform, warm_direct, tput) = result?;
    let ratio = if warm_direct.p50_ms > 0.0 {
        warm_platform.p50_ms / warm_direct.p50_ms
    } else {
        f64::NAN
    };
    Ok(RuntimeBenchReport {
        cold_start,
        cold_invoke,
        warm_platform,
        warm_direct,
        warm_overhead_ratio_p50: ratio,
        throughput_inv_per_s: tput,
        throughput_callers: options.throughput_callers,
        throughput_instances: options.throughput_instances,
        memory_mb: options.memory_mb,
        limits,
    })
}

type Measured = (Summary, Summary, Summary, Summary, f64);

async fn measure(platform: &Platform, o: &RuntimeBenchOptions) -> Result<Measured, RuntimeError> {
    let payload = Bytes::from(vec![b'x'; o.payload_bytes]);
    let deadline = Duration::from_secs(30);
    let (mut starts, mut colds) = (Vec::new(), Vec::new());
    for _ in 0..o.cold_samples {
        platform.scale_to_zero("bench-cold").await;
        let t = Instant::now();
        let inv = platform
            .invoke("bench-cold", payload.clone(), deadline)
            .await?;
        colds.push(t.elapsed());
        starts.extend(inv.start_latency);
    }
    // Warm: alternate platform and direct calls on the one instance, same payload and headers.
    platform
        .invoke("bench-warm", payload.clone(), deadline)
        .await?;
    let addr = *platform
        .instance_addrs("bench-warm")
        .first()
        .ok_or_else(|| RuntimeError::StartFailed {
            function: "bench-warm".into(),
            reason: "no instance after a successful invocation".into(),
        })?;
    let direct = reqwest::Client::new();
    let url = format!("http://{addr}/invoke");
    let (mut via, mut raw) = (Vec::new(), Vec::new());
    for i in 0..o.warm_samples + 20 {
        let t = Instant::now();
        platform
            .invoke("bench-warm", payload.clone(), deadline)
            .await?;
        let a = t.elapsed();
        let t = Instant::now();
        let r = direct
            .post(&url)
            .header(HEADER_DEADLINE_MS, "30000")
            .header(HEADER_MEMORY_MB, o.memory_mb.to_string())
            .header(HEADER_REQUEST_ID, format!("direct-{i}"))
            .header(HEADER_FUNCTION, "bench-warm")
            .body(payload.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let body = match r {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        let b = t.elapsed();
        if body.is_none() {
            return Err(RuntimeError::Transport {
                function: "bench-warm".into(),
                reason: "direct call failed".into(),
            });
        }
        // The first calls warm connections and caches on both paths.
        if i >= 20 {
            via.push(a);
            raw.push(b);
        }
    }
    // Throughput: closed loop, `callers` concurrent callers over `instances` warm instances.
    for _ in 0..o.throughput_instances {
        let _ = platform
            .invoke("bench-tput", payload.clone(), deadline)
            .await;
    }
    let left = Arc::new(AtomicUsize::new(o.throughput_invocations));
    let t = Instant::now();
    let callers: Vec<_> = (0..o.throughput_callers.max(1))
        .map(|_| {
            let (platform, left, payload) = (platform.clone(), left.clone(), payload.clone());
            tokio::spawn(async move {
                let mut done = 0usize;
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    platform
                        .invoke("bench-tput", payload.clone(), deadline)
                        .await?;
                    done += 1;
                }
                Ok::<usize, RuntimeError>(done)
            })
        })
        .collect();
    let mut done = 0;
    for c in callers {
        done += c
            .await
            .map_err(|e| RuntimeError::io("bench caller", std::io::Error::other(e)))??;
    }
    let tput = done as f64 / t.elapsed().as_secs_f64();
    Ok((
        Summary::of(starts),
        Summary::of(colds),
        Summary::of(via),
        Summary::of(raw),
        tput,
    ))
}

/// Results of the keep-alive comparison.
#[derive(Debug, Clone, Serialize)]
pub struct KeepAliveBenchReport {
    /// The trace's shape.
    pub trace: TraceParams,
    /// Invocations in the trace.
    pub invocations: u64,
    /// Fixed 10-minute keep-alive.
    pub fixed: SimReport,
    /// Hybrid histogram with our default fallback (10 min).
    pub hybrid: SimReport,
    /// Hybrid histogram with the paper's fallback (the 4-hour range).
    pub hybrid_paper_fallback: SimReport,
    /// Fixed and hybrid on each class of functions alone.
    pub by_class: Vec<ClassComparison>,
}

/// Both policies on one class of functions.
#[derive(Debug, Clone, Serialize)]
pub struct ClassComparison {
    /// The class.
    pub class: FunctionClass,
    /// Fixed 10-minute keep-alive.
    pub fixed: SimReport,
    /// Hybrid histogram.
    pub hybrid: SimReport,
}

/// Simulates both policies on the generated trace.
pub fn run_keepalive(trace: TraceParams) -> KeepAliveBenchReport {
    let generated = trace.generate();
    let fixed = simulate(&generated, &KeepAliveConfig::Fixed { ttl_ms: 600_000 });
    let hybrid = simulate(
        &generated,
        &KeepAliveConfig::Hybrid(HybridParams::default()),
    );
    let paper = HybridParams {
        fallback_keep_alive_ms: 4 * 3_600_000,
        ..HybridParams::default()
    };
    let mut hybrid_paper_fallback = simulate(&generated, &KeepAliveConfig::Hybrid(paper));
    hybrid_paper_fallback.policy.push_str(", 4h fallback");
    let by_class = [
        FunctionClass::Periodic,
        FunctionClass::Frequent,
        FunctionClass::Bursty,
        FunctionClass::Rare,
    ]
    .into_iter()
    .map(|class| {
        let functions = generated
            .functions
            .iter()
            .filter(|f| f.class == class)
            .cloned()
            .collect();
        let sub = Trace {
            span: generated.span,
            functions,
        };
        ClassComparison {
            class,
            fixed: simulate(&sub, &KeepAliveConfig::Fixed { ttl_ms: 600_000 }),
            hybrid: simulate(&sub, &KeepAliveConfig::Hybrid(HybridParams::default())),
        }
    })
    .collect();
    KeepAliveBenchReport {
        invocations: generated.invocations(),
        trace,
        fixed,
        hybrid,
        hybrid_paper_fallback,
        by_class,
    }
}

/// The process benchmark as a table.
pub fn runtime_table(r: &RuntimeBenchReport) -> String {
    let row = |name: &str, s: &Summary| {
        format!(
            "{name:<34} {:>6} {:>10.3} {:>10.3} {:>10.3}\n",
            s.n, s.mean_ms, s.p50_ms, s.p99_ms
        )
    };
    let mut t = format!(
        "{:<34} {:>6} {:>10} {:>10} {:>10}\n",
        "measure", "n", "mean ms", "p50 ms", "p99 ms"
    );
    t += &row("cold start (spawn -> ready)", &r.cold_start);
    t += &row("cold invocation (end to end)", &r.cold_invoke);
    t += &row("warm invocation via platform", &r.warm_platform);
    t += &row("direct HTTP call to instance", &r.warm_direct);
    t += &format!(
        "warm overhead ratio (p50 platform / p50 direct): {:.2}\n",
        r.warm_overhead_ratio_p50
    );
    t += &format!(
        "throughput: {:.0} invocations/s ({} callers, {} instances, {} MB, limits {})\n",
        r.throughput_inv_per_s, r.throughput_callers, r.throughput_instances, r.memory_mb, r.limits
    );
    t
}

/// The keep-alive comparison as a table.
pub fn keepalive_table(r: &KeepAliveBenchReport) -> String {
    let mut t = format!(
        "trace: {} functions, {} h, seed {}, {} invocations\n{:<40} {:>10} {:>10} {:>12} {:>12} {:>16}\n",
        r.trace.functions,
        r.trace.hours,
        r.trace.seed,
        r.invocations,
        "policy",
        "cold",
        "cold rate",
        "mean fn rate",
        "p75 fn rate",
        "idle inst-s"
    );
    for s in [&r.fixed, &r.hybrid, &r.hybrid_paper_fallback] {
        t += &format!(
            "{:<40} {:>10} {:>10.4} {:>12.4} {:>12.4} {:>16.0}\n",
            s.policy,
            s.cold_starts,
            s.cold_start_rate,
            s.mean_function_cold_start_rate,
            s.p75_function_cold_start_rate,
            s.idle_instance_seconds
        );
    }
    t += &format!(
        "\n{:<10} {:>12} {:>12} {:>12} {:>16} {:>16}\n",
        "class", "invocations", "fixed cold", "hybrid cold", "fixed idle s", "hybrid idle s"
    );
    for c in &r.by_class {
        t += &format!(
            "{:<10} {:>12} {:>12} {:>12} {:>16.0} {:>16.0}\n",
            format!("{:?}", c.class).to_lowercase(),
            c.fixed.invocations,
            c.fixed.cold_starts,
            c.hybrid.cold_starts,
            c.fixed.idle_instance_seconds,
            c.hybrid.idle_instance_seconds
        );
    }
    t
}

/// The Tokio runtime the benchmark runs on (multi-threaded, so callers run in parallel).
pub type BenchRuntime = tokio::runtime::Runtime;

/// Builds the benchmark's runtime.
pub fn bench_runtime() -> std::io::Result<BenchRuntime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
