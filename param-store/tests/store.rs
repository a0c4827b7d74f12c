//! In-process integration tests: real shards on 127.0.0.1:0 served by `run`, driven by the
//! routing client (and by the raw gRPC client where the wire behaviour is the point).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cumulus_param_store::client::{
    ChangedOptions, ClientConfig, ParamStoreClient, PullClock, SparseUpdate, dense, sparse,
};
use cumulus_param_store::{ShardConfig, ShardHandle, run};
use cumulus_proto::paramstore::v1 as pb;
use rand::{Rng, SeedableRng};

type Shards = Vec<ShardHandle>;

async fn start(
    n: u32,
    dir: &std::path::Path,
    store: Option<String>,
    tweak: impl Fn(&mut ShardConfig),
) -> (Shards, ParamStoreClient) {
    let mut shards = Vec::new();
    for i in 0..n {
        let mut cfg = ShardConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join(format!("shard-{i}")),
        );
        cfg.shard_index = i;
        cfg.shard_count = n;
        cfg.store_url = store.clone();
        tweak(&mut cfg);
        shards.push(run(cfg).await.expect("shard starts"));
    }
    let addrs: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();
    let client = ParamStoreClient::connect(&addrs, ClientConfig::default())
        .await
        .expect("client connects");
    (shards, client)
}

async fn stop(shards: Shards) {
    for s in shards {
        s.stop().await.expect("shard stops cleanly");
    }
}

