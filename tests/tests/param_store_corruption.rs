//! A `cumulus param-store` process on a damaged data directory: a flipped byte in the middle of
//! its write-ahead log makes it refuse to start, naming the file and the byte offset, and
//! `--salvage` starts it with the pushes that precede the damage. Its size limits are flags: a
//! registration past `--max-shard-bytes` is refused before anything is logged or allocated.

#[path = "param_store_support.rs"]
mod support;

use std::path::{Path, PathBuf};

use cumulus_param_store::client::{ClientConfig, ParamStoreClient, sparse};
use cumulus_proto::paramstore::v1 as pb;

fn job(id: &str, len: u64) -> pb::RegisterRequest {
    pb::RegisterRequest {
        job_id: id.into(),
        tensors: vec![pb::TensorSpec {
            name: "w".into(),
            shape: vec![len],
            init: None,
        }],
        sync: "asp".into(),
        workers: 1,
        chunk_size: 0,
    }
}

/// The newest segment holding records, and its record offsets.
fn records(dir: &Path) -> (PathBuf, Vec<u64>) {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let seg = segs
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap();
    let data = std::fs::read(&seg).unwrap();
    let (mut offsets, mut pos) = (Vec::new(), 8);
    while pos + 12 <= data.len() {
        offsets.push(pos as u64);
        pos += 12 + u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
    }
    (seg, offsets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_refused_by_the_process_and_salvaged_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shard");
    let d = data.clone();
    let shard = tokio::task::spawn_blocking(move || support::start_shard(&d, 0, 1, "127.0.0.1:0"))
        .await
        .unwrap();
    let client = ParamStoreClient::connect(&[shard.addr.to_string()], ClientConfig::default())
        .await
        .unwrap();
    client.register(job("j", 64)).await.unwrap();
    for i in 0..40u64 {
        client
            .push("j", 0, 0, i + 1, vec![sparse("w", vec![i], vec![1.0])])
            .await
            .unwrap();
    }
    drop(shard); // SIGKILL

    let (seg, offsets) = records(&data);
    assert_eq!(offsets.len(), 41);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offsets[21] as usize + 14] ^= 0x08;
    std::fs::write(&seg, bytes).unwrap();

    let d = data.clone();
    let (status, stderr) = tokio::task::spawn_blocking(move || support::refused_shard(&d, &[]))
        .await
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&seg.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("byte {}", offsets[21])),
        "names the offset: {stderr}"
    );
    assert!(stderr.contains("--salvage"), "says how to go on: {stderr}");

    let d = data.clone();
    let shard = tokio::task::spawn_blocking(move || {
        support::start_shard_args(&d, 0, 1, "127.0.0.1:0", &["--salvage"])
    })
    .await
    .unwrap();
    let client = ParamStoreClient::connect(&[shard.addr.to_string()], ClientConfig::default())
        .await
        .unwrap();
    let w = client.pull_range("j", "w", 0, 0, None).await.unwrap();
    let landed: Vec<usize> = (0..64).filter(|&i| w[i] == 1.0).collect();
    assert_eq!(
        landed,
        (0..20).collect::<Vec<_>>(),
        "the pushes before the damage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limits_are_flags_and_a_refused_registration_is_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shard");
    let flags = ["--max-shard-bytes", "67108864"];
    let d = data.clone();
    let shard = tokio::task::spawn_blocking(move || {
        support::start_shard_args(&d, 0, 1, "127.0.0.1:0", &flags)
    })
    .await
    .unwrap();
    let client = ParamStoreClient::connect(&[shard.addr.to_string()], ClientConfig::default())
        .await
        .unwrap();
    // 35 bytes on the wire asking for 2^30 elements (8 GiB as the shard holds them).
    let err = client.register(job("huge", 1 << 30)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("67108864") && msg.contains("--max-shard-bytes"),
        "{msg}"
    );
    client.register(job("ok", 1000)).await.unwrap();
    drop(shard); // SIGKILL
    let d = data.clone();
    let shard = tokio::task::spawn_blocking(move || {
        support::start_shard_args(&d, 0, 1, "127.0.0.1:0", &flags)
    })
    .await
    .unwrap();
    let client = ParamStoreClient::connect(&[shard.addr.to_string()], ClientConfig::default())
        .await
        .unwrap();
    let jobs: Vec<String> = client.stats().await.unwrap()[0]
        .jobs
        .iter()
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(jobs, vec!["ok".to_owned()]);
}
