//! Crash safety of a parameter-store shard process: four writers push while shards are killed
//! with SIGKILL at seeded random moments and restarted on the same data directory and port. The
//! client retries each push (same worker id and sequence number) until it is acknowledged, so in
//! the end every push is acknowledged exactly once: the final values equal the sum of all
//! acknowledged pushes — nothing lost, nothing applied twice.

#[path = "param_store_support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cumulus_param_store::client::{ClientConfig, ParamStoreClient, sparse};
use cumulus_proto::paramstore::v1 as pb;
use rand::{Rng, SeedableRng};

const LEN: u64 = 20_000;
const WRITERS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("shard-{i}")))
        .collect();
    let ds = dirs.clone();
    let shards = tokio::task::spawn_blocking(move || {
        (0..2u32)
            .map(|i| support::start_shard(&ds[i as usize], i, 2, "127.0.0.1:0"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let addrs: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();
    let shards = Arc::new(Mutex::new(shards));
    let config = ClientConfig {
        retry_for: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    let client = ParamStoreClient::connect(&addrs, config).await.unwrap();
    client
        .register(pb::RegisterRequest {
            job_id: "crash".into(),
            tensors: vec![pb::TensorSpec {
                name: "w".into(),
                shape: vec![LEN],
                init: None,
            }],
            sync: "asp".into(),
            workers: WRITERS,
            chunk_size: 1024,
        })
        .await
        .unwrap();

    let acked = Arc::new(Mutex::new(vec![0f64; LEN as usize]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pushers = Vec::new();
    for worker in 0..WRITERS {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        pushers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42 + u64::from(worker));
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let n = rng.random_range(1..400usize);
                let idx: Vec<u64> = (0..n).map(|_| rng.random_range(0..LEN)).collect();
                let vals: Vec<f32> = (0..n)
                    .map(|_| rng.random_range(1i32..16) as f32 / 8.0)
                    .collect();
                client
                    .push(
                        "crash",
                        worker,
                        0,
                        seq,
                        vec![sparse("w", idx.clone(), vals.clone())],
                    )
                    .await
                    .unwrap();
                let mut a = acked.lock().unwrap();
                for (i, v) in idx.iter().zip(&vals) {
                    a[*i as usize] += f64::from(*v);
                }
            }
            seq
        }));
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        let victim = rng.random_range(0..2usize);
        let (addr, dir) = (addrs[victim].clone(), dirs[victim].clone());
        let shards = shards.clone();
        tokio::task::spawn_blocking(move || {
            let mut shards = shards.lock().unwrap();
            // SIGKILL: no chance to flush anything.
            shards[victim].child.kill().unwrap();
            shards[victim].child.wait().unwrap();
            shards[victim] = support::start_shard(&dir, victim as u32, 2, &addr);
        })
        .await
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for p in pushers {
        total += p.await.unwrap();
    }
    assert!(total > 20, "pushes ran during the kills ({total})");
    let want: Vec<f32> = acked.lock().unwrap().iter().map(|&v| v as f32).collect();
    let got = client.pull_range("crash", "w", 0, 0, None).await.unwrap();
    let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff, 0,
        "{diff} entries differ from the sum of acknowledged pushes"
    );
    drop(shards);
}