fn job(id: &str, sync: &str, workers: u32, tensors: &[(&str, u64)]) -> pb::RegisterRequest {
    pb::RegisterRequest {
        job_id: id.into(),
        tensors: tensors
            .iter()
            .map(|(n, len)| pb::TensorSpec {
                name: (*n).into(),
                shape: vec![*len],
                init: None,
            })
            .collect(),
        sync: sync.into(),
        workers,
        chunk_size: 1000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sparse_pushes_sum_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(3, dir.path(), None, |_| {}).await;
    let tensors = [("emb", 20_000u64), ("bias", 7)];
    assert!(
        client
            .register(job("sum", "asp", 4, &tensors))
            .await
            .unwrap()
    );
    assert!(
        !client
            .register(job("sum", "asp", 4, &tensors))
            .await
            .unwrap(),
        "same layout again is a no-op"
    );

    let expected = Arc::new(Mutex::new(HashMap::<String, Vec<f64>>::new()));
    let mut tasks = Vec::new();
    for worker in 0..4u32 {
        let client = client.clone();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(worker));
            for seq in 1..=25u64 {
                let mut updates = Vec::new();
                for (name, len) in [("emb", 20_000u64), ("bias", 7)] {
                    let n = rng.random_range(1..200usize);
                    let mut idx: Vec<u64> = (0..n).map(|_| rng.random_range(0..len)).collect();
                    if worker % 2 == 0 {
                        // Sorted indices (repeats included) travel gap-coded, the others raw.
                        idx.sort_unstable();
                    }
                    // Multiples of 1/8 in a small range sum exactly in f32.
                    let vals: Vec<f32> = (0..n)
                        .map(|_| rng.random_range(-16i32..16) as f32 / 8.0)
                        .collect();
                    {
                        let mut e = expected.lock().unwrap();
                        let e = e
                            .entry(name.into())
                            .or_insert_with(|| vec![0.0; len as usize]);
                        for (i, v) in idx.iter().zip(&vals) {
                            e[*i as usize] += f64::from(*v);
                        }
                    }
                    updates.push(sparse(name, idx, vals));
                }
                client.push("sum", worker, seq, seq, updates).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pulled = client.pull_all("sum", None).await.unwrap();
    let expected = expected.lock().unwrap().clone();
    for (name, want) in expected.iter() {
        let got = &pulled[name];
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_eq!(got, &want, "tensor {name}");
    }
    // Changed-only pull: everything since "nothing" is exactly the non-zero entries (all changed
    // entries are reported; entries whose deltas cancelled are reported with value 0).
    let (changed, since) = client
        .pull_changed("sum", &client.no_versions(), None)
        .await
        .unwrap();
    let emb = changed.iter().find(|c| c.tensor == "emb").unwrap();
    for (i, v) in emb.indices.iter().zip(&emb.values) {
        assert_eq!(*v, pulled["emb"][*i as usize]);
    }
    let (again, _) = client.pull_changed("sum", &since, None).await.unwrap();
    assert!(again.is_empty(), "nothing changed since: {again:?}");
    client
        .push(
            "sum",
            0,
            99,
            99,
            vec![sparse("emb", vec![5, 19_999], vec![1.0, 2.0])],
        )
        .await
        .unwrap();
    let (delta, since2) = client.pull_changed("sum", &since, None).await.unwrap();
    assert_eq!(delta.len(), 1);
    let mut idx = delta[0].indices.clone();
    idx.sort();
    assert_eq!(idx, vec![5, 19_999]);
    // Two entries sent sparse, each alone in its chunk (of 1,000): a 4-byte value each, and the
    // offsets 5 and 999 as varints of 1 and 2 bytes.
    assert_eq!(delta[0].wire_bytes, 2 * 4 + 1 + 2);
    // What worker 0 lacks: entries another worker changed too, not those only it changed.
    for (worker, seq, idx) in [(0u32, 100u64, vec![5u64, 8]), (1, 100, vec![5, 7])] {
        let vals = vec![1.0; idx.len()];
        client
            .push("sum", worker, seq, seq, vec![sparse("emb", idx, vals)])
            .await
            .unwrap();
    }
    let except_0 = ChangedOptions {
        except_worker: Some(0),
        ..Default::default()
    };
    let (others, since3) = client
        .pull_changed_with("sum", &since2, except_0)
        .await
        .unwrap();
    let mut idx = others[0].indices.clone();
    idx.sort();
    assert_eq!(idx, vec![5, 7], "entry 8 changed only by worker 0");
    let now = client.pull_all("sum", None).await.unwrap();
    for (i, v) in others[0].indices.iter().zip(&others[0].values) {
        assert_eq!(*v, now["emb"][*i as usize], "current values");
    }
    // f16 values: chunk 0 (of 1,000 entries) now holds a value past f16's range and comes back
    // in f32, exactly; chunk 1 comes back in f16.
    client
        .push(
            "sum",
            1,
            101,
            101,
            vec![sparse("emb", vec![9, 1500], vec![70_000.0, 0.375])],
        )
        .await
        .unwrap();
    let half = ChangedOptions {
        half: true,
        ..Default::default()
    };
    let (h, _) = client
        .pull_changed_with("sum", &since3, half)
        .await
        .unwrap();
    let now = client.pull_all("sum", None).await.unwrap();
    let mut got: Vec<(u64, f32)> = h[0]
        .indices
        .iter()
        .copied()
        .zip(h[0].values.clone())
        .collect();
    got.sort_by_key(|e| e.0);
    let round = |v: f32| half::f16::from_f32(v).to_f32();
    assert_eq!(
        got,
        vec![(9, now["emb"][9]), (1500, round(now["emb"][1500]))]
    );
    // 4 bytes for the f32 value and 2 for the f16 one, 1 + 2 bytes of offsets (9 and 500).
    assert_eq!(h[0].wire_bytes, 4 + 2 + 1 + 2);
    stop(shards).await;
}

/// Runs a fast and a slow worker under `sync` and checks, from an ordered event log, that the fast
/// one never completes a pull for clock `c` before the slow one announced clock `c - k`, and that
/// it does get exactly that far while the slow one is paused.
async fn staleness_bound_holds(sync: &str, k: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(2, dir.path(), None, |_| {}).await;
    client
        .register(job("sync", sync, 2, &[("w", 100)]))
        .await
        .unwrap();
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Ev {
        SlowAt(u64),
        FastRequests(u64),
        FastPulled(u64),
    }
    let log = Arc::new(Mutex::new(Vec::<Ev>::new()));
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel::<Ev>();
    const CLOCKS: u64 = 6;
    let fast = {
        let (client, log) = (client.clone(), log.clone());
        tokio::spawn(async move {
            for c in 0..CLOCKS {
                log.lock().unwrap().push(Ev::FastRequests(c));
                let _ = progress_tx.send(Ev::FastRequests(c));
                client
                    .pull_range(
                        "sync",
                        "w",
                        0,
                        0,
                        Some(PullClock {
                            worker: 0,
                            clock: c,
                        }),
                    )
                    .await
                    .unwrap();
                log.lock().unwrap().push(Ev::FastPulled(c));
                client
                    .push("sync", 0, c, c + 1, vec![sparse("w", vec![0], vec![1.0])])
                    .await
                    .unwrap();
                client.clock("sync", 0, c + 1, false).await.unwrap();
            }
        })
    };
    for s in 0..CLOCKS {
        // The slow worker sits at clock s: the fast one must get to request clock s + k + 1 ...
        let blocked_at = s + k + 1;
        if blocked_at < CLOCKS {
            while let Some(ev) = progress.recv().await {
                if ev == Ev::FastRequests(blocked_at) {
                    break;
                }
            }
        }
        // ... and only then is the slow one allowed on.
        log.lock().unwrap().push(Ev::SlowAt(s + 1));
        client.clock("sync", 1, s + 1, false).await.unwrap();
    }
    fast.await.unwrap();
    let log = log.lock().unwrap().clone();
    let mut slow = 0;
    let mut max_pulled = None;
    for ev in &log {
        match *ev {
            Ev::SlowAt(s) => slow = s,
            Ev::FastPulled(c) => {
                assert!(
                    c <= slow + k,
                    "fast pulled clock {c} while slow was at {slow} (k = {k}): {log:?}"
                );
                max_pulled = Some(c);
            }
            Ev::FastRequests(_) => {}
        }
    }
    assert_eq!(max_pulled, Some(CLOCKS - 1));
    // While the slow worker sat at s, the fast one reached exactly s + k.
    for s in 0..CLOCKS.saturating_sub(k + 1) {
        let at = log.iter().position(|e| *e == Ev::SlowAt(s + 1)).unwrap();
        assert!(
            log[..at].contains(&Ev::FastPulled(s + k)),
            "fast did not reach {} with slow at {s}: {log:?}",
            s + k
        );
        assert!(!log[..at].contains(&Ev::FastPulled(s + k + 1)));
    }
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssp_blocks_the_fast_worker_at_c_minus_k() {
    staleness_bound_holds("ssp:2", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsp_is_ssp_zero() {
    staleness_bound_holds("bsp", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asp_never_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(1, dir.path(), None, |_| {}).await;
    client
        .register(job("asp", "asp", 2, &[("w", 10)]))
        .await
        .unwrap();
    for c in 0..20 {
        client
            .pull_range(
                "asp",
                "w",
                0,
                0,
                Some(PullClock {
                    worker: 0,
                    clock: c,
                }),
            )
            .await
            .unwrap();
        client.clock("asp", 0, c + 1, true).await.unwrap();
    }
    // Worker 1 never moved, and worker 0 is at 20.
    let stats = client.stats().await.unwrap();
    assert_eq!(
        (stats[0].jobs[0].min_clock, stats[0].jobs[0].max_clock),
        (0, 20)
    );
    // Asked to stop, the job says so in every clock answer after.
    let before = client.clock("asp", 1, 1, false).await.unwrap();
    assert_eq!((before.min_clock, before.stopping), (1, false));
    client.stop("asp").await.unwrap();
    assert!(client.clock("asp", 1, 2, false).await.unwrap().stopping);
    let err = client.stop("nope").await.unwrap_err().to_string();
    assert!(err.contains("unknown job 'nope'"), "{err}");
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_whole_with_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(1, dir.path(), None, |c| c.max_message_bytes = 64 * 1024).await;
    client
        .register(job("bad", "asp", 2, &[("w", 100), ("b", 4)]))
        .await
        .unwrap();
    let mut raw =
        pb::param_store_client::ParamStoreClient::connect(format!("http://{}", shards[0].addr))
            .await
            .unwrap();
    let push = |updates: Vec<SparseUpdate>| pb::PushRequest {
        job_id: "bad".into(),
        worker: 0,
        clock: 0,
        seq: 1,
        updates: updates.into_iter().map(Into::into).collect(),
    };
    let cases: Vec<(pb::PushRequest, tonic::Code, &str)> = vec![
        (
            pb::PushRequest {
                job_id: "nope".into(),
                ..push(vec![])
            },
            tonic::Code::NotFound,
            "unknown job 'nope'",
        ),
        (
            push(vec![sparse("zz", vec![1], vec![1.0])]),
            tonic::Code::NotFound,
            "unknown tensor 'zz'",
        ),
        // The first update is fine, the second is not: nothing may be applied.
        (
            push(vec![
                sparse("b", vec![1], vec![1.0]),
                sparse("w", vec![100], vec![1.0]),
            ]),
            tonic::Code::InvalidArgument,
            "tensor 'w': index 100 is out of range",
        ),
        (
            push(vec![sparse("w", vec![1, 2], vec![1.0])]),
            tonic::Code::InvalidArgument,
            "tensor 'w': 2 indices but 1 values",
        ),
        (
            push(vec![sparse("w", vec![1], vec![f32::NAN])]),
            tonic::Code::InvalidArgument,
            "tensor 'w': value #0 is NaN",
        ),
        (
            push(vec![sparse("b", vec![0], vec![f32::INFINITY])]),
            tonic::Code::InvalidArgument,
            "tensor 'b': value #0 is inf",
        ),
        (
            push(vec![dense("w", 99, vec![1.0, 1.0])]),
            tonic::Code::InvalidArgument,
            "tensor 'w': dense range",
        ),
        (
            pb::PushRequest {
                updates: vec![pb::TensorUpdate {
                    tensor: "w".into(),
                    indices: vec![1u8, 0, 0].into(),
                    values: 1f32.to_le_bytes().to_vec().into(),
                    ..Default::default()
                }],
                ..push(vec![])
            },
            tonic::Code::InvalidArgument,
            "tensor 'w': indices: 3 bytes is not a whole number of 4-byte words",
        ),
        (
            pb::PushRequest {
                updates: vec![pb::TensorUpdate {
                    tensor: "w".into(),
                    // A varint whose continuation bit promises a byte that never comes.
                    index_gaps: vec![0x81u8].into(),
                    values: 1f32.to_le_bytes().to_vec().into(),
                    ..Default::default()
                }],
                ..push(vec![])
            },
            tonic::Code::InvalidArgument,
            "tensor 'w': index_gaps: bad varint after 0 entries",
        ),
        (
            pb::PushRequest {
                updates: vec![pb::TensorUpdate {
                    tensor: "w".into(),
                    indices: 1u32.to_le_bytes().to_vec().into(),
                    index_gaps: vec![1u8].into(),
                    values: 1f32.to_le_bytes().to_vec().into(),
                    ..Default::default()
                }],
                ..push(vec![])
            },
            tonic::Code::InvalidArgument,
            "tensor 'w': both indices and index_gaps are set",
        ),
        (
            // Gap-coded 60, then +60: index 120 is past the tensor.
            push(vec![sparse("w", vec![60, 120], vec![1.0, 1.0])]),
            tonic::Code::InvalidArgument,
            "tensor 'w': index 120 is out of range",
        ),
        (
            pb::PushRequest {
                worker: 7,
                ..push(vec![])
            },
            tonic::Code::InvalidArgument,
            "worker 7 is out of range",
        ),
        (
            push(vec![sparse("w", vec![3; 15_000], vec![0.1; 15_000])]),
            tonic::Code::InvalidArgument,
            "over the limit",
        ),
    ];
    for (req, code, needle) in cases {
        let err = raw.push(req).await.expect_err(needle);
        assert_eq!(err.code(), code, "{needle}: {err:?}");
        assert!(
            err.message().contains(needle),
            "'{}' should contain '{needle}'",
            err.message()
        );
    }
    let all = client.pull_all("bad", None).await.unwrap();
    assert!(
        all.values().flatten().all(|&v| v == 0.0),
        "nothing applied in part"
    );
    // The client refuses the same input before sending anything.
    let err = client
        .push(
            "bad",
            0,
            0,
            1,
            vec![
                sparse("b", vec![1], vec![1.0]),
                sparse("w", vec![100], vec![1.0]),
            ],
        )
        .await;
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("index 100 is out of range")
    );
    let err = raw
        .pull(pb::PullRequest {
            job_id: "bad".into(),
            ranges: vec![pb::TensorRange {
                tensor: "w".into(),
                start: 50,
                end: 101,
            }],
            ..Default::default()
        })
        .await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::InvalidArgument);
    let err = raw
        .pull(pb::PullRequest {
            job_id: "bad".into(),
            since_version: Some(0),
            except_worker: Some(9),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("worker 9"), "{}", err.message());
    let err = raw
        .register(pb::RegisterRequest {
            sync: "ssp:x".into(),
            ..job("bad2", "", 1, &[("w", 1)])
        })
        .await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::InvalidArgument);
    let err = raw.register(job("bad", "asp", 2, &[("w", 101)])).await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::AlreadyExists);
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_pushes_apply_once_and_state_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(2, dir.path(), None, |_| {}).await;
    client
        .register(job("dur", "asp", 2, &[("w", 5000)]))
        .await
        .unwrap();
    let all: Vec<u64> = (0..5000).collect();
    client
        .push(
            "dur",
            1,
            0,
            7,
            vec![sparse("w", all.clone(), vec![0.5; 5000])],
        )
        .await
        .unwrap();
    client
        .push(
            "dur",
            1,
            0,
            7,
            vec![sparse("w", all.clone(), vec![0.5; 5000])],
        )
        .await
        .unwrap();
    client
        .push("dur", 0, 0, 1, vec![dense("w", 0, vec![0.25; 5000])])
        .await
        .unwrap();
    client.clock("dur", 0, 3, false).await.unwrap();
    stop(shards).await;

    // Restart from the log alone.
    let (shards, client) = start(2, dir.path(), None, |_| {}).await;
    assert_eq!(
        client.pull_range("dur", "w", 0, 0, None).await.unwrap(),
        vec![0.75; 5000]
    );
    // Dedupe state survived too.
    client
        .push("dur", 1, 0, 7, vec![sparse("w", vec![0], vec![100.0])])
        .await
        .unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.jobs[0].max_clock).max(), Some(3));
    // Snapshot, then more pushes, then restart: snapshot + log tail.
    let id = client.snapshot(Some("snap-1".into())).await.unwrap();
    let stats = client.stats().await.unwrap();
    // The log is kept until the next snapshot (recovery falls back to it should this snapshot
    // turn out damaged): a second snapshot retires what the first one covers.
    assert!(
        stats.iter().all(|s| s.last_snapshot == id),
        "snapshot taken: {stats:?}"
    );
    let before: Vec<u64> = stats.iter().map(|s| s.wal_bytes).collect();
    client.snapshot(Some("snap-2".into())).await.unwrap();
    let after: Vec<u64> = client
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.wal_bytes)
        .collect();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a < b),
        "log truncated: {before:?} -> {after:?}"
    );
    client
        .push("dur", 0, 1, 2, vec![sparse("w", vec![4999], vec![1.0])])
        .await
        .unwrap();
    stop(shards).await;
    let (shards, client) = start(2, dir.path(), None, |_| {}).await;
    let w = client.pull_range("dur", "w", 0, 0, None).await.unwrap();
    assert_eq!(w[0], 0.75);
    assert_eq!(w[4999], 1.75);
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_into_a_different_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let url = format!("file://{}", objects.display());
    let (shards, client) = start(2, &dir.path().join("a"), Some(url.clone()), |_| {}).await;
    let mut req = job("re", "ssp:1", 3, &[("w", 12_345), ("b", 3)]);
    req.tensors[1].init = Some(pb::Initializer {
        kind: Some(pb::initializer::Kind::Constant(2.0)),
    });
    client.register(req).await.unwrap();
    let idx: Vec<u64> = (0..12_345).step_by(7).collect();
    let vals: Vec<f32> = idx.iter().map(|&i| (i % 13) as f32).collect();
    client
        .push("re", 2, 0, 1, vec![sparse("w", idx, vals)])
        .await
        .unwrap();
    let before = client.pull_all("re", None).await.unwrap();
    client.snapshot(Some("moved".into())).await.unwrap();
    stop(shards).await;

    let (shards, client) = start(3, &dir.path().join("b"), Some(url), |_| {}).await;
    client.restore("moved").await.unwrap();
    assert_eq!(client.pull_all("re", None).await.unwrap(), before);
    assert_eq!(client.layout("re").await.unwrap().workers, 3);
    let missing = client.restore("no-such").await.unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(1, dir.path(), None, |_| {}).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", shards[0].addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "paramstore.v1.ParamStore"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            resp.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // A client given the wrong shard list is refused at connect.
    let addr = shards[0].addr.to_string();
    let err = ParamStoreClient::connect(&[addr.clone(), addr], ClientConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mismatch"), "{err}");
    drop(client);
    stop(shards).await;
}
