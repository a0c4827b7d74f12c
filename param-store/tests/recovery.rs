//! A shard under faults and bad input, on real data directories: job identity across restarts
//! (register / resume / unregister), limits enforced before anything is logged or allocated, and
//! damaged logs and snapshots noticed — never silently repaired.

use std::path::{Path, PathBuf};

use cumulus_param_store::client::{ClientConfig, ParamStoreClient, sparse};
use cumulus_param_store::{ShardConfig, ShardHandle, StoreError, run};
use cumulus_proto::paramstore::v1 as pb;
use prost::Message;

const LEN: u64 = 100;

fn config(dir: &Path, i: u32, n: u32) -> ShardConfig {
    let mut cfg = ShardConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.join(format!("shard-{i}")),
    );
    cfg.shard_index = i;
    cfg.shard_count = n;
    // Snapshots only when a test asks for one.
    cfg.snapshot_wal_bytes = 0;
    cfg
}

async fn start_with(
    dir: &Path,
    n: u32,
    tweak: impl Fn(&mut ShardConfig),
) -> (Vec<ShardHandle>, ParamStoreClient) {
    let mut shards = Vec::new();
    for i in 0..n {
        let mut cfg = config(dir, i, n);
        tweak(&mut cfg);
        shards.push(run(cfg).await.expect("shard starts"));
    }
    let addrs: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();
    let client = ParamStoreClient::connect(&addrs, ClientConfig::default())
        .await
        .expect("client connects");
    (shards, client)
}

async fn start(dir: &Path, n: u32) -> (Vec<ShardHandle>, ParamStoreClient) {
    start_with(dir, n, |_| {}).await
}

async fn stop(shards: Vec<ShardHandle>) {
    for s in shards {
        s.stop().await.expect("shard stops cleanly");
    }
}

fn job(id: &str, len: u64) -> pb::RegisterRequest {
    pb::RegisterRequest {
        job_id: id.into(),
        tensors: vec![pb::TensorSpec {
            name: "w".into(),
            shape: vec![len],
            init: None,
        }],
        sync: "asp".into(),
        workers: 2,
        chunk_size: 1000,
    }
}

/// Push `i` (sequence number `i + 1`) adds 1 at index `i`: the values show which pushes landed.
async fn push_range(client: &ParamStoreClient, id: &str, range: std::ops::Range<u64>) {
    for i in range {
        client
            .push(id, 0, 0, i + 1, vec![sparse("w", vec![i], vec![1.0])])
            .await
            .expect("push acknowledged");
    }
}

fn expect_pushes(values: &[f32], landed: std::ops::Range<u64>) {
    for (i, v) in values.iter().enumerate() {
        let want = if landed.contains(&(i as u64)) {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            *v, want,
            "entry {i}: pushes {landed:?} should be present, no other"
        );
    }
}

