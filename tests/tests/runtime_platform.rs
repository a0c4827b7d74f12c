//! The function platform against real instance processes (`cumulus fn builtin-echo`): cold and warm
//! starts, memory and time limits, the bounded queue, keep-alive down to zero, `min_instances`,
//! billing. Tests wait on the platform's state, never assert on wall time.

use std::time::Duration;

use bytes::Bytes;
use cumulus_runtime::keepalive::KeepAliveConfig;
use cumulus_runtime::{
    CumulusConfig, FunctionOverride, InstanceExit, InvokeRequest, LimitMode, Platform,
    RuntimeError, StartKind,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// A config whose functions run the `cumulus` binary built for the tests.
fn config(overrides: &[(&str, FunctionOverride)]) -> CumulusConfig {
    let mut c = CumulusConfig::default();
    c.functions.executable = Some(cumulus_e2e::cumulus_bin());
    c.functions.reap_interval_ms = 20;
    for (name, o) in overrides {
        let o = FunctionOverride {
            kind: Some("builtin-echo".into()),
            ..o.clone()
        };
        c.functions.overrides.insert((*name).into(), o);
    }
    c
}

fn echo(memory_mb: u32) -> FunctionOverride {
    FunctionOverride {
        memory_mb: Some(memory_mb),
        ..FunctionOverride::default()
    }
}

fn op(json: serde_json::Value) -> Bytes {
    Bytes::from(json.to_string())
}

/// Polls `check` until it holds; fails the test after a generous bound (a hang, not a timing).
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for: {what}");
}

