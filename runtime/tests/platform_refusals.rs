//! What the platform refuses before any instance runs: bad names, oversized payloads, an executable
//! that cannot start, a closed platform, a config given in memory that is invalid.

use std::time::Duration;

use bytes::Bytes;
use cumulus_runtime::{CumulusConfig, Platform, RuntimeError};

fn config() -> CumulusConfig {
    let mut c = CumulusConfig::default();
    c.functions.executable = Some("/nonexistent/cumulus".into());
    c.functions.max_payload_bytes = 16;
    c
}

#[tokio::test]
async fn bad_names_and_oversized_payloads_are_refused() {
    let platform = Platform::new(config()).expect("platform");
    for name in ["", "Upper", "-lead", "a/b", &"x".repeat(64)] {
        let err = platform
            .invoke(name, Bytes::new(), Duration::from_secs(1))
            .await
            .expect_err("bad name");
        assert!(
            matches!(err, RuntimeError::InvalidFunctionName(_)),
            "{name:?}: {err}"
        );
    }
    let err = platform
        .invoke("echo", Bytes::from(vec![0u8; 17]), Duration::from_secs(1))
        .await
        .expect_err("too big");
    assert!(
        matches!(
            err,
            RuntimeError::PayloadTooLarge {
                size: 17,
                limit: 16
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_executable_that_cannot_start_is_reported_and_frees_its_slot() {
    let platform = Platform::new(config()).expect("platform");
    for _ in 0..3 {
        let err = platform
            .invoke("echo", Bytes::new(), Duration::from_secs(1))
            .await
            .expect_err("no binary");
        assert!(matches!(err, RuntimeError::StartFailed { .. }), "{err}");
    }
    let stats = platform.stats("echo").expect("pool");
    assert_eq!(
        (stats.alive, stats.starting),
        (0, 0),
        "failed starts leave no reserved slot behind"
    );
    platform.shutdown().await;
    let err = platform
        .invoke("echo", Bytes::new(), Duration::from_secs(1))
        .await
        .expect_err("closed");
    assert!(matches!(err, RuntimeError::ShuttingDown), "{err}");
}

#[tokio::test]
async fn invalid_config_in_memory_is_refused() {
    let mut c = config();
    c.functions.defaults.min_instances = 9;
    c.functions.defaults.max_instances = 2;
    let err = Platform::new(c).expect_err("min > max");
    assert!(
        err.to_string().contains("functions.defaults.min_instances"),
        "{err}"
    );
}

#[test]
fn platform_needs_a_runtime() {
    let err = Platform::new(config()).expect_err("no runtime here");
    assert!(matches!(err, RuntimeError::NoRuntime), "{err}");
}
