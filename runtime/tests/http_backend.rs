//! The HTTP backend: a function with a `url` is invoked over the `/invoke` contract, as Knative or
//! OpenFaaS would serve it. Here the "remote" is an in-process instance server on port 0.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cumulus_runtime::instance::builtin::BuiltinEcho;
use cumulus_runtime::instance::{InstanceOptions, serve};
use cumulus_runtime::{
    CumulusConfig, FunctionFailure, FunctionOverride, Platform, RuntimeError, StartKind,
};

async fn remote_platform(
    max_instances: usize,
    queue_capacity: usize,
) -> (Platform, cumulus_runtime::instance::InstanceHandle) {
    let options = InstanceOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        addr_file: None,
        concurrency: 4,
        max_body_bytes: 1 << 20,
        exit_with_parent: false,
    };
    let instance = serve(Arc::new(BuiltinEcho), "remote-echo", options)
        .await
        .expect("instance serves");
    let mut config = CumulusConfig::default();
    config.functions.overrides.insert(
        "remote-echo".into(),
        FunctionOverride {
            url: Some(format!("http://{}/", instance.addr)),
            memory_mb: Some(512),
            max_instances: Some(max_instances),
            queue_capacity: Some(queue_capacity),
            ..FunctionOverride::default()
        },
    );
    (Platform::new(config).expect("platform"), instance)
}

fn op(v: serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}

#[tokio::test]
async fn remote_function_gets_the_contract_headers_and_is_billed() {
    let (platform, instance) = remote_platform(2, 4).await;
    let out = platform
        .invoke(
            "remote-echo",
            op(serde_json::json!({"op": "info"})),
            Duration::from_secs(5),
        )
        .await
        .expect("remote invoke");
    assert_eq!(out.start, StartKind::Remote);
    let info: serde_json::Value = serde_json::from_slice(&out.output).expect("json");
    assert_eq!(info["memory_mb"], 512);
    assert_eq!(
        info["request_id"].as_str(),
        Some(out.billing.request_id.as_str())
    );
    assert!(
        info["remaining_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 5000)
    );
    assert_eq!(platform.meter().per_function["remote-echo"].invocations, 1);
    platform.shutdown().await;
    instance.shutdown().await.expect("instance stops");
}

#[tokio::test]
async fn remote_errors_and_deadlines_are_reported() {
    let (platform, instance) = remote_platform(2, 4).await;
    let err = platform
        .invoke(
            "remote-echo",
            op(serde_json::json!({"op": "fail", "message": "boom"})),
            Duration::from_secs(5),
        )
        .await
        .expect_err("handler failure");
    assert!(
        matches!(&err, RuntimeError::Function { failure: FunctionFailure::Failed, message, .. } if message.contains("boom")),
        "{err}"
    );
    let err = platform
        .invoke(
            "remote-echo",
            op(serde_json::json!({"op": "bogus"})),
            Duration::from_secs(5),
        )
        .await
        .expect_err("bad payload");
    assert!(
        matches!(
            err,
            RuntimeError::Function {
                failure: FunctionFailure::BadPayload,
                ..
            }
        ),
        "{err}"
    );
    let err = platform
        .invoke(
            "remote-echo",
            op(serde_json::json!({"op": "sleep", "ms": 10_000})),
            Duration::from_millis(100),
        )
        .await
        .expect_err("deadline");
    assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    platform.shutdown().await;
    instance.shutdown().await.expect("instance stops");
}

#[tokio::test]
async fn remote_calls_are_bounded_and_the_queue_refuses() {
    let (platform, instance) = remote_platform(1, 0).await;
    let slow = tokio::spawn({
        let p = platform.clone();
        async move {
            p.invoke(
                "remote-echo",
                op(serde_json::json!({"op": "sleep", "ms": 500})),
                Duration::from_secs(5),
            )
            .await
        }
    });
    // On this current-thread runtime the spawned call runs, and takes the only permit, as soon as
    // the test yields; it then waits on the network.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let err = platform
        .invoke(
            "remote-echo",
            Bytes::from_static(b"x"),
            Duration::from_secs(5),
        )
        .await
        .expect_err("past max_instances x concurrency with an empty queue");
    assert!(
        matches!(err, RuntimeError::QueueFull { capacity: 0, .. }),
        "{err}"
    );
    slow.await.expect("join").expect("slow call completes");
    platform.shutdown().await;
    instance.shutdown().await.expect("instance stops");
}