async fn pid(platform: &Platform, function: &str) -> u64 {
    let out = platform
        .invoke(function, op(serde_json::json!({"op": "info"})), DEADLINE)
        .await
        .expect("info");
    let v: serde_json::Value = serde_json::from_slice(&out.output).expect("info answers JSON");
    v["pid"].as_u64().expect("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_then_warm_reuse() {
    let platform = Platform::new(config(&[("echo", echo(1769))])).expect("platform");
    let first = platform
        .invoke("echo", Bytes::from_static(b"hello"), DEADLINE)
        .await
        .expect("cold");
    assert_eq!(first.start, StartKind::Cold);
    assert!(first.start_latency.is_some());
    assert_eq!(&first.output[..], b"hello");
    let second = platform
        .invoke("echo", Bytes::from_static(b"again"), DEADLINE)
        .await
        .expect("warm");
    assert_eq!(second.start, StartKind::Warm);
    assert_eq!(&second.output[..], b"again");
    let (a, b) = (pid(&platform, "echo").await, pid(&platform, "echo").await);
    assert_eq!(a, b, "the same instance serves warm invocations");
    let stats = platform.stats("echo").expect("pool");
    assert_eq!(
        (stats.cold_starts, stats.warm_starts, stats.alive),
        (1, 3, 1)
    );
    // Billing: every invocation billed at the 1769 MB tier, rounded up to whole ms.
    let meter = platform.meter();
    assert_eq!(meter.per_function["echo"].invocations, 4);
    assert!(first.billing.billed_ms >= 1 && first.billing.memory_mb == 1769);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_past_the_limit_is_out_of_memory_and_replaced() {
    let platform = Platform::new(config(&[("oom", echo(256))])).expect("platform");
    let before = pid(&platform, "oom").await;
    let err = platform
        .invoke(
            "oom",
            op(serde_json::json!({"op": "alloc", "mb": 600})),
            DEADLINE,
        )
        .await
        .expect_err("600 MB under a 256 MB limit must fail");
    assert!(
        matches!(err, RuntimeError::OutOfMemory { limit_mb: 256, .. }),
        "{err}"
    );
    let after = platform
        .invoke("oom", op(serde_json::json!({"op": "info"})), DEADLINE)
        .await
        .expect("replaced");
    assert_eq!(
        after.start,
        StartKind::Cold,
        "a new instance replaces the dead one"
    );
    assert_ne!(pid(&platform, "oom").await, before);
    // Within the limit, allocation works.
    platform
        .invoke(
            "oom",
            op(serde_json::json!({"op": "alloc", "mb": 64})),
            DEADLINE,
        )
        .await
        .expect("64 MB fits");
    assert_eq!(platform.stats("oom").expect("pool").replaced, 1);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_past_an_rlimit_is_out_of_memory() {
    let mut c = config(&[("oom-rlimit", echo(256))]);
    c.functions.limits = LimitMode::Rlimit;
    let platform = Platform::new(c).expect("platform");
    let err = platform
        .invoke(
            "oom-rlimit",
            op(serde_json::json!({"op": "alloc", "mb": 600})),
            DEADLINE,
        )
        .await
        .expect_err("600 MB under a 256 MB rlimit must fail");
    assert!(
        matches!(err, RuntimeError::OutOfMemory { limit_mb: 256, .. }),
        "{err}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_deadline_the_instance_is_killed_and_reported() {
    let platform = Platform::new(config(&[("slow", echo(1769))])).expect("platform");
    let before = pid(&platform, "slow").await;
    let err = platform
        .invoke(
            "slow",
            op(serde_json::json!({"op": "sleep", "ms": 60_000})),
            Duration::from_millis(300),
        )
        .await
        .expect_err("sleeping past the deadline must fail");
    assert!(
        matches!(
            err,
            RuntimeError::Timeout {
                instance_killed: true,
                ..
            }
        ),
        "{err}"
    );
    wait_for("the killed instance to leave the pool", || {
        platform.stats("slow").is_some_and(|s| s.alive == 0)
    })
    .await;
    assert_ne!(
        pid(&platform, "slow").await,
        before,
        "a fresh instance serves the next call"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_is_reported() {
    let platform = Platform::new(config(&[("quits", echo(1769))])).expect("platform");
    let err = platform
        .invoke(
            "quits",
            op(serde_json::json!({"op": "exit", "code": 3})),
            DEADLINE,
        )
        .await
        .expect_err("exit answers nothing");
    assert!(
        matches!(
            err,
            RuntimeError::InstanceDied {
                exit: InstanceExit::Code(3),
                ..
            }
        ),
        "{err}"
    );
    platform
        .invoke("quits", Bytes::from_static(b"x"), DEADLINE)
        .await
        .expect("replaced");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_refuses_past_its_bound() {
    let one = FunctionOverride {
        max_instances: Some(1),
        queue_capacity: Some(1),
        ..echo(1769)
    };
    let platform = Platform::new(config(&[("busy", one)])).expect("platform");
    let sleep = || op(serde_json::json!({"op": "sleep", "ms": 1500}));
    let running = tokio::spawn({
        let p = platform.clone();
        async move { p.invoke("busy", sleep(), DEADLINE).await }
    });
    wait_for("the first call to hold the only instance", || {
        platform
            .stats("busy")
            .is_some_and(|s| s.alive + s.starting == 1)
    })
    .await;
    let queued = tokio::spawn({
        let p = platform.clone();
        async move { p.invoke("busy", Bytes::from_static(b"q"), DEADLINE).await }
    });
    wait_for("the second call to queue", || {
        platform.stats("busy").is_some_and(|s| s.queued == 1)
    })
    .await;
    let err = platform
        .invoke("busy", Bytes::from_static(b"x"), DEADLINE)
        .await
        .expect_err("queue is full");
    assert!(
        matches!(err, RuntimeError::QueueFull { capacity: 1, .. }),
        "{err}"
    );
    running.await.expect("join").expect("first call completes");
    let q = queued.await.expect("join").expect("queued call completes");
    assert_eq!(&q.output[..], b"q");
    assert_eq!(platform.stats("busy").expect("pool").cold_starts, 1);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_scale_to_zero_after_the_keep_alive() {
    let short = FunctionOverride {
        keep_alive: Some(KeepAliveConfig::Fixed { ttl_ms: 200 }),
        ..echo(1769)
    };
    let platform = Platform::new(config(&[("brief", short)])).expect("platform");
    platform
        .invoke("brief", Bytes::from_static(b"x"), DEADLINE)
        .await
        .expect("cold");
    wait_for("scale to zero", || {
        platform.stats("brief").is_some_and(|s| s.alive == 0)
    })
    .await;
    let again = platform
        .invoke("brief", Bytes::from_static(b"x"), DEADLINE)
        .await
        .expect("cold again");
    assert_eq!(again.start, StartKind::Cold);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_instances_are_kept() {
    let kept = FunctionOverride {
        min_instances: Some(2),
        keep_alive: Some(KeepAliveConfig::Fixed { ttl_ms: 50 }),
        ..echo(1769)
    };
    let platform = Platform::new(config(&[("kept", kept)])).expect("platform");
    wait_for("two instances started ahead", || {
        platform.stats("kept").is_some_and(|s| s.alive == 2)
    })
    .await;
    let first = platform
        .invoke("kept", Bytes::from_static(b"x"), DEADLINE)
        .await
        .expect("warm");
    assert_eq!(
        first.start,
        StartKind::Warm,
        "min_instances serve without a cold start"
    );
    // Many keep-alive periods and reaper ticks later, both are still there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = platform.stats("kept").expect("pool");
    assert_eq!((stats.alive, stats.cold_starts), (2, 0));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_aggregates_per_job() {
    let platform = Platform::new(config(&[("billed", echo(512))])).expect("platform");
    for job in ["job-a", "job-a", "job-b"] {
        let request = InvokeRequest {
            function: "billed".into(),
            payload: Bytes::from_static(b"x"),
            deadline: None,
            job: Some(job.into()),
            cancel: None,
        };
        platform.invoke_request(request).await.expect("invoke");
    }
    let meter = platform.meter();
    assert_eq!(meter.per_job["job-a"].invocations, 2);
    assert_eq!(meter.per_job["job-b"].invocations, 1);
    let expected = platform.config().pricing.invocation_usd * 3.0
        + meter.total.gb_seconds * platform.config().pricing.gb_second_usd;
    assert!((meter.total.cost_usd - expected).abs() < 1e-12);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_serves_up_to_its_concurrency() {
    let two = FunctionOverride {
        concurrency: Some(2),
        max_instances: Some(4),
        ..echo(1769)
    };
    let platform = Platform::new(config(&[("shared", two)])).expect("platform");
    platform
        .invoke("shared", Bytes::from_static(b"warm"), DEADLINE)
        .await
        .expect("cold");
    let sleep = || op(serde_json::json!({"op": "sleep", "ms": 300}));
    let (a, b) = tokio::join!(
        platform.invoke("shared", sleep(), DEADLINE),
        platform.invoke("shared", sleep(), DEADLINE)
    );
    assert_eq!(
        (a.expect("a").start, b.expect("b").start),
        (StartKind::Warm, StartKind::Warm)
    );
    let stats = platform.stats("shared").expect("pool");
    assert_eq!(
        (stats.cold_starts, stats.alive),
        (1, 1),
        "two at once fit one instance"
    );
    platform.shutdown().await;
}
