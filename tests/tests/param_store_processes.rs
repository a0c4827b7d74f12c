//! Parameter-store shards as real `cumulus param-store` processes on 127.0.0.1:0: concurrent
//! clients pushing random sparse deltas end with exactly the independently computed sums, and the
//! gRPC health service answers SERVING.

#[path = "param_store_support.rs"]
mod support;

use std::collections::HashMap;

use cumulus_param_store::client::{ClientConfig, ParamStoreClient, sparse};
use cumulus_proto::paramstore::v1 as pb;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_sum_exactly_across_shard_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let shards = tokio::task::spawn_blocking(move || {
        vec![
            support::start_shard_with(&a, 0, 2, "127.0.0.1:0", true),
            support::start_shard(&b, 1, 2, "127.0.0.1:0"),
        ]
    })
    .await
    .unwrap();
    let addrs: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "paramstore.v1.ParamStore".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let setup = ParamStoreClient::connect(&addrs, ClientConfig::default())
        .await
        .unwrap();
    setup
        .register(pb::RegisterRequest {
            job_id: "e2e".into(),
            tensors: vec![
                pb::TensorSpec {
                    name: "emb".into(),
                    shape: vec![300, 100],
                    init: None,
                },
                pb::TensorSpec {
                    name: "fc.bias".into(),
                    shape: vec![10],
                    init: None,
                },
            ],
            sync: "asp".into(),
            workers: 4,
            chunk_size: 4096,
        })
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for worker in 0..4u32 {
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            // Each worker has its own client, as separate worker functions would.
            let client = ParamStoreClient::connect(&addrs, ClientConfig::default())
                .await
                .unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + u64::from(worker));
            let mut sums: HashMap<&'static str, Vec<f64>> = HashMap::new();
            for seq in 1..=30u64 {
                let mut updates = Vec::new();
                for (name, len) in [("emb", 30_000u64), ("fc.bias", 10)] {
                    let n = rng.random_range(1..500usize);
                    let idx: Vec<u64> = (0..n).map(|_| rng.random_range(0..len)).collect();
                    let vals: Vec<f32> = (0..n)
                        .map(|_| rng.random_range(-24i32..24) as f32 / 8.0)
                        .collect();
                    let s = sums.entry(name).or_insert_with(|| vec![0.0; len as usize]);
                    for (i, v) in idx.iter().zip(&vals) {
                        s[*i as usize] += f64::from(*v);
                    }
                    updates.push(sparse(name, idx, vals));
                }
                client
                    .push("e2e", worker, seq / 5, seq, updates)
                    .await
                    .unwrap();
            }
            sums
        }));
    }
    let mut expected: HashMap<&str, Vec<f64>> = HashMap::new();
    for t in tasks {
        for (name, part) in t.await.unwrap() {
            let e = expected
                .entry(name)
                .or_insert_with(|| vec![0.0; part.len()]);
            for (x, y) in e.iter_mut().zip(part) {
                *x += y;
            }
        }
    }
    let pulled = setup.pull_all("e2e", None).await.unwrap();
    for (name, want) in expected {
        let want: Vec<f32> = want.into_iter().map(|v| v as f32).collect();
        assert_eq!(pulled[name], want, "tensor {name}");
    }
    let stats = setup.stats().await.unwrap();
    assert!(
        stats.iter().all(|s| s.jobs[0].pushes > 0),
        "both shards took pushes: {stats:?}"
    );
    let metrics_addr = shards[0].metrics.expect("shard 0 serves metrics");
    let text = tokio::task::spawn_blocking(move || support::scrape(metrics_addr))
        .await
        .unwrap();
    for name in [
        "cumulus_param_store_push_bytes_total",
        "cumulus_param_store_pushes_total",
        "cumulus_param_store_request_duration_seconds_bucket",
        "cumulus_param_store_wal_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    drop(shards);
}