fn wal_segments(shard_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(shard_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs
}

/// The segment holding records (the newest one with any).
fn last_written_segment(shard_dir: &Path) -> PathBuf {
    wal_segments(shard_dir)
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .expect("a segment with records")
}

/// Record offsets of a segment (magic, then `len | crc | header crc | payload`).
fn record_offsets(path: &Path) -> Vec<u64> {
    let data = std::fs::read(path).unwrap();
    assert!(data.starts_with(b"CUMWAL02"));
    let mut out = Vec::new();
    let mut pos = 8;
    while pos + 12 <= data.len() {
        out.push(pos as u64);
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 12 + len;
    }
    out
}

/// Leaves only `keep` among the segments after it (each start opens a fresh empty one), so that
/// it is the last segment, as after a crash.
fn make_last(shard_dir: &Path, keep: &Path) {
    for p in wal_segments(shard_dir) {
        if p > *keep {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn flip(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x10;
    std::fs::write(path, data).unwrap();
}

fn remote_code(e: &StoreError) -> Option<tonic::Code> {
    match e {
        StoreError::Remote { status, .. } => Some(status.code()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_job_id_is_refused_unless_resumed_and_unregister_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(dir.path(), 2).await;
    assert!(client.register(job("j", LEN)).await.unwrap());
    assert!(
        !client.register(job("j", LEN)).await.unwrap(),
        "a retried registration of an untouched job is answered, not refused"
    );
    push_range(&client, "j", 0..10).await;

    // A coordinator starting over under the same id is told, not silently merged.
    let err = client.register(job("j", LEN)).await.unwrap_err();
    assert!(err.is_already_registered(), "{err}");
    assert_eq!(remote_code(&err), Some(tonic::Code::AlreadyExists));
    let msg = err.to_string();
    assert!(msg.contains("job 'j'") && msg.contains("pushes"), "{msg}");
    assert!(msg.contains("resume"), "says what to do: {msg}");

    // Resuming continues it: windows kept (an old sequence number is still a duplicate), the
    // stopping flag clears.
    client.stop("j").await.unwrap();
    assert!(client.clock("j", 0, 1, false).await.unwrap().stopping);
    let resumed = client.resume(job("j", LEN)).await.unwrap();
    assert!(!resumed.created);
    assert_eq!(resumed.pushes, 10);
    assert!(!client.clock("j", 0, 1, false).await.unwrap().stopping);
    client
        .push("j", 0, 0, 3, vec![sparse("w", vec![50], vec![1.0])])
        .await
        .unwrap();
    let w = client.pull_range("j", "w", 0, 0, None).await.unwrap();
    assert_eq!(w[50], 0.0, "a replayed sequence number stays a duplicate");
    expect_pushes(&w, 0..10);

    // A different layout under a held id is refused either way.
    let other = client.resume(job("j", LEN + 1)).await.unwrap_err();
    assert!(other.is_already_registered(), "{other}");

    // Unregistered, the id starts over: sequence numbers of the old job are not duplicates.
    assert_eq!(client.unregister("j").await.unwrap(), 10);
    assert_eq!(client.unregister("j").await.unwrap(), 0, "idempotent");
    assert!(client.pull_range("j", "w", 0, 0, None).await.is_err());
    assert!(client.register(job("j", LEN)).await.unwrap());
    push_range(&client, "j", 0..3).await;
    expect_pushes(
        &client.pull_range("j", "w", 0, 0, None).await.unwrap(),
        0..3,
    );
    let fresh = client.resume(job("new", LEN)).await.unwrap();
    assert!(fresh.created, "resuming a job nobody holds registers it");
    stop(shards).await;

    // All of it survives a restart: the unregistration is logged.
    let (shards, client) = start(dir.path(), 2).await;
    expect_pushes(
        &client.pull_range("j", "w", 0, 0, None).await.unwrap(),
        0..3,
    );
    let stats = client.stats().await.unwrap();
    let pushes: u64 = stats
        .iter()
        .flat_map(|s| &s.jobs)
        .filter(|j| j.job_id == "j")
        .map(|j| j.pushes)
        .sum();
    assert_eq!(pushes, 3, "the old job's pushes are gone with it");
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_job_stays_gone_after_a_snapshot_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("a", LEN)).await.unwrap();
    client.register(job("b", LEN)).await.unwrap();
    push_range(&client, "a", 0..5).await;
    client.unregister("a").await.unwrap();
    client.snapshot(None).await.unwrap();
    stop(shards).await;
    let (shards, client) = start(dir.path(), 1).await;
    let jobs: Vec<String> = client.stats().await.unwrap()[0]
        .jobs
        .iter()
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(jobs, vec!["b".to_owned()]);
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_over_the_limits_are_refused_before_they_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB of room: the 2^30-element tensor below would take 8 GiB. It is refused from its
    // layout alone; nothing of that size is ever allocated.
    let tweak = |c: &mut ShardConfig| {
        c.max_shard_bytes = 64 << 20;
        c.max_tensor_elements = 1 << 30;
    };
    let (shards, client) = start_with(dir.path(), 1, tweak).await;
    for k in 0..10 {
        let huge = pb::RegisterRequest {
            chunk_size: 0,
            ..job(&format!("huge-{k}"), 1 << 30)
        };
        assert!(huge.encoded_len() < 64, "a few bytes on the wire");
        let err = client.register(huge).await.unwrap_err();
        assert_eq!(
            remote_code(&err),
            Some(tonic::Code::ResourceExhausted),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("--max-shard-bytes"), "{msg}");
        assert!(
            msg.contains(&(64u64 << 20).to_string()),
            "names the limit: {msg}"
        );
    }
    // Over a fixed limit (here: a chunk per element, 2^30 chunks) is INVALID_ARGUMENT.
    let tiny_chunks = pb::RegisterRequest {
        chunk_size: 1,
        ..job("tiny-chunks", 1 << 30)
    };
    let err = client.register(tiny_chunks).await.unwrap_err();
    assert_eq!(
        remote_code(&err),
        Some(tonic::Code::InvalidArgument),
        "{err}"
    );
    assert!(err.to_string().contains("chunks, over the limit"), "{err}");
    // A small job still fits.
    client.register(job("small", LEN)).await.unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats[0].jobs.len(), 1);
    let wal_bytes = stats[0].wal_bytes;
    stop(shards).await;
    // Nothing of the refused registrations reached the log: a restart replays one small job.
    let (shards, client) = start_with(dir.path(), 1, tweak).await;
    let stats = client.stats().await.unwrap();
    assert_eq!(stats[0].jobs.len(), 1);
    assert!(
        stats[0].wal_bytes <= wal_bytes + 8,
        "{} > {wal_bytes}",
        stats[0].wal_bytes
    );
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_one_shard_refuses_is_undone_on_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut shards = Vec::new();
    for i in 0..2 {
        let mut cfg = config(dir.path(), i, 2);
        cfg.max_shard_bytes = if i == 1 { 1 << 20 } else { 1 << 30 };
        shards.push(run(cfg).await.unwrap());
    }
    let addrs: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();
    let client = ParamStoreClient::connect(&addrs, ClientConfig::default())
        .await
        .unwrap();
    let err = client.register(job("j", 4_000_000)).await.unwrap_err();
    assert!(err.to_string().contains("--max-shard-bytes"), "{err}");
    let stats = client.stats().await.unwrap();
    assert!(stats.iter().all(|s| s.jobs.is_empty()), "{stats:?}");
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_registration_over_lowered_limits_is_refused_at_start_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("big", 100_000)).await.unwrap();
    client.register(job("small", LEN)).await.unwrap();
    push_range(&client, "small", 0..4).await;
    stop(shards).await;

    // An older data directory meets tighter limits: a clear refusal naming the record.
    let mut cfg = config(dir.path(), 0, 1);
    cfg.max_tensor_elements = 10_000;
    let err = run(cfg.clone()).await.unwrap_err().to_string();
    assert!(err.contains("job 'big'"), "{err}");
    assert!(
        err.contains("100000 elements, over the limit of 10000"),
        "{err}"
    );
    assert!(
        err.contains("wal-") && err.contains("byte"),
        "names the record: {err}"
    );
    assert!(err.contains("--salvage"), "{err}");
    // With salvage the job is left out, everything else kept.
    cfg.salvage = true;
    let shard = run(cfg).await.unwrap();
    let client = ParamStoreClient::connect(&[shard.addr.to_string()], ClientConfig::default())
        .await
        .unwrap();
    assert!(client.layout("big").await.is_err());
    expect_pushes(
        &client.pull_range("small", "w", 0, 0, None).await.unwrap(),
        0..4,
    );
    shard.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_mid_log_refuses_to_start_and_salvage_keeps_what_precedes() {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard-0");
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("c", LEN)).await.unwrap();
    push_range(&client, "c", 0..50).await;
    stop(shards).await;

    let seg = last_written_segment(&shard_dir);
    make_last(&shard_dir, &seg);
    let offsets = record_offsets(&seg);
    assert_eq!(offsets.len(), 51, "the registration and 50 pushes");
    // Record 26 is push 25: a byte in the middle of its payload.
    flip(&seg, offsets[26] + 14);
    let err = run(config(dir.path(), 0, 1)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::CorruptWal { .. }), "{msg}");
    assert!(
        msg.contains(&seg.display().to_string()),
        "names the file: {msg}"
    );
    assert!(
        msg.contains(&format!("byte {}", offsets[26])),
        "names the offset: {msg}"
    );

    let mut cfg = config(dir.path(), 0, 1);
    cfg.salvage = true;
    let shard = run(cfg).await.unwrap();
    let client = ParamStoreClient::connect(&[shard.addr.to_string()], ClientConfig::default())
        .await
        .unwrap();
    expect_pushes(
        &client.pull_range("c", "w", 0, 0, None).await.unwrap(),
        0..25,
    );
    shard.stop().await.unwrap();
    // Salvaged once, the log opens without the flag.
    let shard = run(config(dir.path(), 0, 1)).await.unwrap();
    shard.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_length_field_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard-0");
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("c", LEN)).await.unwrap();
    push_range(&client, "c", 0..20).await;
    stop(shards).await;
    let seg = last_written_segment(&shard_dir);
    make_last(&shard_dir, &seg);
    let offsets = record_offsets(&seg);
    // The length of the registration record: every push after it would be lost by a reader
    // that took it for a torn tail.
    flip(&seg, offsets[0] + 2);
    let msg = run(config(dir.path(), 0, 1)).await.unwrap_err().to_string();
    assert!(msg.contains(&format!("byte {}", offsets[0])), "{msg}");
    assert!(msg.contains("header"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_every_acknowledged_push_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard-0");
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("c", LEN)).await.unwrap();
    push_range(&client, "c", 0..30).await;
    stop(shards).await;
    let seg = last_written_segment(&shard_dir);
    make_last(&shard_dir, &seg);
    // A crash in the middle of appending a 31st record, never acknowledged: its header and part
    // of its payload reached the file.
    let payload = vec![7u8; 64];
    let mut head = (payload.len() as u32).to_le_bytes().to_vec();
    head.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let hcrc = crc32fast::hash(&head);
    head.extend_from_slice(&hcrc.to_le_bytes());
    head.extend_from_slice(&payload[..20]);
    let mut data = std::fs::read(&seg).unwrap();
    let clean = data.len() as u64;
    data.extend_from_slice(&head);
    std::fs::write(&seg, data).unwrap();

    let (shards, client) = start(dir.path(), 1).await;
    expect_pushes(
        &client.pull_range("c", "w", 0, 0, None).await.unwrap(),
        0..30,
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        clean,
        "the torn tail was cut"
    );
    stop(shards).await;
}

fn snapshot_file(shard_dir: &Path, id: &str) -> PathBuf {
    shard_dir
        .join("objects/snapshots")
        .join(id)
        .join("shard-00000-of-00001/data.safetensors")
}

/// Flips a byte in the middle of a snapshot's values.
fn damage_snapshot(shard_dir: &Path, id: &str) -> PathBuf {
    let file = snapshot_file(shard_dir, id);
    let len = std::fs::metadata(&file).unwrap().len();
    flip(&file, len - 40);
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_falls_back_to_the_older_one_plus_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard-0");
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("s", LEN)).await.unwrap();
    push_range(&client, "s", 0..10).await;
    client.snapshot(Some("one".into())).await.unwrap();
    push_range(&client, "s", 10..20).await;
    client.snapshot(Some("two".into())).await.unwrap();
    push_range(&client, "s", 20..30).await;
    client.snapshot(Some("three".into())).await.unwrap();
    push_range(&client, "s", 30..40).await;
    stop(shards).await;

    // The newest snapshot is damaged: the older one plus the log since still has every push.
    damage_snapshot(&shard_dir, "three");
    let (shards, client) = start(dir.path(), 1).await;
    expect_pushes(
        &client.pull_range("s", "w", 0, 0, None).await.unwrap(),
        0..40,
    );
    assert_eq!(client.stats().await.unwrap()[0].last_snapshot, "two");
    // The shard's next snapshot falls back to the one it runs from.
    push_range(&client, "s", 40..45).await;
    client.snapshot(Some("four".into())).await.unwrap();
    stop(shards).await;
    damage_snapshot(&shard_dir, "four");
    let (shards, client) = start(dir.path(), 1).await;
    expect_pushes(
        &client.pull_range("s", "w", 0, 0, None).await.unwrap(),
        0..45,
    );
    stop(shards).await;

    // Both it and its fallback damaged: refused, naming them.
    damage_snapshot(&shard_dir, "two");
    let msg = run(config(dir.path(), 0, 1)).await.unwrap_err().to_string();
    assert!(msg.contains("four") && msg.contains("two"), "{msg}");
    assert!(
        msg.contains("data.safetensors") && msg.contains("checksum"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_first_snapshot_falls_back_to_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard-0");
    let (shards, client) = start(dir.path(), 1).await;
    client.register(job("s", LEN)).await.unwrap();
    push_range(&client, "s", 0..10).await;
    client.snapshot(Some("only".into())).await.unwrap();
    push_range(&client, "s", 10..15).await;
    stop(shards).await;
    damage_snapshot(&shard_dir, "only");
    let (shards, client) = start(dir.path(), 1).await;
    expect_pushes(
        &client.pull_range("s", "w", 0, 0, None).await.unwrap(),
        0..15,
    );
    stop(shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_with_nothing_older_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let url = format!("file://{}", objects.display());
    let with_store = |c: &mut ShardConfig| c.store_url = Some(url.clone());
    let (shards, client) = start_with(&dir.path().join("a"), 1, with_store).await;
    client.register(job("s", LEN)).await.unwrap();
    push_range(&client, "s", 0..10).await;
    client.snapshot(Some("source".into())).await.unwrap();
    stop(shards).await;
    // A restore: the log before it does not lead to the restored state, so the shard's own
    // snapshot of it has nothing to fall back to.
    let (shards, client) = start_with(&dir.path().join("b"), 1, with_store).await;
    client.restore("source").await.unwrap();
    let own = client.stats().await.unwrap()[0].last_snapshot.clone();
    assert!(own.starts_with("source-restored-"), "{own}");
    stop(shards).await;
    let file = objects
        .join("snapshots")
        .join(&own)
        .join("shard-00000-of-00001/data.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    flip(&file, len - 40);
    let mut cfg = config(&dir.path().join("b"), 0, 1);
    cfg.store_url = Some(url.clone());
    let msg = run(cfg).await.unwrap_err().to_string();
    assert!(
        msg.contains(&file.display().to_string()),
        "names the file: {msg}"
    );
    assert!(msg.contains("no older complete snapshot"), "{msg}");
}
